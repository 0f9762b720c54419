"""Local operations (the CLI's archive, restore, delete, prune) under the service's locks and slot.

With a Redis URL configured, ``hold_run`` makes a local operation obey the rules a job obeys:

1. refuse a restore of an archive the scrub found damaged (``DamagedArchive``, exit 1, the
   damage named), and refuse while any ``.nodb`` lock of the run is held (``Locked``:
   ``Cannot restore while files are locked: a.nodb, b.nodb``, exit 3), the checks the
   service makes;
2. reconcile the run's slot, then claim it with a ``local-<hex>`` holder id (compare-and-set),
   or refuse while a job holds it (``JobRunning``, exit 3): no service job can start on the run
   while the local operation works, and the service names the local holder when it refuses;
3. take every ``.nodb`` lock of the run (for a restore: of the run and of the archive) like the
   job does, renewed with a liveness lease by the job's ``Heartbeat``, until the operation ends;
   then release the locks and the slot (compare-and-delete).

The run id of the keys is the run directory's name (after resolving links). A local holder
that dies (SIGKILL) stops renewing its lease: ``reconcile`` then frees its slot and its locks
and recovers the run (``lifecycle.reap``), without a trigger, since no job ran.

Redis configured but unreachable is ``QueueUnavailable`` (exit 1) naming the redacted URL and
``--no-locks``, the only way to skip the checks. The CLI imports this module only when a Redis
URL is configured, so a purely local command never loads RQ or redis-py.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from runarchive.core import (
    InvalidInput,
    RunArchiveError,
    find_nodb_files,
    open_archive,
    open_run,
    undo_nodb_files,
    validate_runid,
)

from .connection import redact
from .context import JobsContext
from .errors import JobRunning, QueueUnavailable
from .health import refuse_damaged
from .lifecycle import reconcile
from .lines import (
    archive_deleted_line,
    archive_pruned_line,
    archive_ready_line,
    restore_complete_line,
    undo_complete_line,
)
from .locks import RunLocks, archive_nodb_files, ensure_unlocked
from .settings import Settings
from .slot import LOCAL_HOLDER_PREFIX, claim_slot, read_slot, release_slot, slot_ttl
from .tasks import Heartbeat

log = logging.getLogger(__name__)

_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass
class LocalHold:
    """The run's slot and locks held by a local operation; announces its outcome."""

    ctx: JobsContext
    runid: str
    holder: str

    def _announce(self, line: str) -> None:
        self.ctx.stream(self.runid).publish(line)  # best effort, as the service's lines

    def archive_ready(self, name: str) -> None:
        """Tell the run's viewers a new archive exists."""
        self._announce(archive_ready_line(name))

    def restore_complete(self, name: str) -> None:
        """Tell the run's viewers the run was restored."""
        self._announce(restore_complete_line(name))

    def undo_complete(self, name: str) -> None:
        """Tell the run's viewers the restore of ``name`` was undone."""
        self._announce(undo_complete_line(name))

    def archive_deleted(self, name: str) -> None:
        """Tell the run's viewers an archive is gone."""
        self._announce(archive_deleted_line(name))

    def archive_pruned(self, name: str) -> None:
        """Tell the run's viewers a prune removed an archive."""
        self._announce(archive_pruned_line(name))


def local_runid(run_dir: Path) -> str:
    """Return the run id of ``run_dir`` for lock and slot keys: its resolved directory name."""
    runid = run_dir.resolve().name
    try:
        return validate_runid(runid)
    except InvalidInput as exc:
        raise InvalidInput(
            f"{exc} The run id of the service's locks is the run folder's name; "
            "pass --no-locks to work on this folder without them."
        ) from None


def _unreachable(settings: Settings, exc: Exception) -> QueueUnavailable:
    return QueueUnavailable(
        f"Cannot reach Redis at {redact(settings.redis_url or '')} to check the run's locks and "
        f"jobs ({exc}). Start it, or pass --no-locks to skip the check."
    )


def _archive_nodb_files(run_dir: Path, name: str) -> list[str]:
    """The ``.nodb`` paths archive ``name`` would restore ([] when it cannot be read: the
    restore then reports why)."""
    try:
        with open_run(run_dir) as run, open_archive(run, name) as reader:
            return archive_nodb_files(reader)
    except RunArchiveError:
        return []


@contextmanager
def hold_run(
    redis_url: str, run_dir: Path, verb: str, archive_name: str | None = None
) -> Iterator[LocalHold]:
    """Refuse like the service, else hold the run's slot and ``.nodb`` locks while in the block.

    ``verb`` is ``archive``, ``restore``, ``undo`` or ``delete`` (the words of the refusals).
    """
    settings = Settings.from_env(redis_url=redis_url)
    runid = local_runid(run_dir)
    holder = f"{LOCAL_HOLDER_PREFIX}{uuid.uuid4().hex}"
    with JobsContext.from_settings(settings) as ctx:
        data = ctx.clients.data
        try:
            if verb == "restore" and archive_name is not None:
                with open_run(run_dir) as run:
                    refuse_damaged(ctx, run, archive_name)  # as the service: 409, exit 1
            ensure_unlocked(ctx.clients.locks, runid, verb)
            reconcile(ctx, [runid])
            if not claim_slot(data, ctx.keys, runid, holder, verb, ttl=slot_ttl(settings)):
                slot = read_slot(data, ctx.keys, runid)
                raise JobRunning(runid, slot.job_id if slot is not None else "unknown")
        except _REDIS_DOWN as exc:
            raise _unreachable(settings, exc) from exc
        locks: RunLocks | None = None
        try:
            nodb = find_nodb_files(run_dir)
            if archive_name is not None:
                nodb += _archive_nodb_files(run_dir, archive_name)
            if verb == "undo":
                nodb = sorted({*nodb, *undo_nodb_files(run_dir)})
            with Heartbeat(ctx, holder) as heartbeat:
                try:
                    locks = RunLocks(
                        ctx.clients.locks, runid, nodb, verb=verb, ttl=settings.lock_ttl,
                        job_id=holder,
                    ).acquire()  # fmt: skip
                except _REDIS_DOWN as exc:
                    raise _unreachable(settings, exc) from exc
                heartbeat.locks.append(locks)
                yield LocalHold(ctx, runid, holder)
        finally:
            try:
                if locks is not None:
                    locks.release()
                release_slot(data, ctx.keys, runid, holder)
                data.delete(ctx.keys.job_alive(holder))
            except redis.exceptions.RedisError:
                # The lease and the locks expire by themselves; reconcile then frees the slot.
                log.warning("could not free the slot of run %s (%s)", runid, holder, exc_info=True)
