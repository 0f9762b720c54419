"""Archive health: what the scrub found, kept outside the run and bound to the file it read.

Why Redis and not the run: everything under a run may be written by whoever can write the run,
who could plant "ok" for an archive they damaged; results kept in the run would need the same
strict validation as an upload and still prove nothing. So one hash per run
(``Keys.health``: archive name -> record) holds, per archive, the JSON record
``{"at": <Unix seconds>, "damage": <text>|null, "id": [dev, ino, size, mtime_ns, ctime_ns],
"state": "ok"|"damaged"}``. A record counts only while the archive's current ``lstat`` (taken by
handle beneath the run's real ``archives/``) has exactly that identity: an archive replaced,
rewritten (even with its mtime set back: ctime moves) or recreated under the same name reads
``unchecked`` until it is checked itself. A record that is not in exactly this shape is ignored
(``unchecked``), never trusted.

A new archive starts ``unchecked``: ``create`` checks every chunk it writes but does not read
the published file back, so nothing has verified those bytes on disk yet.

A result that turns an archive ``damaged`` (it was not recorded damaged with this identity)
publishes one status line on the run's channel ``<runid>:archive``:
``Archive damaged: <name>: <damage>`` (server paths scrubbed). Restoring (fully or partly) an
archive recorded damaged is refused before any work (``refuse_damaged``, 409, the damage named).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from runarchive.core import (
    ArchiveIdentity,
    CheckResult,
    DamagedArchive,
    RunDir,
    RunRef,
    UnsafeRun,
    iso_utc,
    open_run,
)

from .connection import redact
from .context import JobsContext
from .errors import QueueUnavailable
from .lines import archive_damaged_line
from .settings import Settings

log = logging.getLogger(__name__)

MAX_DAMAGE_CHARS = 500
_STATES = ("ok", "damaged")


@dataclass(frozen=True, slots=True)
class Health:
    """One archive's health as the list shows it."""

    state: str  # ok | damaged | unchecked
    checked_at: datetime | None = None
    damage: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The list row's ``health``, ``checked_at`` (ISO 8601 UTC or null) and ``damage``."""
        return {
            "health": self.state,
            "checked_at": iso_utc(self.checked_at) if self.checked_at else None,
            "damage": self.damage,
        }


UNCHECKED = Health("unchecked")


@dataclass(frozen=True, slots=True)
class _Record:
    identity: ArchiveIdentity
    health: Health


