"""The dashboard's job panel in a real browser, when its two sources of news disagree.

The page learns about a job from the websocket (the worker's status lines, at once) and from
polling ``jobstatus`` (every ``POLL_INTERVAL_MS``). A poll answered just before the worker took
the job arrives after the worker's ``STARTED`` line. Here no worker runs, so every poll answers
``queued`` — the real server's answer for a job nobody has taken — while the test publishes the
``STARTED`` line a worker publishes, through the jobs layer's real status stream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Request, Response, expect

from runarchive.jobs.lines import job_line
from runarchive.jobs.vocabulary import Event
from tests.support.web import PASSWORD, LiveServer, WebEnv

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def page(browser: Browser, live: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=f"http://127.0.0.1:{live.port}")
    try:
        opened = context.new_page()
        opened.set_default_timeout(15_000)
        yield opened
    finally:
        context.close()


def test_a_poll_answered_before_the_worker_started_never_moves_the_status_back_to_queued(
    web: WebEnv, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(web.app.config, "POLL_INTERVAL_MS", 200)
    run = web.new_run()
    page.goto(f"/runs/{run.runid}/archive")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#ra-connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#ra-archive-btn")).to_be_enabled()
    polls: list[Response] = []
    asked: list[Request] = []
    page.on("response", lambda r: polls.append(r) if "/rq/api/jobstatus/" in r.url else None)
    page.on("request", lambda r: asked.append(r) if "/rq/api/jobstatus/" in r.url else None)
    with page.expect_response(lambda r: r.url.endswith("/rq/api/archive")) as started:
        page.click("#ra-archive-btn")
    job_id = started.value.json()["job_id"]
    status = page.locator("#ra-job-status")
    expect(status).to_have_text("queued")

    web.ctx.stream(run.runid).publish(job_line(job_id, Event.STARTED, f"archive_rq({run.runid})"))
    expect(status).to_have_text("started")
    # The page asks again only once it has handled the previous answer: two more requests mean
    # at least one "queued" answer arrived, and was handled, after the STARTED line.
    after = len(asked)
    while len(asked) < after + 2:
        page.wait_for_event("request", lambda r: "/rq/api/jobstatus/" in r.url)
    assert polls and all(r.json()["status"] == "queued" for r in polls)
    assert status.inner_text() == "started"
    assert status.get_attribute("data-status") == "started"
