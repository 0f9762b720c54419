"""A WEPPcloud-like console page in a real browser, against `runarchive serve` and a host app.

The page (``tests/web/wepp_client/``: a StatusStream-like client and a console, written from
WEPPcloud's documented behaviour) runs the same scenarios against two back-ends
(``tests/web/wepp_backends.py``), each a real server in a process of its own on the tests'
valkey: ``runarchive serve``, with the page on the service's origin carrying the session's
CSRF token; and a host Flask app that mounts runarchive with ``init_app`` under
``/archive-svc`` (the documented example, served by gunicorn), whose user logs in through the
host's login and whose own page carries the host's CSRF token and points every URL, the
websocket's too, under the mount. ``runarchive worker`` processes are started when a test
wants jobs to run — so a job can wait, queued, across a restart of the back-end.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.workers import Workers
from tests.web.conftest import CHROMIUM_ARGS
from tests.web.wepp_backends import CONFIG, STARTERS, Backend, Host

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(600)]

MODIFIED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
JOB_MS = 60_000
# Against serve the page is served by Playwright, which Chromium's Local Network Access checks
# count as a public origin: its websocket to 127.0.0.1 would be blocked. A host page really
# served beside runarchive (the host back-end) is on the same address and is not blocked.
ARGS = [*CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"]


@pytest.fixture(scope="module")
def host_browser(browser: Browser, chromium: Path) -> Iterator[Browser]:
    """A Chromium of its own, from the same Playwright as the dashboard tests' (one per process)."""
    launched = browser.browser_type.launch(executable_path=str(chromium), args=ARGS)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture(scope="module", params=sorted(STARTERS))
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[Backend]:
    found = STARTERS[request.param](tmp_path_factory.mktemp(f"wepp-{request.param}"), redis_url)
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture
def workers(backend: Backend, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers(backend.settings, logs)
    try:
        yield pool
    finally:
        pool.kill_all()


@pytest.fixture
def run(backend: Backend) -> Path:
    return backend.new_run()


@pytest.fixture
def console(host_browser: Browser, backend: Backend) -> Iterator[Callable[[Path], Page]]:
    """Open the test console of a run, logged in, on the back-end's origin."""
    context = host_browser.new_context(base_url=backend.url)
    errors: list[str] = []
    opener = backend.log_in(context)

    def open_console(run: Path) -> Page:
        fresh = context.new_page()
        fresh.set_default_timeout(15_000)
        fresh.on("pageerror", lambda exc: errors.append(str(exc)))
        opener(fresh, run)
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
    said = len(record(page)["messages"])
    page.click("#archive-btn")
    # From the console's record, not the message line: a quick job's "Archive complete" may
    # already have replaced "Archiving (job …)" there.
    page.wait_for_function(
        "n => window.__wepp.messages.slice(n).some(m => m.startsWith('Archiving (job '))", arg=said
    )
    text = next(m for m in record(page)["messages"][said:] if m.startswith("Archiving (job "))
    match = re.search(r"job ([\w-]+)\)", text)
    assert match is not None, text
    return match.group(1)


def test_the_console_archives_lists_restores_and_deletes_through_the_compat_routes(
    console: Callable[[Path], Page], run: Path, backend: Backend, workers: Workers
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
    socket = f"ws://{backend.url.removeprefix('http://')}{backend.prefix}"
    assert seen["sockets"] == [f"{socket}/weppcloud-microservices/status/{run.name}:archive"]
    if isinstance(backend, Host):
        # Every URL of the console carries the config segment, and the host's policy is told
        # it; the websocket (no config in its path) asks the policy with config=None.
        calls = backend.policy_calls(run.name)
        assert calls.count(CONFIG) >= 6, calls  # list, archive, list, restore, list, delete …
        assert set(calls) == {CONFIG, None}, calls


def test_a_locked_run_is_refused_with_weppclouds_text_on_the_console(
    console: Callable[[Path], Page], run: Path, backend: Backend
) -> None:
    page = console(run)
    with backend.nodb_lock(run.name, "wepp.nodb"), backend.nodb_lock(run.name, "climate.nodb"):
        page.fill("#comment", "locked")
        page.click("#archive-btn")
        expect(page.locator("#message")).to_have_text(
            "Cannot archive while files are locked: climate.nodb, wepp.nodb"
        )
    (post,) = record(page)["posts"]
    assert post["status"] == 409 and post["answer"]["Success"] is False
    assert not (run / "archives").exists() or list((run / "archives").iterdir()) == []


def test_a_restart_mid_job_makes_the_page_reconnect_and_finish_the_job(
    console: Callable[[Path], Page], run: Path, backend: Backend, workers: Workers
) -> None:
    page = console(run)
    job_id = archive(page, "across a restart")  # no worker yet: the job waits, queued
    expect(page.locator("#log")).to_contain_text(f"rq:{job_id} ENQUEUED")
    backend.restart()
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
