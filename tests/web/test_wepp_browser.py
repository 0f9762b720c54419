"""A WEPPcloud-like console page in a real browser against `runarchive serve`.

The page (``tests/web/wepp_client/``: a StatusStream-like client and a console, written from
WEPPcloud's documented behaviour) is served by Playwright on the service's own origin, as a
host page mounted beside runarchive would be, with the session's CSRF token in its
``<meta name="csrf-token">``. Everything else is real: ``runarchive serve`` (gunicorn, its
websocket relay) on the tests' valkey, and ``runarchive worker`` processes the test starts when
it wants jobs to run — so a job can wait, queued, across a restart of the service.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from runarchive.jobs import Settings
from runarchive.jobs.locks import acquire_lock, release_lock
from runarchive.synthetic_run import generate_run
from tests.support.workers import Workers
from tests.web.conftest import CHROMIUM_ARGS
from tests.web.test_browser import PASSWORD, Service

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(600)]

CLIENT = Path(__file__).with_name("wepp_client")
CONFIG = "disturbed9002"
MODIFIED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
JOB_MS = 60_000
# The page is served by Playwright, which Chromium's Local Network Access checks count as a
# public origin: its websocket to 127.0.0.1 would be blocked. A host page really served beside
# runarchive is on the same address and is not blocked.
ARGS = [*CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"]


@pytest.fixture(scope="module")
def host_browser(browser: Browser, chromium: Path) -> Iterator[Browser]:
    """A Chromium of its own, from the same Playwright as the dashboard tests' (one per process)."""
    launched = browser.browser_type.launch(executable_path=str(chromium), args=ARGS)
    try:
        yield launched
    finally:
        launched.close()


@dataclass
class Wepp:
    """``runarchive serve`` on an external Redis (no worker of its own) and its settings."""

    service: Service
    settings: Settings
    redis_url: str

    def start(self) -> None:
        self.service.start_or_fail()

    def restart(self) -> None:
        self.service.stop()
        self.start()

    @contextlib.contextmanager
    def nodb_lock(self, runid: str, relpath: str) -> Iterator[None]:
        client = redis.Redis.from_url(self.redis_url)
        try:
            token = acquire_lock(client, runid, relpath, ttl=300, owner="host-app:1")
            assert token is not None
            yield
            release_lock(client, runid, relpath, token)
        finally:
            client.close()


@pytest.fixture(scope="module")
def wepp(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Wepp]:
    base = tmp_path_factory.mktemp("wepp")
    tag = uuid.uuid4().hex[:8]
    service = Service(base)
    settings = Settings(
        redis_url=redis_url,
        runs_root=service.runs_root,
        queue=f"wepp-{tag}",
        key_prefix=f"ra-wepp-{tag}",
        data_dir=service.data_dir,
    )
    service.env.update(
        {
            "REDIS_URL": redis_url,
            "RUNARCHIVE_QUEUE": settings.queue,
            "RUNARCHIVE_KEY_PREFIX": settings.key_prefix,
            "SECRET_KEY": uuid.uuid4().hex * 2,
            "RUNARCHIVE_WS_PING_INTERVAL": "1",
        }
    )
    service.stop_timeout = 30
    found = Wepp(service, settings, redis_url)
    found.start()
    try:
        service.run_cli("users", "add", "admin", "--admin", "--password-stdin", stdin=PASSWORD)
        yield found
    finally:
        service.stop()


