"""Every failure a client sees, as ``{"error": {"code", "message"}}`` with a fitting status.

The core and the jobs layer name their errors (``code``); this module owns their HTTP statuses
(``HTTP_STATUSES``, looked up along the error's class hierarchy), from the API's fixed set
(400/401/403/404/409/503):

* ``InvalidArchive`` and its subclasses are **409**: the request was well formed but the
  archive's state (damaged, unsafe) does not allow it; ``code`` keeps the precise reason
  (``invalid_archive``, ``unsafe_archive`` …).
* ``NoSpace`` is **503**: the server cannot do it now; retry when space is freed.
* A Redis connection failure anywhere becomes **503** ``queue_unavailable``.

The web layer's own errors (``WebError``: 401, 403, 429, 503) carry their status.

``Locked`` adds ``"locked_files"`` and ``JobRunning`` adds ``"job_id"`` to the error object.

Browsers get the same status as an HTML page instead (``error.html``: the layout, the status, the
message and a link back): on the pages themselves (dashboard, runs, login) always, and on any
other URL when the ``Accept`` header prefers ``text/html`` over ``application/json`` — a browser
navigating. ``Accept: application/json``, ``*/*`` (a tie goes to JSON) or no ``Accept`` get the
JSON document, so scripts and the dashboard's ``fetch`` calls see the API's contract unchanged.
Anonymous visitors of a page are sent to the login form instead of a 401 — ours, or in a host
app with an access policy the host's (its Flask-Login ``unauthorized()``: its login view with
``next``, or its own answer); an anonymous browser on an API URL gets the 401 page.

In runarchive's own app these handlers cover every URL; in a host app only our blueprints'
(they are registered on each blueprint too), so the host's own errors stay the host's. An
``abort()`` with a ready response (an access policy answering with the host's own page) is
sent as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from flask import Response, current_app, jsonify, redirect, render_template, request
from flask.sansio.scaffold import Scaffold
from flask_wtf.csrf import CSRFError  # type: ignore[import-untyped]
from markupsafe import escape
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from runarchive.core import (
    Busy,
    InvalidArchive,
    InvalidInput,
    Locked,
    NoSpace,
    NotFound,
    NothingToUndo,
    Pinned,
    QuotaExceeded,
    ReadOnlyRun,
    RunArchiveError,
    UnsafeRun,
)
from runarchive.jobs import Canceled, JobRunning, NotCancelable, QueueUnavailable

from . import urls
from .mount import mount, template

log = logging.getLogger(__name__)


class WebError(RunArchiveError):
    """An error of the web layer itself, which carries its HTTP status."""

    http_status = 500

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        if http_status is not None:
            self.http_status = http_status


class Unauthorized(WebError):
    """No user is logged in (and no valid API token was sent)."""

    http_status = 401
    code = "unauthorized"


class Forbidden(WebError):
    """The user is known but may not do this to this run."""

    http_status = 403
    code = "forbidden"


class TooManyAttempts(WebError):
    """Too many failed logins; ``retry_after`` seconds until the next try."""

    http_status = 429
    code = "too_many_attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class SocketsFull(WebError):
    """This process has as many websockets as it may hold; the page polls instead."""

    http_status = 503
    code = "too_many_sockets"


class WebsocketUnavailable(WebError):
    """The server running the app hands it no socket to upgrade (not werkzeug/gunicorn …)."""

    http_status = 503
    code = "websocket_unavailable"


F = TypeVar("F", bound=Callable[..., Any])
_HTML_PAGE = "runarchive_html_page"


def html_page(view: F) -> F:
    """Mark a view as a page for browsers: its errors are answered as HTML (``wants_page``)."""
    setattr(view, _HTML_PAGE, True)
    return view


def is_html_page(endpoint: str | None) -> bool:
    """Tell whether ``endpoint``'s view is marked ``html_page``."""
    view = current_app.view_functions.get(endpoint) if endpoint is not None else None
    return bool(getattr(view, _HTML_PAGE, False))


# The library's errors (named by the core and the jobs layer) and their statuses; the first
# class of an error's hierarchy found here wins, so a subclass maps like its parent.
HTTP_STATUSES: dict[type[RunArchiveError], int] = {
    InvalidInput: 400,
    NotFound: 404,
    UnsafeRun: 409,
    InvalidArchive: 409,  # and UnsafeArchive, LimitExceeded, DamagedArchive
    NoSpace: 503,
    Busy: 409,  # and JobRunning
    ReadOnlyRun: 409,
    Pinned: 409,
    QuotaExceeded: 409,
    Locked: 409,
    QueueUnavailable: 503,
    Canceled: 409,
    NotCancelable: 409,
    NothingToUndo: 409,
}


