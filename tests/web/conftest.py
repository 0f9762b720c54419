"""Fixtures for the web layer: a real app on a real Redis, real accounts, real runs, real workers.

One embedded valkey per session (the jobs tests' ``redis_url`` fixture, or ``REDIS_URL``).
Each test module gets its own app (its own key prefix, queue, SQLite database and runs root)
with three users — ``alice`` owns the runs made by ``new_run``, ``bob`` owns nothing, ``root``
is an admin — because password hashing is deliberately slow and a module shares them. Every
test still gets fresh run ids, so no test sees another's runs, slots or status lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.support.web import LiveServer, WebEnv, started_web
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
    with started_web(tmp_path_factory.mktemp("web"), redis_url) as env:
        yield env


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
