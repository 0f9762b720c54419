"""Fixtures for the web layer: a real app on a real Redis, real accounts, real runs, real workers.

One embedded valkey per session (the jobs tests' ``redis_url`` fixture, or ``REDIS_URL``).
Each test module gets its own app (its own key prefix, queue, SQLite database and runs root)
with three users — ``alice`` owns the runs made by ``new_run``, ``bob`` owns nothing, ``root``
is an admin — because password hashing is deliberately slow and a module shares them. Every
test still gets fresh run ids, so no test sees another's runs, slots or status lines.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from runarchive.jobs import JobsContext, Settings
from runarchive.web import create_app, shutdown
from runarchive.web.accounts import create_token, create_user
from runarchive.web.db import db
from runarchive.web.settings import WebSettings
from tests.support.web import PASSWORD, LiveServer, WebEnv
from tests.support.workers import Workers

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[WebEnv]:
    root = tmp_path_factory.mktemp("web")
    runs = root / "runs"
    runs.mkdir()
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=redis_url,
        runs_root=runs,
        queue=f"web-{tag}",
        key_prefix=f"ra-web-{tag}",
        heartbeat_ttl=2.0,
        slot_grace=2.0,
        data_dir=root / "data",
    )
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
        for name, role, admin in (("alice", "owner", False), ("bob", "other", False),
                                  ("root", "admin", True)):  # fmt: skip
            user = create_user(session, name, PASSWORD, admin=admin)
            env.tokens[role] = create_token(session, user)
    for name, role in (("alice", "owner"), ("bob", "other"), ("root", "admin")):
        env.browsers[role] = env.fresh_browser(name)
    try:
        yield env
    finally:
        shutdown(app)
        ctx.close()


@pytest.fixture
def workers(web: WebEnv, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers(web.settings, logs)
    try:
        yield pool
    finally:
        pool.kill_all()


@pytest.fixture(scope="module")
def live(web: WebEnv) -> Iterator[LiveServer]:
    server = LiveServer(web.app)
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------- the browser
# One Playwright per process (its sync API cannot run twice in one thread): the browser tests'
# modules share these.


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, which `make sysdeps` installs (`make test` runs it first)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make sysdeps` (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
