"""A host Flask application with its own users and login, and runarchive mounted inside it.

This is the example of ``docs/integration.md`` §1, and a test runs it as it is
(``tests/web/test_mounting.py``): the host logs its users in with its own Flask-Login manager
and session; runarchive's dashboard, JSON API, downloads and status websocket answer under
``/archive-svc``; the host's ``access_policy`` says who may do what to a run.

Serve it from a WSGI entry point of your own, with ``runarchive worker`` processes on the same
Redis (``RUNARCHIVE_RUNS_ROOT``, ``REDIS_URL`` and ``HOST_SECRET_KEY`` in the environment)::

    # wsgi.py
    from werkzeug.security import generate_password_hash
    from host_app import HostUser, create_app

    app = create_app({"ana": HostUser("ana", generate_password_hash("…"), {"run-1"})})

under gunicorn with threads (an open status websocket holds one; ``RUNARCHIVE_WEB_THREADS``
tells runarchive how many there are, so that websockets take at most half of them) and
runarchive's hooks as the config (``runarchive/web/gunicorn_hooks.py``: without them a stop
waits the whole graceful timeout for the open websockets, then cuts them)::

    RUNARCHIVE_WEB_THREADS=8 gunicorn -c python:runarchive.web.gunicorn_hooks \
        --worker-class gthread --threads 8 --bind 127.0.0.1:8000 wsgi:app

then log in at ``/login`` and open ``/archive-svc/runs/run-1/archive``. The browser tests serve
it this way, with a WEPPcloud-like console page added (``tests/web/wepp_host.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, abort, make_response, redirect, render_template_string, request, url_for
from flask_login import (  # type: ignore[import-untyped]
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response

import runarchive.web
from runarchive.jobs import Settings


@dataclass(eq=False)
class HostUser(UserMixin):  # type: ignore[misc]
    """One of the host's users: a name, a password hash and the runs the user owns."""

    id: str
    password_hash: str
    runs: set[str] = field(default_factory=set)


LOGIN_PAGE = """<!doctype html><title>Host login</title><h1>Host login</h1>
<form method="post"><input name="username"><input name="password" type="password">
<input type="hidden" name="next" value="{{ next }}"><button>Log in</button></form>"""
HOME_PAGE = """<!doctype html><title>Host</title><h1>Your runs at the host</h1><ul>
{% for runid in runs %}<li><a href="{{ url_for('archive.rq_archive_dashboard', runid=runid) }}">
{{ runid }}</a></li>{% endfor %}</ul>"""
FORBIDDEN_PAGE = """<!doctype html><title>Not yours</title>
<h1>The host says: run {{ runid }} is not yours</h1>"""


def access_policy(runid: str) -> str | None:
    """Decide for runarchive, from the host's own logged-in user, what it may do to ``runid``.

    ``None`` (nobody logged in) makes runarchive send the browser to this app's login view,
    as ``@login_required`` would; a logged-in user who may not see the run gets the host's
    own refusal page (``abort`` with a response is answered as it is).
    """
    if not current_user.is_authenticated:
        return None
    if runid in current_user.runs:
        return "write"
    abort(make_response(render_template_string(FORBIDDEN_PAGE, runid=runid), 403))


def create_app(
    users: Mapping[str, HostUser],
    settings: Settings | None = None,
    *,
    policy: Callable[..., str | None] = access_policy,
    **config: Any,
) -> Flask:
    """Build the host app; ``settings`` default to the environment (``Settings.from_env``).

    ``policy`` is the host's access policy (default ``access_policy`` above); a WEPPcloud host
    gives one taking ``config=`` to be told the config segment of its URLs.
    """
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("HOST_SECRET_KEY")  # sessions need a key
    app.config.update(config)
    login_manager = LoginManager(app)
    login_manager.login_view = "login"
    login_manager.user_loader(users.get)

    @app.get("/")
    @login_required  # type: ignore[untyped-decorator]
    def home() -> str:
        return render_template_string(HOME_PAGE, runs=sorted(current_user.runs))

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response | str:
        target = request.values.get("next", "")
        if request.method == "POST":
            found = users.get(request.form.get("username", ""))
            if found is not None and check_password_hash(
                found.password_hash, request.form.get("password", "")
            ):
                login_user(found)
                safe = target.startswith("/") and not target.startswith("//")
                return redirect(target if safe else url_for("home"))
        return render_template_string(LOGIN_PAGE, next=target)

    @app.post("/logout")
    def logout() -> Response:
        logout_user()
        return redirect(url_for("login"))

    runarchive.web.init_app(
        app,
        url_prefix="/archive-svc",
        access_policy=policy,
        settings=settings,  # None: RUNARCHIVE_RUNS_ROOT, REDIS_URL … from the environment
        home_endpoint="home",  # the "Runs" links of runarchive's pages go to the host's list
    )
    return app
