"""The app factory, and ``init_app``: runarchive's blueprints registered on a Flask app.

Nothing is created at import time, so gunicorn builds one app per worker process after
forking. Blueprints, one module per area (the blueprint's name, which prefixes its endpoint
names, in brackets; kept as they were, since a host app's ``url_for`` uses them):
``archives.py`` [``archive``] (dashboard, list, download), ``audit.py`` [``audit``] (the
audit log's routes, and the recording of every action), ``jobs_api.py`` [``rq_api``] (jobs
and delete), ``retention.py`` [``retention``] (pins, the retention policy, prune),
``storage.py`` [``storage``] (the storage chart),
``websocket.py`` [``status``] (the status websocket), ``auth.py`` (login, logout,
tokens, CSRF), ``pages.py`` (runs, health, OpenAPI), and ``mount.py`` [``runarchive``]
(templates and static files).
Settings come from the environment (``settings.py`` and the jobs layer's ``Settings``); see
``docs/configuration.md`` and ``docs/api.md``.

``create_app`` builds runarchive's own app and mounts everything at ``/`` with ``init_app``'s
machinery; a host application calls ``init_app`` itself (``docs/integration.md`` §1). The
difference, recorded in the app's ``Mount``: in its own app runarchive owns the session
cookie, every error page and every response header; in a host it touches only the requests
of its blueprints, and with an access policy it uses the host's login and session.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from runarchive.core import InvalidInput
from runarchive.jobs import SETTINGS_ENV, Settings

from . import (
    archives,
    audit,
    auth,
    db,
    errors,
    headers,
    inside,
    jobs_api,
    jobs_context,
    pages,
    retention,
    storage,
    websocket,
    wepp,
)
from .access import POLICY
from .mount import EXTENSION, Mount, assets
from .settings import SETTINGS, WebSettings, default_database_url, secret_key_for

# Settings a test_config may give by their environment variable name.
_ENV_NAMES = frozenset(SETTINGS_ENV.values()) | {s.env for s in SETTINGS.values()}
_ENV_NAMES |= {"RUNARCHIVE_REDIS_URL", "RUNARCHIVE_SECRET_KEY"}

BLUEPRINTS = (
    assets,
    archives.bp,
    audit.bp,
    inside.bp,
    jobs_api.bp,
    retention.bp,
    storage.bp,
    websocket.bp,
    pages.bp,
    auth.bp,
)
# WEPPcloud's URLs over the same routes (wepp.py): answers in WEPPcloud's envelopes, so they
# keep their own error handlers; on unless the app config says WEPP_COMPAT = False.
COMPAT_BLUEPRINTS = (wepp.bp, wepp.engine_bp)

# Errors raised in our views get our answers even in a host app, whose own handlers stay in
# charge of its URLs. Blueprint handlers must be set before a blueprint is first registered.
for _bp in BLUEPRINTS:
    errors.register_error_handlers(_bp)


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
    _require_runs_root(jobs_settings)
    testing = bool(config.get("TESTING"))

    # Templates and static files come from the "runarchive" blueprint, as in a host app.
    app = Flask("runarchive.web", static_folder=None, template_folder=None)
    app.config.from_mapping(
        SECRET_KEY=config.get("SECRET_KEY") or secret_key_for(web, jobs_settings.data_dir, testing),
        SESSION_COOKIE_NAME="runarchive_session",
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=web.secure_cookies,
        MAX_CONTENT_LENGTH=64 * 1024,
        DATABASE_URL=web.database_url or default_database_url(jobs_settings.data_dir),
    )
    app.config.update({k: v for k, v in config.items() if k not in _ENV_NAMES})
    if web.proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=web.proxy_hops, x_proto=web.proxy_hops, x_host=web.proxy_hops
        )
    errors.register_error_handlers(app)  # every URL of our own app: unknown ones too
    _install(app, jobs_settings, web, Mount("", True, True, "pages.index"))
    return app


def init_app(
    app: Flask,
    *,
    url_prefix: str = "",
    access_policy: Callable[[str], str | None] | None = None,
    settings: Settings | None = None,
    web_settings: WebSettings | None = None,
    home_endpoint: str | None = None,
) -> Mount:
    """Register runarchive's dashboard, API, downloads and websocket on host app ``app``.

    Every route answers under ``url_prefix`` (``""`` or ``"/name"``). With ``access_policy``
    (``policy(runid) -> "write" | "read" | "deny" | None``, see ``access.py``) runarchive uses
    the host's login and session: our login blueprint is not registered, anonymous browsers
    get the host's Flask-Login ``unauthorized()`` (its login view, with ``next``), and the
    policy may also ``abort()`` with the host's own response. Without a policy runarchive's
    own accounts and login form serve under the prefix (the host must not use Flask-Login
    then). ``settings``/``web_settings`` default to the environment; ``home_endpoint`` is
    where our "Runs" links go (default: our runs page). The host must have a ``SECRET_KEY``.
    """
    if url_prefix and (not url_prefix.startswith("/") or url_prefix.endswith("/")):
        raise ValueError(
            f"url_prefix must be empty or '/name' without a trailing '/': {url_prefix!r}"
        )
    if not app.config.get("SECRET_KEY"):
        raise ValueError(
            "The host app needs a SECRET_KEY: runarchive signs its CSRF tokens with it."
        )
    own_login = access_policy is None
    if own_login and getattr(app, "login_manager", None) is not None:
        raise ValueError(
            "The host app uses Flask-Login: pass access_policy=… to use the host's login."
        )
    jobs_settings = settings or Settings.from_env()
    _require_runs_root(jobs_settings)
    web = web_settings or WebSettings.from_env()
    if access_policy is not None:
        app.config[POLICY] = access_policy
    mount = Mount(url_prefix, own_login, False, home_endpoint or "pages.index")
    return _install(app, jobs_settings, web, mount)


def _require_runs_root(settings: Settings) -> None:
    if settings.runs_root is None:
        raise InvalidInput("No runs root configured: set RUNARCHIVE_RUNS_ROOT or --runs-root.")


def _install(app: Flask, jobs_settings: Settings, web: WebSettings, mount: Mount) -> Mount:
    """Attach database, jobs, security, auth, blueprints and relay to ``app`` as ``mount``."""
    for key, value in (
        ("WS_PING_INTERVAL", web.ws_ping_interval),
        ("WS_MAX_SOCKETS_PER_USER", web.ws_max_sockets_per_user),
        ("WS_BACKLOG_BYTES", web.ws_backlog_bytes),
        ("POLL_INTERVAL_MS", 1000),
        ("LOGIN_MAX_FAILURES", web.login_max_failures),
        ("LOGIN_WINDOW", web.login_window),
    ):
        app.config.setdefault(key, value)
    compat = app.config.get("WEPP_COMPAT", True)
    ours = [bp for bp in BLUEPRINTS if bp is not auth.bp or mount.own_login]
    ours += list(COMPAT_BLUEPRINTS) if compat else []
    mount = replace(mount, blueprints=frozenset(bp.name for bp in ours))
    app.extensions[EXTENSION] = mount
    app.jinja_env.globals["runarchive"] = mount
    database_url = app.config["DATABASE_URL"] if mount.own_app else None
    url = database_url or web.database_url or default_database_url(jobs_settings.data_dir)
    db.init_app(app, url)
    log = audit.init_app(app, url, jobs_settings.data_dir, web.audit_wait)
    dep = jobs_context.init_app(app, jobs_settings, log)
    headers.init_app(app)
    host_csrf = app.extensions.get("csrf")
    if host_csrf is not None and host_csrf is not auth.csrf:
        for blueprint in (*BLUEPRINTS, *COMPAT_BLUEPRINTS):  # we check CSRF ourselves
            host_csrf.exempt(blueprint)
    auth.init_app(app, own_login=mount.own_login, url_prefix=mount.url_prefix)
    for blueprint in (
        assets,
        archives.bp,
        audit.bp,
        inside.bp,
        jobs_api.bp,
        retention.bp,
        storage.bp,
        pages.bp,
    ):
        app.register_blueprint(blueprint, url_prefix=mount.url_prefix)
    max_sockets = app.config.get("WS_MAX_SOCKETS", web.max_sockets)
    websocket.init_app(app, dep, max_sockets, url_prefix=mount.url_prefix)
    if compat:
        wepp.init_app(app, url_prefix=mount.url_prefix)
    return mount


def shutdown(app: Flask) -> None:
    """Hang up the app's websockets and close its Redis and database connections."""
    status_relay = app.extensions.get(websocket.RELAY)
    if status_relay is not None:
        status_relay.stop()
    dep = app.extensions.get(jobs_context.EXTENSION)
    if dep is not None:
        dep.close()
    database = app.extensions.get(db.EXTENSION)
    if database is not None:
        database.close()
    log = app.extensions.get(audit.EXTENSION)
    if log is not None:
        log.close()
