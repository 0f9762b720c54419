"""Helpers of the web tests: logged-in browsers, runs made per test, a live server."""

from __future__ import annotations

import http.client
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from runarchive.core import create_archive
from runarchive.jobs import JobsContext, Settings
from runarchive.web import create_app, shutdown
from runarchive.web.accounts import create_token, create_user, grant_run, require_user
from runarchive.web.db import db
from runarchive.web.settings import WebSettings
from tests.support.runs import make_small_run

PASSWORD = "correct horse battery"
ROLES = ("anonymous", "other", "owner", "admin")
WS_HEADERS = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_of(client: FlaskClient, path: str = "/login") -> str:
    """Return the CSRF token the page at ``path`` carries for this client's session."""
    page = client.get(path).get_data(as_text=True)
    match = META_CSRF.search(page)
    assert match is not None, page[:500]
    return match.group(1)


def login(client: FlaskClient, name: str, password: str = PASSWORD) -> str:
    """Log ``client`` in through the form; return the session's CSRF token (new at login)."""
    token = csrf_of(client)
    response = client.post(
        "/login", data={"username": name, "password": password, "csrf_token": token}
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return csrf_of(client, "/")


@dataclass
class Browser:
    """A test client with a session, sending the CSRF header on POSTs like the dashboard JS."""

    client: FlaskClient
    csrf: str | None = None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Any:
        return self.client.head(path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if self.csrf is not None:
            headers.setdefault("X-CSRFToken", self.csrf)
        return self.client.post(path, json=json, headers=headers, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if self.csrf is not None:
            headers.setdefault("X-CSRFToken", self.csrf)
        return self.client.put(path, json=json, headers=headers, **kwargs)


@dataclass
class Run:
    """A run made for one test."""

    runid: str
    path: Path
    archive: str | None


@dataclass
class WebEnv:
    """One module's deployment: app, jobs context, users, tokens, and helpers."""

    app: Flask
    settings: Settings
    ctx: JobsContext
    root: Path
    tokens: dict[str, str] = field(default_factory=dict)
    browsers: dict[str, Browser] = field(default_factory=dict)

    @property
    def runs_root(self) -> Path:
        assert self.settings.runs_root is not None
        return self.settings.runs_root

    def as_role(self, role: str) -> Browser:
        """Return the module's logged-in browser for ``role`` (anonymous: a fresh client)."""
        if role == "anonymous":
            return Browser(self.app.test_client())
        return self.browsers[role]

    def fresh_browser(self, name: str | None) -> Browser:
        client = self.app.test_client()
        if name is None:
            return Browser(client)
        return Browser(client, login(client, name))

    def token_client(self, role: str) -> Browser:
        """A client that authenticates with ``role``'s API token and no session."""
        client = self.app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {self.tokens[role]}"
        return Browser(client)

    def new_run(
        self,
        *,
        public: bool = False,
        archive: bool = True,
        owner: str = "alice",
        prefix: str = "run-",
    ) -> Run:
        runid = f"{prefix}{uuid.uuid4().hex[:10]}"
        path = make_small_run(self.runs_root, runid)
        if public:
            (path / "PUBLIC").write_text("")
        name = create_archive(path, "first").name if archive else None
        with self.app.app_context():
            session = db().session
            grant_run(session, runid, require_user(session, owner))
        return Run(runid, path, name)


class LiveServer:
    """The module's app on a real threaded werkzeug server (websockets need a real socket)."""

    def __init__(self, app: Flask, tls: tuple[str, str] | None = None) -> None:
        self.server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, ssl_context=tls
        )
        self.port = self.server.server_port
        self.scheme = "wss" if tls else "ws"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ws_url(self, runid: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/status/{runid}:archive"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def upgrade_status(live: LiveServer, runid: str, headers: dict[str, str]) -> tuple[int, Any]:
    """Send a websocket upgrade and return the HTTP answer (refusals never upgrade)."""
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    conn.request("GET", f"/status/{runid}:archive", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **headers})  # fmt: skip
    response = conn.getresponse()
    body = response.read()
    conn.close()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, body


def make_web_env(root: Path, redis_url: str, runs: Path) -> WebEnv:
    """A deployment of its own (app, jobs context, ``alice`` with an owner token) on ``runs``."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=redis_url,
        runs_root=runs,
        queue=f"hard-{tag}",
        key_prefix=f"ra-hard-{tag}",
        heartbeat_ttl=2.0,
        slot_grace=2.0,
        data_dir=root / "data",
    )
    websettings = WebSettings(database_url=f"sqlite:///{root / 'accounts.sqlite3'}")
    app = create_app({"TESTING": True, "JOBS_SETTINGS": settings, "WEB_SETTINGS": websettings})
    env = WebEnv(app, settings, JobsContext.from_settings(settings), root)
    with app.app_context():
        session = db().session
        env.tokens["owner"] = create_token(session, create_user(session, "alice", PASSWORD))
    return env


def close_web_env(env: WebEnv) -> None:
    shutdown(env.app)
    env.ctx.close()


@contextmanager
def started_web(root: Path, redis_url: str, name: str = "web", **jobs: Any) -> Iterator[WebEnv]:
    """The app of a web test module: its own runs root, queue, key prefix and SQLite accounts
    under ``root``, the users alice (owner), bob (other) and root (admin) with their tokens and
    logged-in browsers; ``jobs``: jobs settings a module needs besides (a quota, say)."""
    runs = root / "runs"
    runs.mkdir()
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=redis_url, runs_root=runs, queue=f"{name}-{tag}", key_prefix=f"ra-{name}-{tag}",
        heartbeat_ttl=2.0, slot_grace=2.0, data_dir=root / "data", **jobs,
    )  # fmt: skip
    websettings = WebSettings(
        database_url=f"sqlite:///{root / 'accounts.sqlite3'}",
        ws_ping_interval=0.3,
        login_max_failures=3,
        login_window=60,
    )
    app = create_app({"TESTING": True, "JOBS_SETTINGS": settings, "WEB_SETTINGS": websettings})
    ctx = JobsContext.from_settings(settings)
    env = WebEnv(app, settings, ctx, root)
    with app.app_context():
        session = db().session
        for user_name, role, admin in (("alice", "owner", False), ("bob", "other", False),
                                       ("root", "admin", True)):  # fmt: skip
            user = create_user(session, user_name, PASSWORD, admin=admin)
            env.tokens[role] = create_token(session, user)
    for user_name, role in (("alice", "owner"), ("bob", "other"), ("root", "admin")):
        env.browsers[role] = env.fresh_browser(user_name)
    try:
        yield env
    finally:
        shutdown(app)
        ctx.close()