@pytest.fixture
def workers(wepp: Wepp, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers(wepp.settings, logs)
    try:
        yield pool
    finally:
        pool.kill_all()


@pytest.fixture
def run(wepp: Wepp) -> Path:
    path = wepp.service.runs_root / f"wepp-{uuid.uuid4().hex[:10]}"
    generate_run(path, seed=3, target_bytes=256 * 1024, files=40)
    return path


@pytest.fixture
def console(host_browser: Browser, wepp: Wepp) -> Iterator[Callable[[Path], Page]]:
    """Open the test console of a run, logged in as the admin, on the service's origin."""
    context = host_browser.new_context(base_url=wepp.service.url)
    errors: list[str] = []
    page = context.new_page()
    page.goto("/login")
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    page.goto("/")
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert csrf
    script = (CLIENT / "console.js").read_text()

    def open_console(run: Path) -> Page:
        html = (CLIENT / "console.html").read_text()
        for key, value in {"csrf": csrf, "script": "/__wepp/console.js", "runid": run.name,
                           "config": CONFIG}.items():  # fmt: skip
            html = html.replace("{{" + key + "}}", value)
        fresh = context.new_page()
        fresh.set_default_timeout(15_000)
        fresh.on("pageerror", lambda exc: errors.append(str(exc)))

        def serve(route: Any) -> None:
            if route.request.url.endswith("/console.js"):
                route.fulfill(body=script, content_type="text/javascript")
            else:
                route.fulfill(body=html, content_type="text/html")

        fresh.route("**/__wepp/**", serve)
        fresh.goto(f"/__wepp/console/{run.name}")
        wait_for(fresh, "window.__wepp.opens >= 1 && window.__wepp.lists >= 1")
        return fresh

    yield open_console
    context.close()
    assert errors == [], "the test console raised errors"


def wait_for(page: Page, condition: str, timeout: float = JOB_MS) -> None:
    try:
        page.wait_for_function(condition, timeout=timeout)
    except Exception as exc:
        seen = page.evaluate("window.__wepp || null")
        raise AssertionError(f"{condition} never held; the page recorded {seen}") from exc


def record(page: Page) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate("window.__wepp")
    return found


def archive(page: Page, comment: str) -> str:
    """Click Archive with ``comment``; return the job id the console announced."""
    page.fill("#comment", comment)
    page.click("#archive-btn")
    expect(page.locator("#message")).to_contain_text("Archiving (job ")
    text = page.locator("#message").inner_text()
    match = re.search(r"job ([\w-]+)\)", text)
    assert match is not None, text
    return match.group(1)


def test_the_console_archives_lists_restores_and_deletes_through_the_compat_routes(
    console: Callable[[Path], Page], run: Path, workers: Workers
) -> None:
    workers.start()
    page = console(run)
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(0)
    job_id = archive(page, "from the wepp console")
    expect(page.locator("#message")).to_have_text("Archive complete", timeout=JOB_MS)
    expect(rows).to_have_count(1)
    cells = rows.first.locator("td")
    name = cells.nth(0).inner_text()
    assert (run / "archives" / name).is_file()
    assert cells.nth(1).inner_text() == "from the wepp console"
    assert int(cells.nth(2).inner_text()) == (run / "archives" / name).stat().st_size
    assert MODIFIED.match(cells.nth(3).inner_text())

    readme = run / "README.md"
    original = readme.read_bytes()
    readme.write_text("changed after the archive\n")
    rows.first.get_by_role("button", name="Restore").click()
    expect(page.locator("#message")).to_have_text("Restore complete", timeout=JOB_MS)
    assert readme.read_bytes() == original

    rows.first.get_by_role("button", name="Delete").click()
    expect(page.locator("#message")).to_have_text(f"Deleted {name}")
    expect(rows).to_have_count(0)
    assert not (run / "archives" / name).exists()

    seen = record(page)
    assert [t["event"] for t in seen["triggers"]] == ["ARCHIVE_COMPLETE", "RESTORE_COMPLETE"]
    assert seen["triggers"][0]["jobId"] == job_id
    assert all(p["answer"]["Success"] is True for p in seen["posts"])  # CSRF header accepted
    assert seen["opens"] == 1 and seen["closes"] == []


def test_a_locked_run_is_refused_with_weppclouds_text_on_the_console(
    console: Callable[[Path], Page], run: Path, wepp: Wepp
) -> None:
    page = console(run)
    with wepp.nodb_lock(run.name, "wepp.nodb"):
        page.fill("#comment", "locked")
        page.click("#archive-btn")
        expect(page.locator("#message")).to_have_text(
            "Cannot archive while files are locked: wepp.nodb"
        )
    (post,) = record(page)["posts"]
    assert post["status"] == 409 and post["answer"]["Success"] is False
    assert not (run / "archives").exists() or list((run / "archives").iterdir()) == []


def test_a_restart_mid_job_makes_the_page_reconnect_and_finish_the_job(
    console: Callable[[Path], Page], run: Path, wepp: Wepp, workers: Workers
) -> None:
    page = console(run)
    job_id = archive(page, "across a restart")  # no worker yet: the job waits, queued
    expect(page.locator("#log")).to_contain_text(f"rq:{job_id} ENQUEUED")
    wepp.restart()
    wait_for(page, "window.__wepp.opens >= 2")
    seen = record(page)
    assert 1001 in seen["closes"]  # going away: reconnect
    assert seen["hangups"] == 0
    assert seen["reconnectDelays"][0] == 1500
    workers.burst()
    expect(page.locator("#message")).to_have_text("Archive complete", timeout=JOB_MS)
    triggers = record(page)["triggers"]
    assert triggers == [{"jobId": job_id, "controller": "archive", "event": "ARCHIVE_COMPLETE"}]
    expect(page.locator("#rows tr")).to_have_count(1)


def test_a_fresh_page_after_several_jobs_fires_no_old_trigger(
    console: Callable[[Path], Page], run: Path, workers: Workers
) -> None:
    first = console(run)
    for i in range(3):
        archive(first, f"job {i}")
        workers.burst()
        wait_for(first, f"window.__wepp.triggers.length === {i + 1}")
    first.close()

    fresh = console(run)
    wait_for(fresh, "window.__wepp.lists >= 1")
    fresh.wait_for_timeout(2500)  # two server pings: anything replayed would be here by now
    seen = record(fresh)
    assert seen["statuses"] == [] and seen["triggers"] == []
    expect(fresh.locator("#rows tr")).to_have_count(3)
    job_id = archive(fresh, "the new one")
    workers.burst()
    expect(fresh.locator("#message")).to_have_text("Archive complete", timeout=JOB_MS)
    triggers = record(fresh)["triggers"]
    assert triggers == [{"jobId": job_id, "controller": "archive", "event": "ARCHIVE_COMPLETE"}]
