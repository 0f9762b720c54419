"""WEPPcloud's URLs and answers over our own routes' code: a drop-in backend for its front-end.

Two blueprints, one per envelope WEPPcloud's pages and services expect; each route is a thin
adapter over the functions our own routes use (``jobs_api``, ``archives``): only the URL, the
access call (with the config segment) and the answer's shape differ.

* ``wepp`` — the console's URLs, which carry a config segment:

  ============================================================  ================================
  ``GET  /runs/<runid>/<config>/rq-archive-dashboard``           our dashboard page
  ``GET  /runs/<runid>/<config>/rq-archive-dashboard/archives``  our list (``Success: true``)
  ``POST /runs/<runid>/<config>/rq/api/archive``                 ``{Success, job_id}``
  ``POST /runs/<runid>/<config>/rq/api/restore-archive``         ``{Success, job_id}``
  ``POST /runs/<runid>/<config>/rq/api/delete-archive``          ``{Success}``
  ============================================================  ================================

  A refusal is ``{"Success": false, "Error": <text>}`` with our HTTP status (the console reads
  only the body); the dashboard's refusals are HTML pages like our dashboard's.

* ``wepp_engine`` — the rq-engine service: ``POST /rq-engine/api/runs/<runid>/<config>/
  {archive,restore-archive,delete-archive}`` answer 200 ``{"job_id"}`` (delete ``{}``), and
  ``/rq-engine/api/{jobstatus,jobinfo,canceljob}/<id>`` answer our job status (plus
  ``job_id``), or 200 ``{"job_id", "status": "not_found"}`` for a job nobody knows. A refusal
  is ``{"error": {"message", "details", "code"}}`` with 400, 404 or 500 (401/403 stay as they
  are); ``details`` is our own message where WEPPcloud's text replaced it. ``canceljob``
  answers 501 ``not_implemented`` for a known job until the cancel route of the service lands.

Refusal texts are WEPPcloud's where ours differ (``refusal_text``): a job holding the run is
``An archive job is already running for this project``, an unknown run ``Project <runid> not
found``, an unknown archive ``Archive <name> not found``; a held lock keeps ``Cannot <verb>
while files are locked: a.nodb, b.nodb`` (already WEPPcloud's).

The config segment is validated (``CONFIG_RE``) and handed to the host's access policy
(``access.py``: ``policy(runid, config=config)`` when the policy takes it). The status stream's
WEPPcloud path ``/weppcloud-microservices/status/<runid>:archive`` is served by ``websocket.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from flask import Blueprint, Flask, Response, redirect, request
from flask_wtf.csrf import CSRFError  # type: ignore[import-untyped]
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from runarchive.core import AuditAction, InvalidInput, NotFound, RunArchiveError
from runarchive.jobs import JobRunning, QueueUnavailable, acting_as

from . import access, jobs_api, urls
from .access import RunView
from .archives import dashboard_page, list_body
from .audit import actor, recorded
from .errors import Unauthorized, WebError, status_of

log = logging.getLogger(__name__)

bp = Blueprint("wepp", __name__)
engine_bp = Blueprint("wepp_engine", __name__)

CONFIG_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # fullmatch: "$" would let "cfg\n" through
JOB_RUNNING_TEXT = "An archive job is already running for this project"
NOT_FOUND_STATUS = "not_found"
DASHBOARD = "wepp.dashboard"


class Refusal(WebError):
    """One of our errors, worded as WEPPcloud words it; ``cause`` keeps ours."""

    def __init__(self, text: str, cause: RunArchiveError) -> None:
        super().__init__(text, http_status=status_of(cause))
        self.cause = cause
        self.code = cause.code


def refusal_text(exc: RunArchiveError) -> str:
    """Return WEPPcloud's text for one of our errors (ours where WEPPcloud says the same)."""
    if isinstance(exc, JobRunning):
        return JOB_RUNNING_TEXT
    return str(exc)


@contextmanager
def worded(*, runid: str, archive_name: str | None = None) -> Iterator[None]:
    """Reword a NotFound raised inside: the archive's when one is named, else the project's."""
    try:
        yield
    except NotFound as exc:
        text = f"Archive {archive_name} not found" if archive_name else f"Project {runid} not found"
        raise Refusal(text, exc) from exc


