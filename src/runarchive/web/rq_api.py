"""Blueprint ``rq_api``: start archive and restore jobs, delete archives, poll and cancel jobs.

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
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from runarchive.core import InvalidInput, NotFound, parse_comment
from runarchive.jobs import (
    cancel_job,
    delete_archive,
    enqueue_archive,
    enqueue_restore,
    job_status,
)

from . import access
from .deployment import jobs

bp = Blueprint("rq_api", __name__)
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")  # fullmatch: "$" would let "id\n" through


def _body() -> dict[str, Any]:
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


def _json(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/runs/<runid>/rq/api/archive")
def api_archive(runid: str) -> Response:
    """Queue an archive of the run; 202 with the job id."""
    access.require_write(runid)
    body = _body()
    comment = parse_comment(_text(body, "comment", required=False))
    # store|follow (400 otherwise, from the jobs layer); absent: the RUNARCHIVE_LINKS setting.
    links = _text(body, "links", required=False)
    job_id = enqueue_archive(jobs(), runid, comment.text, links)
    # The stored comment, so a client can tell the user when it was cut to 40 characters.
    return _json({"job_id": job_id, "comment": comment.text, "comment_cut": comment.cut}, 202)


@bp.post("/runs/<runid>/rq/api/restore-archive")
def api_restore_archive(runid: str) -> Response:
    """Queue a restore of the run from ``archive_name``; 202 with the job id."""
    access.require_write(runid)
    name = _text(_body(), "archive_name", required=True)
    assert name is not None
    job_id = enqueue_restore(jobs(), runid, name)
    return _json({"job_id": job_id}, 202)


@bp.post("/runs/<runid>/rq/api/delete-archive")
def api_delete_archive(runid: str) -> Response:
    """Delete archive ``archive_name`` of the run now; 200 with its name."""
    access.require_write(runid)
    name = _text(_body(), "archive_name", required=True)
    assert name is not None
    delete_archive(jobs(), runid, name)
    return _json({"deleted": name}, 200)


def _job(job_id: str, *, with_exc_info: bool) -> dict[str, Any]:
    if not JOB_ID_RE.fullmatch(job_id):
        raise InvalidInput(f"Invalid job id {job_id!r}.")
    info = job_status(jobs(), job_id, with_exc_info=with_exc_info)
    if not isinstance(info.get("runid"), str):  # an RQ job that is not one of ours
        raise NotFound(f"Job not found: {job_id}")
    return info


@bp.get("/rq/api/jobstatus/<job_id>")
def jobstatus(job_id: str) -> Response:
    """Return a job's status, times and progress (read access to its run)."""
    info = _job(job_id, with_exc_info=False)
    access.require_read(info["runid"])
    return _json(info, 200)


@bp.get("/rq/api/jobinfo/<job_id>")
def jobinfo(job_id: str) -> Response:
    """Return the job's status plus ``exc_info`` (write access to its run)."""
    info = _job(job_id, with_exc_info=True)
    access.require_write(info["runid"])
    return _json(info, 200)


@bp.post("/rq/api/canceljob/<job_id>")
def canceljob(job_id: str) -> Response:
    """Cancel a queued or running job (write access to its run); 200 with what was done."""
    info = _job(job_id, with_exc_info=False)
    access.require_write(info["runid"])
    who = access.user()
    # A host policy may grant write without a user of ours: the cancel is then the host's.
    status = cancel_job(jobs(), job_id, who.name if who is not None else "host")
    return _json({"job_id": job_id, "status": str(status)}, 200)
