"""Blueprint ``audit``: the audit log's two routes, and the recording of every request's action.

``GET /runs/<runid>/archive/audit?cursor=&limit=`` (write access to the run) and ``GET /audit``
(admins: every run) answer ``{"events": [...], "next"}``, newest first; ``next`` is the opaque
cursor of the following page, or null on the last one.

Each route that acts (archive, restore, undo, delete, cancel, prune, pin, unpin, policy,
download) runs inside ``recorded(action, runid, …)``: one row when the request is answered —
``accepted`` with the job id for a queued job (the worker records the job's end), ``done`` for
a synchronous action, or ``refused``/``failed`` with the error's message in ``detail``. The
row is stored (or spooled, ``auditlog.py``) before the response goes out, so no client is told
"done" before the row exists; a failed SQL write never changes the answer.

Who the actor is: the user's name for a session; ``token:<id>:<name>`` for a personal API
token (its id, so a row names the token used); ``host:<name>`` when the host's access policy
granted the request without a user of ours and the host names its user (app config
``RUNARCHIVE_AUDIT_USER``, a callable called in the request), else ``host``; ``anonymous`` on a
public run. The address is the
request's ``remote_addr`` as the app sees it: the peer, or what ``ProxyFix`` was configured to
trust (``RUNARCHIVE_PROXY_HOPS``); a client's own ``X-Forwarded-For`` is never read here.
A refusal is recorded when its actor is known: a user of ours (or the host's policy) asked, or
the request passed the access check. Anonymous requests refused for want of a login (401) are
not: nobody is known, and anyone could fill the log with them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from runarchive.core import (
    RUNID_RE,
    Actor,
    AuditAction,
    AuditEvent,
    Outcome,
    RunArchiveError,
    cut_detail,
    outcome_of,
    parse_limit,
)
from runarchive.jobs import acting_as

from . import access
from .access import RunView
from .auditlog import AuditLog
from .errors import Forbidden, Unauthorized
from .mount import mount

log = logging.getLogger(__name__)
bp = Blueprint("audit", __name__)
EXTENSION = "runarchive.audit"
AUDIT_USER = "RUNARCHIVE_AUDIT_USER"  # host app config: a callable naming the host's user


def init_app(app: Flask, database_url: str, data_dir: Path, wait: float) -> AuditLog:
    """Open the audit log of ``app`` (its spool in ``data_dir``) and replay what it spooled."""
    found = AuditLog(database_url, data_dir, wait=wait)
    app.extensions[EXTENSION] = found
    found.replay()  # events spooled while the database could not be written, in order
    return found


def audit_log() -> AuditLog:
    """Return the current app's audit log."""
    found: AuditLog = current_app.extensions[EXTENSION]
    return found


def actor() -> Actor:
    """Return who makes the current request, and from where."""
    who = access.user()
    if who is not None:
        token_id = g.get("api_token_id")
        user = f"token:{token_id}:{who.name}" if token_id is not None else who.name
    elif mount().own_login:
        user = "anonymous"
    else:  # the host's login: the host may name its user (``RUNARCHIVE_AUDIT_USER``)
        namer = current_app.config.get(AUDIT_USER)
        name = namer() if namer is not None else None
        user = f"host:{name}"[:200] if isinstance(name, str) and name else "host"
    return Actor(user, request.remote_addr or "unknown")


@dataclass
class Note:
    """What a route learns while it acts, for its row: the outcome, job, bytes, archive."""

    archive: str | None = None
    detail: str | None = None
    outcome: Outcome = Outcome.DONE
    job_id: str | None = None
    bytes: int | None = None
    admitted: bool = False

    def admit(self, found: RunView) -> RunView:
        """Note that the request passed the access check; return the run."""
        self.admitted = True
        return found

    def accepted(self, job_id: str) -> None:
        """Note that a job was queued."""
        self.outcome = Outcome.ACCEPTED
        self.job_id = job_id


