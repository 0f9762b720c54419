"""Blueprint ``rq_api`` (the jobs API): start archive, restore and undo jobs, delete, poll,
cancel.

Bodies are JSON (``Content-Type: application/json``) or a form; a malformed JSON body or a
field of the wrong type is 400. Every refusal of the jobs layer keeps its meaning: a held
``.nodb`` lock is 409 ``locked`` naming the files, a job already holding the run is 409
``job_running`` naming the job, Redis down is 503. The comment follows the one rule of every
interface (``core.parse_comment``): trimmed and cut to 40 characters, and the answer carries the
stored ``comment`` and ``comment_cut``; only characters that cannot be stored are refused.

Job routes look the job up first (404 when unknown or not one of ours), then apply the read
rule (status) or the write rule (info with the traceback, cancel) to the job's run. A cancel is
made in the name of the logged-in user (session or API token); 409 ``not_cancelable`` once
the job ended or a restore's swap began.

The functions under the routes (``request_body``, ``start_archive``, ``start_restore``,
``remove_archive``, ``find_job``, ``cancel``) are the one implementation the WEPPcloud routes
(``wepp.py``) adapt: only the URL, the access call and the answer's envelope differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request

from runarchive.core import (
    AuditAction,
    Comment,
    InvalidInput,
    NotFound,
    RestorePaths,
    RunRef,
    archive_ref,
    parse_comment,
    parse_restore_paths,
)
from runarchive.jobs import (
    acting_as,
    cancel_job,
    delete_archive,
    enqueue_archive,
    enqueue_restore,
    enqueue_undo,
    job_status,
)

from . import access, archive_quota
from .access import RunView
from .audit import actor, recorded
from .jobs_context import jobs

bp = Blueprint("rq_api", __name__)
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")  # fullmatch: "$" would let "id\n" through


def request_body() -> dict[str, Any]:
    """Return the request's JSON object or form fields; 400 for anything else."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise InvalidInput("Request body must be a JSON object.")
        return data
    return dict(request.form)


def _text(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None or (value == "" and not required):
        if required:
            raise InvalidInput(f"Missing field {field!r}.")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"Field {field!r} must be a string.")
    return value


def json_response(body: dict[str, Any], status: int) -> Response:
    """Return ``body`` as JSON with ``status``, never cached."""
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def archive_name_of(body: dict[str, Any]) -> str:
    """Return the body's ``archive_name`` (required, a string)."""
    name = _text(body, "archive_name", required=True)
    assert name is not None
    return name


@dataclass(frozen=True, slots=True)
class QueuedArchive:
    """An archive job queued from a request: its id and the comment as stored."""

    job_id: str
    comment: Comment


def start_archive(run: RunView, body: dict[str, Any]) -> QueuedArchive:
    """Queue an archive of a run the caller may write, with the body's comment and links mode.

    Within the run's quota and each owner's (409 ``quota_exceeded`` naming usage and limit).
    """
    comment = parse_comment(_text(body, "comment", required=False))
    # store|follow (400 otherwise, from the jobs layer); absent: the RUNARCHIVE_LINKS setting.
    links = _text(body, "links", required=False)
    owners = archive_quota.owner_quotas(run.runid)
    return QueuedArchive(enqueue_archive(jobs(), _located(run), comment, links, owners), comment)


def start_restore(run: RunView, name: str, paths: RestorePaths | None = None) -> str:
    """Queue a restore of a run the caller may write from archive ``name`` (only ``paths``
    when given); return the id.

    The name and paths are parsed once, at the edge (400 for bad ones); the jobs layer gets
    the parsed values.
    """
    return enqueue_restore(jobs(), _located(run), archive_ref(name), paths)


def paths_of(body: dict[str, Any]) -> RestorePaths | None:
    """Return the body's ``paths`` (a JSON list of strings), normalised; None when absent."""
    raw = body.get("paths")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("Field 'paths' must be a list of strings (send the body as JSON).")
    return parse_restore_paths(raw)


def start_undo(run: RunView) -> str:
    """Queue an undo of the last restore of a run the caller may write; 409 with nothing kept."""
    return enqueue_undo(jobs(), _located(run))


def remove_archive(run: RunView, name: str) -> int:
    """Delete archive ``name`` of a run the caller may write (refused as a job would be);
    return the bytes it held."""
    return delete_archive(jobs(), _located(run), archive_ref(name))


def _located(run: RunView) -> RunRef:
    """The run ``access`` located (``require_write`` never returns a view without one)."""
    assert run.run is not None
    return run.run