def _config(config: str) -> str:
    if not CONFIG_RE.fullmatch(config):
        raise InvalidInput(f"Invalid config {config!r}.")
    return config


def _readable(runid: str, config: str) -> RunView:
    with worded(runid=runid):
        return access.require_read(runid, config=_config(config))


def _writable(runid: str, config: str) -> RunView:
    with worded(runid=runid):
        return access.require_write(runid, config=_config(config))


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------- the console


@bp.get("/runs/<runid>/<config>/rq-archive-dashboard")
def dashboard(runid: str, config: str) -> str:
    """Show our dashboard of the run at WEPPcloud's URL."""
    return dashboard_page(_readable(runid, config))


@bp.get("/runs/<runid>/<config>/rq-archive-dashboard/archives")
def archives(runid: str, config: str) -> Response:
    """List the run's archives (rows with ``modified``), ``in_progress`` and ``job_id``."""
    body = list_body(_readable(runid, config))
    return jobs_api.json_response({"Success": True, **body}, 200)


@bp.post("/runs/<runid>/<config>/rq/api/archive")
def legacy_archive(runid: str, config: str) -> Response:
    """Queue an archive: ``{"Success": true, "job_id"}``."""
    job_id = _archive(runid, config)
    return jobs_api.json_response({"Success": True, "job_id": job_id}, 200)


@bp.post("/runs/<runid>/<config>/rq/api/restore-archive")
def legacy_restore(runid: str, config: str) -> Response:
    """Queue a restore from ``archive_name``: ``{"Success": true, "job_id"}``."""
    job_id = _restore(runid, config)
    return jobs_api.json_response({"Success": True, "job_id": job_id}, 200)


@bp.post("/runs/<runid>/<config>/rq/api/delete-archive")
def legacy_delete(runid: str, config: str) -> Response:
    """Delete archive ``archive_name`` now: ``{"Success": true}``."""
    _delete(runid, config)
    return jobs_api.json_response({"Success": True}, 200)


# The actions behind both URL families, each recorded in the audit log as ours are.


def _archive(runid: str, config: str) -> str:
    with recorded(AuditAction.ARCHIVE, runid) as note:
        run = note.admit(_writable(runid, config))
        job_id = jobs_api.start_archive(run, jobs_api.request_body()).job_id
        note.accepted(job_id)
    return job_id


def _restore(runid: str, config: str) -> str:
    with recorded(AuditAction.RESTORE, runid) as note:
        run = note.admit(_writable(runid, config))
        name = jobs_api.archive_name_of(jobs_api.request_body())
        note.archive = name[:300]
        with (
            acting_as(actor(), AuditAction.RESTORE, note.archive),
            worded(runid=runid, archive_name=name),
        ):
            job_id = jobs_api.start_restore(run, name)
        note.accepted(job_id)
    return job_id


def _delete(runid: str, config: str) -> None:
    with recorded(AuditAction.DELETE, runid) as note:
        run = note.admit(_writable(runid, config))
        name = jobs_api.archive_name_of(jobs_api.request_body())
        note.archive = name[:300]
        with worded(runid=runid, archive_name=name):
            note.bytes = jobs_api.remove_archive(run, name)


# --------------------------------------------------------------------------- rq-engine


@engine_bp.post("/rq-engine/api/runs/<runid>/<config>/archive")
def engine_archive(runid: str, config: str) -> Response:
    """Queue an archive: 200 ``{"job_id"}``."""
    job_id = _archive(runid, config)
    return jobs_api.json_response({"job_id": job_id}, 200)


@engine_bp.post("/rq-engine/api/runs/<runid>/<config>/restore-archive")
def engine_restore(runid: str, config: str) -> Response:
    """Queue a restore from ``archive_name``: 200 ``{"job_id"}``."""
    job_id = _restore(runid, config)
    return jobs_api.json_response({"job_id": job_id}, 200)


@engine_bp.post("/rq-engine/api/runs/<runid>/<config>/delete-archive")
def engine_delete(runid: str, config: str) -> Response:
    """Delete archive ``archive_name`` now: 200 ``{}``."""
    _delete(runid, config)
    return jobs_api.json_response({}, 200)


def _known_job(job_id: str, *, with_exc_info: bool) -> dict[str, Any] | None:
    """Return our job's status, or None for a job nobody knows (WEPPcloud's 200 answer)."""
    try:
        info = jobs_api.find_job(job_id, with_exc_info=with_exc_info)
    except NotFound:
        return None
    return {"job_id": info["id"], **info}


