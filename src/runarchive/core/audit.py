"""What one audit event is: the vocabulary of actions and outcomes, the event, its cursor.

Pure data, in the core because every layer makes events: the web layer for a request (accepted
or refused), the jobs layer for a job's end (done, failed, canceled), and the local CLI, which
must not load the jobs or web layers to say who did what. Storing them is the web layer's
(``web/auditlog.py``: an append-only SQL table, a durable spool when the database cannot be
written); the jobs layer only hands events to a recorder (``jobs/audit.py``).

An event is made once, at the moment of the action, with a random ``event_id``: a spooled
event replayed later keeps its time and is stored at most once, however often the replay is
retried. A job's end carries ``job_end_id(job_id)``, so the several paths that may see a job
end (the job, a killed horse's handler, ``reconcile``) store one row between them.

Outcomes: ``accepted`` (a job was queued), ``done`` (finished, the job's end or a synchronous
action), ``refused`` (nothing was attempted: bad input, access denied, a busy or locked run, a
pinned archive …), ``failed`` (attempted, and it failed), ``canceled``. ``outcome_of`` is the
one rule that tells a refusal from a failure, by the error's ``code``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .errors import InvalidCursor, RunArchiveError
from .isotime import iso_utc
from .paging import decode_cursor, encode_cursor

MAX_DETAIL_CHARS = 2000  # a refusal message or a partial restore's paths, cut to this
_ID_RE = re.compile(r"[0-9]{1,19}")


class AuditAction(StrEnum):
    """Every action the audit log records."""

    ARCHIVE = "archive"
    RESTORE = "restore"  # whole, or partial (``detail`` names the paths)
    UNDO = "undo"
    FORK = "fork"
    DELETE = "delete"
    PRUNE = "prune"
    PIN = "pin"
    UNPIN = "unpin"
    CANCEL = "cancel"
    DOWNLOAD = "download"  # an archive, or one file of it (``detail`` names the path)
    POLICY = "policy"  # the run's retention policy set


class Outcome(StrEnum):
    """How an action ended, as far as the recording side knows."""

    ACCEPTED = "accepted"
    DONE = "done"
    REFUSED = "refused"
    FAILED = "failed"
    CANCELED = "canceled"


# Error codes that mean "nothing was attempted": the caller may act and try again.
REFUSAL_CODES = frozenset({
    "invalid_input", "invalid_cursor", "not_found", "entry_not_found", "busy", "job_running",
    "locked", "read_only", "pinned", "nothing_to_undo", "not_cancelable", "unauthorized",
    "forbidden", "queue_unavailable", "quota_exceeded", "unsafe_run",
})  # fmt: skip


def outcome_of(exc: BaseException) -> Outcome:
    """Return how an action that raised ``exc`` ended: refused, canceled or failed."""
    code = getattr(exc, "code", None) if isinstance(exc, RunArchiveError) else None
    if code == "canceled":
        return Outcome.CANCELED
    return Outcome.REFUSED if code in REFUSAL_CODES else Outcome.FAILED


def new_event_id() -> str:
    """Return a fresh event id (random: unique across processes and hosts)."""
    return uuid.uuid4().hex


def job_end_id(job_id: str) -> str:
    """Return the event id of job ``job_id``'s end (one row whichever path records it)."""
    return f"end-{job_id}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts and from where: ``ana``, ``token:7:ana``, ``cli:ana``, ``anonymous``, ``host``."""

    user: str
    remote_addr: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One row of the audit log, before it has its ``id`` (given by the database)."""

    user: str
    remote_addr: str
    runid: str | None
    action: AuditAction
    outcome: Outcome
    archive: str | None = None
    job_id: str | None = None
    bytes: int | None = None
    detail: str | None = None
    time: datetime = field(default_factory=_now)
    event_id: str = field(default_factory=new_event_id)

    def to_spool(self) -> dict[str, Any]:
        """Return the event as the spool keeps it (JSON-ready; ``from_spool`` reads it)."""
        return {
            "event_id": self.event_id, "time": iso_utc(self.time), "user": self.user,
            "remote_addr": self.remote_addr, "runid": self.runid, "archive": self.archive,
            "action": self.action.value, "outcome": self.outcome.value, "job_id": self.job_id,
            "bytes": self.bytes, "detail": self.detail,
        }  # fmt: skip

    @classmethod
    def from_spool(cls, data: object) -> AuditEvent:
        """Read back one spooled event, strictly; raise ValueError for anything else."""
        if not isinstance(data, dict) or set(data) != set(_SPOOL_FIELDS):
            raise ValueError("not a spooled audit event")
        for name, kind in _SPOOL_FIELDS.items():
            value = data[name]
            if not (isinstance(value, kind) or (value is None and name in _OPTIONAL)):
                raise ValueError(f"spooled audit event: bad {name}")
        if isinstance(data["bytes"], bool):
            raise ValueError("spooled audit event: bad bytes")
        when = datetime.fromisoformat(data["time"].replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise ValueError("spooled audit event: time without a zone")
        return cls(
            user=data["user"], remote_addr=data["remote_addr"], runid=data["runid"],
            action=AuditAction(data["action"]), outcome=Outcome(data["outcome"]),
            archive=data["archive"], job_id=data["job_id"], bytes=data["bytes"],
            detail=data["detail"], time=when.astimezone(UTC), event_id=data["event_id"],
        )  # fmt: skip


_SPOOL_FIELDS: dict[str, type] = {
    "event_id": str, "time": str, "user": str, "remote_addr": str, "runid": str,
    "archive": str, "action": str, "outcome": str, "job_id": str, "bytes": int, "detail": str,
}  # fmt: skip
_OPTIONAL = frozenset({"runid", "archive", "job_id", "bytes", "detail"})


def cut_detail(text: str | None) -> str | None:
    """Return ``text`` cut to ``MAX_DETAIL_CHARS`` (None stays None)."""
    if text is None:
        return None
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


def audit_cursor(scope: str, last_id: int) -> str:
    """Return the opaque cursor of the page after row ``last_id`` of listing ``scope``."""
    return encode_cursor(f"audit:{scope}", (0, str(last_id)))


def parse_audit_cursor(cursor: str | None, scope: str) -> int | None:
    """Return the row id a cursor of listing ``scope`` carries (None: from the newest).

    A cursor from elsewhere (another run's log, an inside listing) or forged is InvalidCursor.
    """
    key = decode_cursor(cursor, f"audit:{scope}", 1)
    if key is None:
        return None
    if not _ID_RE.fullmatch(key[1]):
        raise InvalidCursor("Invalid cursor: not one this listing gave out.")
    return int(key[1])
