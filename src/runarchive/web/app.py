"""The app factory: settings, extensions and blueprints assembled into one Flask app.

Nothing is created at import time, so gunicorn builds one app per worker process after
forking. Blueprints, one module per area: ``archive`` (dashboard, list, download), ``rq_api``
(jobs and delete), ``status`` (websocket), ``auth`` (login, logout, tokens, CSRF), ``pages``
(runs, health, OpenAPI). Settings come from the environment (``settings.py`` and the jobs
layer's ``Settings``); see ``docs/configuration.md`` and ``docs/api.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from runarchive.core import InvalidInput
from runarchive.jobs import Settings
from runarchive.jobs.config import ENV as JOBS_ENV

from . import archive, auth, db, deployment, errors, pages, rq_api, security, status, wepp
from .settings import SETTINGS, WebSettings, default_database_url, secret_key_for

# Settings a test_config may give by their environment variable name.
_ENV_NAMES = frozenset(JOBS_ENV.values()) | {s.env for s in SETTINGS.values()}
_ENV_NAMES |= {"RUNARCHIVE_REDIS_URL", "RUNARCHIVE_SECRET_KEY"}


def _environment(config: Mapping[str, Any]) -> dict[str, str]:
    """The process environment, with settings given in ``config`` (tests) laid over it."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in config.items() if k in _ENV_NAMES and v is not None})
    return env


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``test_config`` overrides Flask config and settings.

    ``test_config`` may hold Flask config keys, any settings environment variable name
    (``RUNARCHIVE_RUNS_ROOT``, ``REDIS_URL`` …), or ready ``JOBS_SETTINGS``/``WEB_SETTINGS``.
    """
    config = dict(test_config or {})
    env = _environment(config)
    jobs_settings: Settings = config.pop("JOBS_SETTINGS", None) or Settings.from_env(env)
    web: WebSettings = config.pop("WEB_SETTINGS", None) or WebSettings.from_env(env)
    if jobs_settings.runs_root is None:
        raise InvalidInput("No runs root configured: set RUNARCHIVE_RUNS_ROOT or --runs-root.")
    testing = bool(config.get("TESTING"))

    app = Flask("runarchive.web")  # the package: templates/ and static/ live there
    app.config.from_mapping(
        SECRET_KEY=config.get("SECRET_KEY") or secret_key_for(web, jobs_settings.data_dir, testing),
        SESSION_COOKIE_NAME="runarchive_session",
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=web.secure_cookies,
        MAX_CONTENT_LENGTH=64 * 1024,
        WS_PING_INTERVAL=web.ws_ping_interval,
        WS_MAX_SOCKETS_PER_USER=web.ws_max_sockets_per_user,
        WS_BACKLOG_BYTES=web.ws_backlog_bytes,
        POLL_INTERVAL_MS=1000,
        LOGIN_MAX_FAILURES=web.login_max_failures,
        LOGIN_WINDOW=web.login_window,
        DATABASE_URL=web.database_url or default_database_url(jobs_settings.data_dir),
    )
    app.config.update({k: v for k, v in config.items() if k not in _ENV_NAMES})
    if web.proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=web.proxy_hops, x_proto=web.proxy_hops, x_host=web.proxy_hops
        )

    db.init_app(app, app.config["DATABASE_URL"])
    dep = deployment.init_app(app, jobs_settings)
    errors.register_error_handlers(app)
    security.init_app(app)
    auth.init_app(app)
    app.register_blueprint(archive.bp)
    app.register_blueprint(rq_api.bp)
    app.register_blueprint(pages.bp)
    status.init_app(app, dep, app.config.get("WS_MAX_SOCKETS", web.max_sockets))
    # WEPPcloud's URLs over the same routes (wepp.py); on unless WEPP_COMPAT is False.
    if app.config.get("WEPP_COMPAT", True):
        wepp.init_app(app)
    return app


def shutdown(app: Flask) -> None:
    """Hang up the app's websockets and close its Redis and database connections."""
    status_relay = app.extensions.get(status.RELAY)
    if status_relay is not None:
        status_relay.stop()
    dep = app.extensions.get(deployment.EXTENSION)
    if dep is not None:
        dep.close()
    database = app.extensions.get(db.EXTENSION)
    if database is not None:
        database.close()
