"""Logging in and out, API tokens, and CSRF: who the current request is, and whether to trust it.

* Browsers log in with a form and get a Flask-Login session cookie (HttpOnly, SameSite=Lax,
  Secure behind TLS). Every state-changing request they make (POST) must carry the CSRF token
  (form field ``csrf_token`` or header ``X-CSRFToken``), else 400 ``csrf_failed``. Tokens do
  not expire with time, only with the session, so a dashboard left open still works.
* The cookie is signed, not stored, so a copy of it would stay valid until the key changes. It
  therefore carries the user's session generation from login time, and every request compares
  it with the user's row (``accounts.session_is_current``): logout, ``users passwd`` and
  ``users remove`` change the row, and every copy of an older cookie — in any browser, against
  any process — is refused from its next request (treated as anonymous, and the cookie
  cleared). Logging out therefore ends all of that user's sessions, not only this browser's.
* Login starts a new session (nothing from before it is kept) and logout clears it, so the
  CSRF token is new with each login: a token from before login, or of another user of the same
  browser, is refused.
* Scripts send ``Authorization: Bearer <token>`` (a personal API token from
  ``runarchive tokens create``). Such requests ignore any session cookie, are exempt from CSRF
  (a cross-site page cannot set that header), and get 401 when the token is unknown.
* Failed logins are throttled (``throttle.py``).
* Mounted in a host app with an access policy, the host's login and session are used instead:
  none of the above is installed but the API tokens and the CSRF check, and those only on
  runarchive's own requests — the host's Flask-Login manager, CSRF setup and forms stay as
  they are (its global CSRF check, if any, exempts our blueprints, which check their own).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
)
from flask_login import LoginManager, login_user, logout_user  # type: ignore[import-untyped]
from flask_wtf.csrf import CSRFProtect, generate_csrf  # type: ignore[import-untyped]
from werkzeug.wrappers import Response

from runarchive.core import has_control_characters

from . import accounts, urls
from .access import POLICY, TOKEN_USER, user
from .db import db
from .errors import TooManyAttempts, Unauthorized, html_page
from .models import User
from .mount import is_ours, template
from .throttle import LoginThrottle

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
THROTTLE = "runarchive.throttle"
GENERATION = "ra_gen"  # session key: the user's session generation at login


def bearer_token() -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, or None."""
    auth = request.authorization
    if auth is None or auth.type != "bearer":
        return None
    return auth.token or ""


def _load_session_user(user_id: str) -> User | None:
    """Return the session's user if the session is still current; else clear the session."""
    if bearer_token() is not None:  # a token request is judged by its token alone
        return None
    try:
        found = db().session.get(User, int(user_id))
    except ValueError:
        found = None
    if found is None or not accounts.session_is_current(found, session.get(GENERATION)):
        session.clear()  # logged out, password changed or removed: drop the stale cookie
        return None
    return found


def _load_token_user(req: Any) -> User | None:
    token = bearer_token()
    if not token:
        return None
    row = accounts.token_for(db().session, token)
    if row is None:
        return None
    g.api_token = True
    g.api_token_id = row.id  # who acted, in the audit log: token:<id>:<name>
    found: User = row.user
    return found


def _authenticate_request() -> None:
    """Refuse a bad API token; check CSRF on browser POSTs (token requests are exempt).

    CSRF abuses a logged-in browser's cookie, so the check applies to POSTs of a session and
    to the login form itself (against login CSRF); an anonymous POST elsewhere has no
    credentials to abuse and gets the route's plain 401 — unless a host access policy is
    installed, which may trust the host's own cookies, so every browser POST is checked then.
    """
    if not is_ours():
        return
    if bearer_token() is not None:
        if user() is None:
            raise Unauthorized("Invalid API token.")
        return
    if request.method in UNSAFE_METHODS and (
        user() is not None
        or request.endpoint == "auth.login_post"
        or current_app.config.get(POLICY) is not None
    ):
        csrf.protect()


def _authenticate_host_request() -> None:
    """Under the host's login: find an API token's user; check CSRF on every browser POST."""
    if not is_ours():
        return
    token = bearer_token()
    if token is not None:
        row = accounts.token_for(db().session, token) if token else None
        if row is None:
            raise Unauthorized("Invalid API token.")
        g.setdefault(TOKEN_USER, row.user)
        g.api_token = True
        g.api_token_id = row.id
        return
    if request.method in UNSAFE_METHODS:
        csrf.protect()


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a path on this site, else the runs page (no open redirects)."""
    home = urls.home()
    if not target or "\\" in target or has_control_characters(target):
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return home
    return target


def _throttle() -> LoginThrottle:
    found: LoginThrottle = current_app.extensions[THROTTLE]
    return found


@bp.get("/login")
@html_page
def login() -> Response | str:
    """Show the login form (or go on, when already logged in)."""
    target = request.args.get("next", "")
    if user() is not None:
        return redirect(safe_next(target))
    return render_template(
        template("login.html"), error=None, next=safe_next(target) if target else ""
    )


@bp.post("/login")
@html_page
def login_post() -> Response | tuple[str, int]:
    """Check the user name and password; start a session."""
    name = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    target = request.form.get("next", "")
    address = request.remote_addr or "unknown"
    try:
        _throttle().check(name, address)
    except TooManyAttempts as exc:
        page = make_response(
            render_template(template("login.html"), error=str(exc), next=target), 429
        )
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    found = accounts.authenticate(db().session, name, password)
    if found is None:
        _throttle().failed(name, address)
        return render_template(
            template("login.html"), error="Wrong user name or password.", next=target
        ), 401
    _throttle().succeeded(name)
    _new_session()
    login_user(found)
    session[GENERATION] = found.session_generation
    return redirect(safe_next(target))


def _new_session() -> None:
    """Forget everything of the session so far, its CSRF token included."""
    session.clear()
    g.pop("csrf_token", None)  # flask-wtf's per-request copy of the token


@bp.post("/logout")
@html_page
def logout() -> Response:
    """End every session of the user (all copies of their cookies) and clear this one."""
    who = user()
    if who is not None and not g.get("api_token"):
        accounts.end_sessions(db().session, who)
    logout_user()
    _new_session()
    return redirect(urls.login())


def init_app(app: Flask, *, own_login: bool = True, url_prefix: str = "") -> None:
    """Install sessions (own login only), API tokens, CSRF and login throttling on ``app``."""
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    if not own_login:
        # The host's session carries the CSRF token; flask-wtf's settings without its global
        # check (the host's own forms are the host's business).
        for key, value in (
            ("WTF_CSRF_ENABLED", True),
            ("WTF_CSRF_METHODS", set(UNSAFE_METHODS)),
            ("WTF_CSRF_FIELD_NAME", "csrf_token"),
            ("WTF_CSRF_HEADERS", ["X-CSRFToken", "X-CSRF-Token"]),
            ("WTF_CSRF_SSL_STRICT", True),
        ):
            app.config.setdefault(key, value)
        app.jinja_env.globals.setdefault("csrf_token", generate_csrf)
        app.before_request(_authenticate_host_request)
        return
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked in _authenticate_request
    login_manager.user_loader(_load_session_user)
    login_manager.request_loader(_load_token_user)
    login_manager.init_app(app)
    csrf.init_app(app)
    app.extensions[THROTTLE] = LoginThrottle(
        app.config["LOGIN_MAX_FAILURES"], app.config["LOGIN_WINDOW"]
    )
    app.before_request(_authenticate_request)
    app.register_blueprint(bp, url_prefix=url_prefix)