@contextmanager
def recorded(
    action: AuditAction, runid: str | None, *, archive: str | None = None,
    detail: str | None = None,
) -> Iterator[Note]:  # fmt: skip
    """Record the action the block performs: its outcome, or its refusal (see the module)."""
    note = Note(archive=archive, detail=detail)
    who = actor()
    stored_runid = runid if runid is not None and RUNID_RE.fullmatch(runid) else None
    try:
        with acting_as(who, action, archive, detail):  # carried by a job queued inside
            yield note
    except Exception as exc:
        if isinstance(exc, Unauthorized) or not _known(note, exc):
            raise
        outcome, message = _ended(exc)
        if note.detail:
            message = f"{note.detail}; {message}"
        _store(AuditEvent(
            user=who.user, remote_addr=who.remote_addr, runid=stored_runid, action=action,
            outcome=outcome, archive=note.archive, job_id=note.job_id,
            detail=cut_detail(message),
        ))  # fmt: skip
        raise
    _store(AuditEvent(
        user=who.user, remote_addr=who.remote_addr, runid=stored_runid, action=action,
        outcome=note.outcome, archive=note.archive, job_id=note.job_id, bytes=note.bytes,
        detail=cut_detail(note.detail),
    ))  # fmt: skip


@contextmanager
def recorded_download(runid: str, archive: str, detail: str | None = None) -> Iterator[Note]:
    """Record a GET of an archive or of one of its files as a download (a HEAD: not at all)."""
    if request.method == "HEAD":
        yield Note(archive=archive, detail=detail)
        return
    with recorded(AuditAction.DOWNLOAD, runid, archive=archive, detail=detail) as note:
        yield note


def sent_bytes(response: Response) -> int:
    """The bytes a download response sends (0 for a 304 or another empty answer)."""
    if response.status_code not in (200, 206):
        return 0
    return int(response.content_length or 0)


def record_action(
    action: AuditAction, runid: str | None, outcome: Outcome, *, archive: str | None = None,
    job_id: str | None = None, nbytes: int | None = None, detail: str | None = None,
) -> None:  # fmt: skip
    """Record one action of the current request by its outcome, for a route that cannot run
    inside ``recorded`` (the fork route: ``record_action(AuditAction.FORK, runid,
    Outcome.ACCEPTED, archive=name, job_id=job_id, detail=f"into {new_runid}")``; its job's
    end is recorded by the worker like every job's, as ``fork`` when its kind is ``fork``)."""
    who = actor()
    _store(AuditEvent(
        user=who.user, remote_addr=who.remote_addr,
        runid=runid if runid is not None and RUNID_RE.fullmatch(runid) else None,
        action=action, outcome=outcome, archive=archive, job_id=job_id, bytes=nbytes,
        detail=cut_detail(detail),
    ))  # fmt: skip


def _ended(exc: Exception) -> tuple[Outcome, str]:
    """How an action that raised ``exc`` ended, and the words its row keeps: ours say what the
    client was told; a host policy's ``abort()`` is a refusal; anything else failed, named by
    its type only (its details stay in the server log)."""
    if isinstance(exc, RunArchiveError):
        return outcome_of(exc), str(exc)
    if isinstance(exc, HTTPException):
        return Outcome.REFUSED, f"{exc.code} {exc.name}"
    return Outcome.FAILED, f"internal error ({type(exc).__name__})"


def _known(note: Note, exc: Exception) -> bool:
    """Tell whether a refusal has a known actor (see the module's notes)."""
    if note.admitted or access.user() is not None:
        return True
    return isinstance(exc, Forbidden) or not mount().own_login  # the host's policy decided


def _store(event: AuditEvent) -> None:
    """Store ``event``; if even the spool fails, log it: the action's answer stands."""
    try:
        audit_log().record(event)
    except Exception:
        log.exception("audit: event %s of run %s lost", event.action, event.runid)


def _page(runid: str | None) -> Response:
    found = audit_log().page(
        runid, request.args.get("cursor"), parse_limit(request.args.get("limit"))
    )
    response = jsonify({"events": found.events, "next": found.next})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/runs/<runid>/archive/audit")
def run_audit(runid: str) -> Response:
    """Answer the run's audit events, newest first (write access)."""
    access.require_write(runid)
    return _page(runid)


@bp.get("/audit")
def all_audit() -> Response:
    """Answer every run's audit events, newest first (admins)."""
    who = access.user()
    if who is None:
        raise Unauthorized("Log in, or send a personal API token (Authorization: Bearer …).")
    if not who.is_admin:
        raise Forbidden("Only admins may read the audit log of every run.")
    return _page(None)