def status_of(exc: RunArchiveError) -> int:
    """Return the HTTP status of an error: its own (``WebError``), else ``HTTP_STATUSES``'."""
    if isinstance(exc, WebError):
        return exc.http_status
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUSES:
            return HTTP_STATUSES[cls]
    return 500


def error_body(exc: RunArchiveError) -> dict[str, Any]:
    """Return the JSON error document of a library error."""
    error: dict[str, Any] = {"code": exc.code, "message": str(exc)}
    if isinstance(exc, Locked):
        error["locked_files"] = exc.paths
    if isinstance(exc, JobRunning):
        error["job_id"] = exc.job_id
    return {"error": error}


def wants_page() -> bool:
    """Tell whether to answer the current request with an HTML page rather than JSON.

    The pages always; any other URL when the client prefers ``text/html`` over
    ``application/json`` (a browser navigating). A tie — ``*/*``, or no ``Accept`` — is JSON.
    """
    if is_html_page(request.endpoint):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def this_page() -> str:
    """Return the path and query of the current request, for a ``next`` parameter.

    The script root is included: behind a dispatcher the path alone would lose the prefix.
    """
    return request.script_root + request.full_path.rstrip("?")


def login_redirect() -> Response | None:
    """Send an anonymous browser to the login: ours, else the host's (None: nobody's; 401)."""
    if mount().own_login:
        found: Response = redirect(urls.login(this_page()))  # type: ignore[assignment]
        return found
    manager = getattr(current_app, "login_manager", None)
    if manager is None:
        return None
    try:
        answer: Response = current_app.make_response(manager.unauthorized())
    except HTTPException as exc:  # no login view: the host's 401 (or its ready response)
        return exc.response if isinstance(exc.response, Response) else None
    return answer


def error_page(status: int, message: str) -> Response:
    """Render the error page: the layout with the status, a short message and a link back."""
    if status == 401 and mount().own_login:
        link_url, link_text = urls.login(this_page()), "Log in"
    else:
        link_url, link_text = urls.home(), "Your runs"
    title = HTTP_STATUS_CODES.get(status, "Error")
    try:
        html = render_template(
            template("error.html"),
            status=status,
            title=title,
            message=message,
            link_url=link_url,
            link_text=link_text,
        )
    except Exception:  # the layout needs the session and database: say it plainly without
        log.exception("could not render the error page of a %s", status)
        html = (
            f"<!doctype html><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<h1>{status} {escape(title)}</h1><p>{escape(message)}</p>"
        )
    return Response(html, status=status, mimetype="text/html")


def respond(exc: RunArchiveError) -> Response:
    """Turn a library or web error into the response the client gets."""
    status = status_of(exc)
    if wants_page():
        login = None
        if isinstance(exc, Unauthorized) and is_html_page(request.endpoint):
            login = login_redirect()
        response = login or error_page(status, str(exc))
    else:
        response = jsonify(error_body(exc))
        response.status_code = status
    if isinstance(exc, TooManyAttempts):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, SocketsFull | NoSpace | WebsocketUnavailable):
        response.headers["Retry-After"] = "30"
    return response


def _http(code: str, status: int, message: str) -> Response:
    if wants_page():
        return error_page(status, message)
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def csrf_message(description: str) -> str:
    """Say what a page must add to pass the CSRF check (pages from before WEPPcloud's
    csrf_bootstrap.js send no token at all)."""
    return (
        f"CSRF check failed: {description} Send the session's token in the X-CSRFToken "
        f"header (or a csrf_token form field): read it from GET {urls.csrf_token()} "
        "or from the page's <meta name=\"csrf-token\">, as WEPPcloud's csrf_bootstrap.js "
        "does — or call the API with a token (Authorization: Bearer …)."
    )


def register_error_handlers(app: Scaffold) -> None:
    """Install the handlers that give every error the JSON (or page) shape above.

    ``app`` is our own Flask app (every URL) or one of our blueprints (its routes only).
    """

    @app.errorhandler(RunArchiveError)
    def _library(exc: RunArchiveError) -> Response:
        if isinstance(exc, QueueUnavailable):  # where and why stays in the log, not the body
            log.warning("queue unavailable: %s", exc.detail or exc)
        return respond(exc)

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Response:
        return _http("csrf_failed", 400, csrf_message(str(exc.description)))

    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def _redis_down(exc: Exception) -> Response:
        log.warning("Redis unavailable: %s", exc)
        return _http(QueueUnavailable.code, 503, QueueUnavailable.MESSAGE)

    @app.errorhandler(HTTPException)
    def _http_exc(exc: HTTPException) -> Response:
        if isinstance(exc.response, Response):  # abort(response): the answer is given
            return exc.response
        status = exc.code or 500
        name = (exc.name or "error").lower().replace(" ", "_")
        response = _http(name, status, exc.description or exc.name)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _http("internal_error", 500, "Internal error; see the server log.")