@bp.post("/runs/<runid>/rq/api/archive")
def api_archive(runid: str) -> Response:
    """Queue an archive of the run; 202 with the job id."""
    with recorded(AuditAction.ARCHIVE, runid) as note:
        queued = start_archive(note.admit(access.require_write(runid)), request_body())
        note.accepted(queued.job_id)
    # The stored comment, so a client can tell the user when it was cut to 40 characters.
    body = {"job_id": queued.job_id, "comment": queued.comment.text,
            "comment_cut": queued.comment.cut}  # fmt: skip
    return json_response(body, 202)


@bp.post("/runs/<runid>/rq/api/restore-archive")
def api_restore_archive(runid: str) -> Response:
    """Queue a restore of the run from ``archive_name`` (only ``paths``, if given); 202."""
    with recorded(AuditAction.RESTORE, runid) as note:
        run = note.admit(access.require_write(runid))
        body = request_body()
        note.archive = _loose_text(body, "archive_name")
        note.detail = _paths_detail(body)
        # The job carries the actor, archive and paths (``acting_as``) for its end's row.
        with acting_as(actor(), AuditAction.RESTORE, note.archive, note.detail):
            job_id = start_restore(run, archive_name_of(body), paths_of(body))
        note.accepted(job_id)
    return json_response({"job_id": job_id}, 202)


@bp.post("/runs/<runid>/rq/api/undo-restore")
def api_undo_restore(runid: str) -> Response:
    """Queue an undo of the run's last restore; 202 with the job id, 409 with nothing to undo."""
    with recorded(AuditAction.UNDO, runid) as note:
        job_id = start_undo(note.admit(access.require_write(runid)))
        note.accepted(job_id)
    return json_response({"job_id": job_id}, 202)


@bp.post("/runs/<runid>/rq/api/delete-archive")
def api_delete_archive(runid: str) -> Response:
    """Delete archive ``archive_name`` of the run now; 200 with its name."""
    with recorded(AuditAction.DELETE, runid) as note:
        run = note.admit(access.require_write(runid))
        body = request_body()
        note.archive = _loose_text(body, "archive_name")
        name = archive_name_of(body)
        note.bytes = remove_archive(run, name)
    return json_response({"deleted": name}, 200)


def _loose_text(body: dict[str, Any], field: str) -> str | None:
    """The field as the audit row names it (cut; only a string), before it is validated."""
    value = body.get(field)
    return value[:300] if isinstance(value, str) else None


def _paths_detail(body: dict[str, Any]) -> str | None:
    """A partial restore's paths as its audit row's ``detail`` (``paths: a, b/``)."""
    raw = body.get("paths")
    if not isinstance(raw, list):
        return None
    return "paths: " + ", ".join(str(p) for p in raw)


def find_job(job_id: str, *, with_exc_info: bool) -> dict[str, Any]:
    """Return one of our jobs' status (and traceback); 400 for a bad id, 404 when unknown.

    No access rule is applied here: the caller applies the read or write rule to the job's run.
    """
    if not JOB_ID_RE.fullmatch(job_id):
        raise InvalidInput(f"Invalid job id {job_id!r}.")
    info = job_status(jobs(), job_id, with_exc_info=with_exc_info)
    if not isinstance(info.get("runid"), str):  # an RQ job that is not one of ours
        raise NotFound(f"Job not found: {job_id}")
    return info


@bp.get("/rq/api/jobstatus/<job_id>")
def jobstatus(job_id: str) -> Response:
    """Return a job's status, times and progress (read access to its run)."""
    info = find_job(job_id, with_exc_info=False)
    access.require_read(info["runid"])
    return json_response(info, 200)


@bp.get("/rq/api/jobinfo/<job_id>")
def jobinfo(job_id: str) -> Response:
    """Return the job's status plus ``exc_info`` (write access to its run)."""
    info = find_job(job_id, with_exc_info=True)
    access.require_write(info["runid"])
    return json_response(info, 200)


def cancel(info: dict[str, Any]) -> str:
    """Cancel a found job the caller may write, in the caller's name; return what was done."""
    access.require_write(info["runid"])
    who = access.user()
    # A host policy may grant write without a user of ours: the cancel is then the host's.
    return str(cancel_job(jobs(), info["id"], who.name if who is not None else "host"))


@bp.post("/rq/api/canceljob/<job_id>")
def canceljob(job_id: str) -> Response:
    """Cancel a queued or running job (write access to its run); 200 with what was done."""
    info = find_job(job_id, with_exc_info=False)
    with recorded(AuditAction.CANCEL, info["runid"]) as note:
        note.job_id = job_id
        status = cancel(info)
        note.admitted = True
        note.detail = status
    return json_response({"job_id": job_id, "status": status}, 200)
