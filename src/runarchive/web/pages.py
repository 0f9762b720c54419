"""Blueprint ``pages``: the user's runs (``/``), the health check and the OpenAPI document.

Under a host's login there are no runarchive users to list runs for (the host's policy answers
per run and cannot be enumerated): ``/`` then says so and links nowhere but the host's home.

``/healthz`` answers without authentication and reveals nothing but whether the database and
Redis answer and how many RQ workers serve the queue: 200 when both answer, 503 otherwise (so a
load balancer takes an instance out while its Redis is gone).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template
from flask_wtf.csrf import generate_csrf  # type: ignore[import-untyped]
from sqlalchemy import text

from runarchive.jobs import find_run, worker_count

from . import accounts, openapi, urls
from .access import fork_outcome, is_public, user
from .db import db
from .errors import html_page
from .jobs_context import deployment, jobs
from .mount import mount, template

log = logging.getLogger(__name__)
bp = Blueprint("pages", __name__)


@bp.get("/")
@html_page
def index() -> Response | str:
    """List the runs the logged-in user owns (anonymous visitors go to the login form)."""
    who = user()
    if who is None:
        if not mount().own_login:
            return render_template(template("index.html"), runs=None)
        found: Response = redirect(urls.login())  # type: ignore[assignment]
        return found
    runs = []
    settings = deployment().settings
    accounts.settle_forks(db().session, fork_outcome, user=who)  # failed forks' grants go
    for runid in accounts.runs_of(db().session, who):
        run_dir = find_run(settings, runid)
        runs.append(
            {
                "runid": runid,
                "public": is_public(run_dir),
                "can_write": True,
                "exists": run_dir is not None,
                "dashboard_url": urls.dashboard(runid),
            }
        )
    return render_template(template("index.html"), runs=runs)


@bp.get("/csrf-token")
def csrf_token() -> Response:
    """Give a page of another origin's host (runarchive run as a separate service behind it)
    the CSRF token of this browser session, to send as ``X-CSRFToken`` on its POSTs.

    Same-origin only in effect: the browser sends our session cookie with the request, and the
    answer is JSON that a cross-site page cannot read (no CORS headers are ever sent).
    """
    response = jsonify({"csrf_token": generate_csrf(), "header": "X-CSRFToken"})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/healthz")
def healthz() -> Response:
    """Report whether the database and Redis answer (200) or not (503)."""
    checks: dict[str, Any] = {}
    try:
        db().session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("health: database: %s", exc)
        checks["database"] = "unavailable"
    try:
        ctx = jobs()
        ctx.clients.ping()
        checks["redis"] = "ok"
        checks["workers"] = worker_count(ctx)
    except Exception as exc:
        log.warning("health: redis: %s", exc)
        checks["redis"] = "unavailable"
    ok = checks["database"] == "ok" and checks["redis"] == "ok"
    response = jsonify({"status": "ok" if ok else "degraded", **checks})
    response.status_code = 200 if ok else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """Return the OpenAPI 3.1 description of the HTTP API."""
    response = jsonify(openapi.document())
    return response
