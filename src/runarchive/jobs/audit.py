"""Recording audit events from the jobs layer: a tiny recorder interface, and a job's end.

The jobs layer knows no SQL (an import-linter contract), yet only the worker knows how a job
ended. So, as with the progress callback, the layer defines the interface and a no-op default:
a ``Recorder`` is anything with ``record(event)``. The web layer implements it over its SQL
table (``web/auditlog.py``); the ``runarchive worker`` command, which sits above the web
layer, installs that one for its processes (``install_recorder``, inherited by forked work
horses), and a web app sets its own on the jobs context it uses (``JobsContext.recorder``),
so a slot reaped inside a request is recorded in that app's database.

Who asked for a job travels with it: the web layer (or a CLI command) runs ``enqueue_*`` inside
``acting_as(actor, …)``, and ``enqueue`` copies the actor into the job's meta (``audit``),
so the row of the job's end names the same user, address, action and archive as the row of
the request.

``lifecycle.finish_job`` records the end (``done``/``failed``/``canceled``, with the job id
and bytes) **before** it publishes the final trigger: nobody is told a job is done before its
row exists (in SQL, or in the recorder's durable spool). Every path that may see the end
records the same event id (``job_end_id``), so racing paths store one row. A recorder that
raises (its database and its spool both unwritable) is logged and does not stop the trigger:
the job's own outcome is never lost to the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from runarchive.core import Actor, AuditAction, AuditEvent, Outcome, cut_detail, job_end_id

from .vocabulary import JobKind

log = logging.getLogger(__name__)
META_KEY = "audit"  # the job meta field holding who asked for the job


class Recorder(Protocol):
    """Stores audit events (append-only); must not lose one it accepted."""

    def record(self, event: AuditEvent) -> None:
        """Store ``event``."""


class NullRecorder:
    """The default recorder: keeps nothing (no database configured)."""

    def record(self, event: AuditEvent) -> None:
        """Drop ``event``."""


NULL_RECORDER: Recorder = NullRecorder()
_installed: Recorder = NULL_RECORDER
_acting: ContextVar[dict[str, Any] | None] = ContextVar("runarchive_audit_actor", default=None)


def install_recorder(recorder: Recorder | None) -> None:
    """Make ``recorder`` this process's recorder (None: the no-op one again)."""
    global _installed
    _installed = recorder if recorder is not None else NULL_RECORDER


def installed_recorder() -> Recorder:
    """Return this process's recorder."""
    return _installed


@contextmanager
def acting_as(
    actor: Actor, action: AuditAction, archive: str | None = None, detail: str | None = None
) -> Iterator[None]:
    """Make the jobs queued inside carry ``actor`` and the action (copied into their meta)."""
    asked = {"user": actor.user, "remote_addr": actor.remote_addr, "action": action.value,
             "archive": archive, "detail": cut_detail(detail)}  # fmt: skip
    token = _acting.set(asked)
    try:
        yield
    finally:
        _acting.reset(token)


def job_meta() -> dict[str, Any] | None:
    """Return the actor of the jobs queued now (for the job's meta), or None."""
    found = _acting.get()
    return dict(found) if found is not None else None


_KIND_ACTIONS = {
    JobKind.ARCHIVE: AuditAction.ARCHIVE,
    JobKind.RESTORE: AuditAction.RESTORE,
    JobKind.UNDO: AuditAction.UNDO,
    JobKind.PRUNE: AuditAction.PRUNE,
}


def _text(meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def job_end_event(
    runid: str,
    job_id: str,
    kind: JobKind,
    outcome: Outcome,
    *,
    meta: Mapping[str, Any] | None,
    nbytes: int | None = None,
    archive: str | None = None,
    detail: str | None = None,
) -> AuditEvent:
    """Return the event of a job's end, naming whoever asked for it (``unknown``: a job queued
    outside ``enqueue``, e.g. by ``rq requeue``)."""
    asked: Mapping[str, Any] = meta.get(META_KEY) or {} if meta is not None else {}
    if not isinstance(asked, Mapping):
        asked = {}
    try:
        action = AuditAction(_text(asked, "action") or _KIND_ACTIONS[kind])
    except (KeyError, ValueError):
        action = AuditAction(kind.value)
    return AuditEvent(
        user=_text(asked, "user") or "unknown",
        remote_addr=_text(asked, "remote_addr") or "unknown",
        runid=runid,
        action=action,
        outcome=outcome,
        archive=archive or _text(asked, "archive"),
        job_id=job_id,
        bytes=nbytes,
        detail=cut_detail(detail if detail is not None else _text(asked, "detail")),
        event_id=job_end_id(job_id),
    )


def record(recorder: Recorder, event: AuditEvent) -> None:
    """Hand ``event`` to ``recorder``; a recorder that fails is logged, never raised."""
    try:
        recorder.record(event)
    except Exception:
        log.exception("audit: could not record %s %s of job %s", event.action, event.outcome,
                      event.job_id)  # fmt: skip