def _encode(result: CheckResult) -> str:
    damage = (result.damage or "")[:MAX_DAMAGE_CHARS] or None
    return json.dumps(
        {
            "at": result.checked_at.timestamp(),
            "damage": damage,
            "id": result.identity.as_list(),
            "state": result.health,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def _decode(raw: str) -> _Record | None:
    """Parse one stored record; None for anything not in exactly the shape we write."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or set(value) != {"at", "damage", "id", "state"}:
        return None
    at, damage, ident, state = value["at"], value["damage"], value["id"], value["state"]
    if state not in _STATES or not isinstance(at, int | float) or not math.isfinite(at):
        return None
    if (state == "damaged") != isinstance(damage, str) or (damage is not None and not damage):
        return None
    if not isinstance(ident, list) or len(ident) != 5:
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in ident):
        return None
    try:
        when = datetime.fromtimestamp(at, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return _Record(ArchiveIdentity(*ident), Health(state, when, damage))


def _records(ctx: JobsContext, runid: str) -> dict[str, _Record]:
    raw: dict[str, str] = ctx.clients.data.hgetall(ctx.keys.health(runid))
    found = {}
    for name, value in raw.items():
        record = _decode(value)
        if record is not None:
            found[name] = record
    return found


def _identities(run: RunDir, names: list[str]) -> dict[str, ArchiveIdentity]:
    """The current identity of each named archive (by handle; missing ones left out)."""
    try:
        archives = run.archives()
    except UnsafeRun:
        return {}
    if archives is None:
        return {}
    found = {}
    with archives:
        for name in names:
            try:
                found[name] = ArchiveIdentity.of(archives.lstat(name))
            except (FileNotFoundError, ValueError):
                continue
    return found


def archive_health(ctx: JobsContext, run: RunRef, names: list[str]) -> dict[str, Health]:
    """Return the health of each named archive of the run (``unchecked`` unless a record
    matches the file now under that name)."""
    records = _records(ctx, run.runid)
    if not records:
        return dict.fromkeys(names, UNCHECKED)
    with open_run(run) as opened:
        now = _identities(opened, [n for n in names if n in records])
    return {
        name: records[name].health
        if name in records and now.get(name) == records[name].identity
        else UNCHECKED
        for name in names
    }


def health_now(ctx: JobsContext, run: RunDir, name: str) -> Health:
    """Return the health of archive ``name`` of the open run as it is on disk now."""
    raw = ctx.clients.data.hget(ctx.keys.health(run.runid), name)
    record = _decode(raw) if isinstance(raw, str) else None
    if record is None or _identities(run, [name]).get(name) != record.identity:
        return UNCHECKED
    return record.health


def is_fresh(ctx: JobsContext, run: RunDir, name: str, since: float) -> bool:
    """Tell whether the archive's current file was checked at or after ``since`` (seconds)."""
    health = health_now(ctx, run, name)
    return health.checked_at is not None and health.checked_at.timestamp() >= since


def record_result(ctx: JobsContext, runid: str, result: CheckResult) -> bool:
    """Keep ``result`` as the archive's health; return whether it newly found damage (then the
    run's channel gets one ``Archive damaged:`` line)."""
    key = ctx.keys.health(runid)
    with ctx.clients.data.pipeline(
        transaction=True
    ) as pipe:  # read the old, write the new: one step
        pipe.hget(key, result.name)
        pipe.hset(key, result.name, _encode(result))
        previous_raw, _ = pipe.execute()
    if result.ok or result.damage is None:
        return False
    previous = _decode(previous_raw) if previous_raw is not None else None
    if (
        previous is not None
        and previous.identity == result.identity
        and previous.health.state == "damaged"
    ):
        return False  # already said for this very file
    ctx.stream(runid).publish(archive_damaged_line(result.name, result.damage))
    return True


def forget_missing(ctx: JobsContext, runid: str, present: list[str]) -> int:
    """Drop the records of archives the run no longer has; return how many."""
    key = ctx.keys.health(runid)
    gone = set(ctx.clients.data.hkeys(key)) - set(present)
    if gone:
        ctx.clients.data.hdel(key, *sorted(gone))
    return len(gone)


def refuse_damaged(ctx: JobsContext, run: RunDir, name: str) -> None:
    """Raise ``DamagedArchive`` (409) naming the damage when the archive's current file is
    recorded damaged; restore (full or partial) asks this before any work."""
    health = health_now(ctx, run, name)
    if health.state != "damaged":
        return
    when = iso_utc(health.checked_at) if health.checked_at else "earlier"
    raise DamagedArchive(
        f"Archive {name} is damaged, so it was not restored: {health.damage} (found by the "
        f"scrub at {when}). Restore another archive, or delete this one."
    )


@contextmanager
def recording(redis_url: str) -> Iterator[Callable[[str, CheckResult], None]]:
    """Yield ``record(runid, result)`` keeping results as the scrub job does (the CLI's
    ``scrub`` with a Redis URL); Redis unreachable is ``QueueUnavailable`` (exit 1)."""
    settings = Settings.from_env(redis_url=redis_url)
    with JobsContext.from_settings(settings) as ctx:

        def record(runid: str, result: CheckResult) -> None:
            try:
                record_result(ctx, runid, result)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                raise QueueUnavailable(detail=f"Redis at {redact(redis_url)}: {exc}") from exc

        yield record