def _not_found(job_id: str) -> Response:
    return jobs_api.json_response({"job_id": job_id, "status": NOT_FOUND_STATUS}, 200)


@engine_bp.get("/rq-engine/api/jobstatus/<job_id>")
def engine_jobstatus(job_id: str) -> Response:
    """Return the job's status (read access to its run), or ``status: not_found``."""
    info = _known_job(job_id, with_exc_info=False)
    if info is None:
        return _not_found(job_id)
    access.require_read(info["runid"])
    return jobs_api.json_response(info, 200)


@engine_bp.get("/rq-engine/api/jobinfo/<job_id>")
def engine_jobinfo(job_id: str) -> Response:
    """Return the job's status and traceback (write access), or ``status: not_found``."""
    info = _known_job(job_id, with_exc_info=True)
    if info is None:
        return _not_found(job_id)
    access.require_write(info["runid"])
    return jobs_api.json_response(info, 200)


@engine_bp.post("/rq-engine/api/canceljob/<job_id>")
def engine_canceljob(job_id: str) -> Response:
    """Cancel a job (write access; the same cancel as ours), or ``status: not_found``."""
    info = _known_job(job_id, with_exc_info=False)
    if info is None:
        return _not_found(job_id)
    with recorded(AuditAction.CANCEL, info["runid"]) as note:
        note.job_id = job_id
        status = jobs_api.cancel(info)
        note.admitted, note.detail = True, status
    return jobs_api.json_response({"job_id": job_id, "status": status}, 200)


# --------------------------------------------------------------------------- refusals


def _as_library_error(exc: Exception) -> RunArchiveError:
    """Return the library error a failure stands for (CSRF, Redis, HTTP, unexpected)."""
    if isinstance(exc, RunArchiveError):
        return exc
    if isinstance(exc, CSRFError):
        return InvalidInput(f"CSRF check failed: {exc.description}")
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        log.warning("Redis unavailable: %s", exc)
        return QueueUnavailable()
    if isinstance(exc, HTTPException):
        failure = WebError(exc.description or exc.name, http_status=exc.code or 500)
        failure.code = (exc.name or "error").lower().replace(" ", "_")
        return failure
    log.exception("unhandled error on %s %s", request.method, request.path)
    return RunArchiveError("Internal error; see the server log.")


def _console_refusal(exc: Exception) -> Response:
    failure = _as_library_error(exc)
    status = status_of(failure)
    if request.endpoint == DASHBOARD:
        if isinstance(failure, Unauthorized):
            target = urls.login(request.full_path.rstrip("?"))
            found: Response = redirect(target)  # type: ignore[assignment]
            return found
        html = (
            "<!doctype html><meta charset='utf-8'><title>runarchive</title>"
            f"<main><h1>{status}</h1><p>{escape(refusal_text(failure))}</p></main>"
        )
        return Response(html, status=status, mimetype="text/html")
    body = {"Success": False, "Error": refusal_text(failure)}
    return _no_store(jobs_api.json_response(body, status))


def engine_status(status: int) -> int:
    """Map our HTTP status to rq-engine's set: 400, 404, 500 (401/403 kept)."""
    if status in (401, 403, 404):
        return status
    return 500 if status >= 500 else 400


def _engine_refusal(exc: Exception) -> Response:
    failure = _as_library_error(exc)
    cause = failure.cause if isinstance(failure, Refusal) else failure
    text = refusal_text(failure)
    error = {
        "message": text,
        "details": str(cause) if str(cause) != text else None,
        "code": failure.code,
    }
    return jobs_api.json_response({"error": error}, engine_status(status_of(failure)))


for _exc in (RunArchiveError, CSRFError, HTTPException, redis.exceptions.RedisError, Exception):
    bp.register_error_handler(_exc, _console_refusal)
    engine_bp.register_error_handler(_exc, _engine_refusal)


def init_app(app: Flask, *, url_prefix: str = "") -> None:
    """Register WEPPcloud's console and rq-engine routes on ``app`` under ``url_prefix``."""
    app.register_blueprint(bp, url_prefix=url_prefix or None)
    app.register_blueprint(engine_bp, url_prefix=url_prefix or None)
