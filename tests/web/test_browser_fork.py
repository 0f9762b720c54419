"""Fork from the dashboard, in a real browser: a row's Fork… dialog, the job, the new run's link.

The module's app runs on a real werkzeug server (conftest's ``live``) with a real worker; the
new run is checked on disk against the archived run, and its grant in the accounts.

Screenshots go to a temporary folder; with ``RUNARCHIVE_UPDATE_SCREENSHOTS=1`` they replace
``docs/screenshots/dashboard-fork.png`` (the dialog) and ``dashboard-fork-done.png``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from runarchive.core import create_archive
from runarchive.synthetic_run import generate_run
from runarchive.web.accounts import grant_run, owns_run, require_user
from runarchive.web.db import db
from tests.support.browser import DESKTOP, PHONE, logged_in_pages
from tests.support.tree import snapshot
from tests.support.web import PASSWORD, LiveServer, WebEnv
from tests.support.workers import Workers

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"


@pytest.fixture
def open_page(browser: Browser, live: LiveServer) -> Iterator[Callable[..., Page]]:
    """Open pages logged in as alice; fail the test if a page raised or broke its CSP."""
    with logged_in_pages(browser, live.port, PASSWORD, timeout_ms=20_000) as open_as:
        yield lambda viewport=DESKTOP: open_as("alice", viewport)


@pytest.fixture
def worker(workers: Workers) -> Workers:
    workers.start()  # one worker for the test: the forks run as they would in service
    return workers


def archived_run(web: WebEnv) -> tuple[Path, str, dict[str, tuple[object, ...]]]:
    runid = f"fork-{uuid.uuid4().hex[:10]}"
    path = web.runs_root / runid
    generate_run(path, seed=5, target_bytes=200_000, files=30)
    name = create_archive(path, "before the fork").name
    archived = snapshot(path)
    (path / "edited-after.txt").write_text("not in the archive\n")
    with web.app.app_context():
        session = db().session
        grant_run(session, runid, require_user(session, "alice"))
    return path, name, archived


def _granted_to_alice(web: WebEnv, runid: str) -> bool:
    with web.app.app_context():
        session = db().session
        return owns_run(session, require_user(session, "alice"), runid)


def test_fork_from_the_keyboard_makes_the_run_and_links_to_its_dashboard(
    web: WebEnv, worker: Workers, open_page: Callable[..., Page], tmp_path: Path
) -> None:
    shots = SCREENSHOTS if os.environ.get("RUNARCHIVE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    run, name, archived = archived_run(web)
    new_id = f"{run.name}-copy"
    page = open_page()
    page.goto(f"/runs/{run.name}/archive")
    button = page.locator(f'tr[data-name="{name}"] button[data-action="fork"]')
    expect(button).to_be_enabled()

    button.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#ra-fork")
    expect(dialog).to_be_visible()
    expect(page.locator("#ra-fork-name")).to_have_text(name)
    expect(page.locator("#ra-fork-id")).to_be_focused()
    page.keyboard.type(new_id)
    page.screenshot(path=str(shots / "dashboard-fork.png"))
    page.keyboard.press("Enter")

    expect(dialog).to_be_hidden()
    alert = page.locator('.alert[data-code="fork_complete"]')
    expect(alert).to_contain_text(f"Fork complete: {new_id} holds {name}.", timeout=60_000)
    link = alert.locator(f'a[data-new-run="{new_id}"]')
    expect(link).to_have_text(f"Open {new_id}")
    row_link = page.locator(f'.row-note a[data-new-run="{new_id}"]')
    expect(row_link).to_be_visible()
    # The list redraws its rows when it changes (here: another archive made meanwhile), and
    # the row's note with them: the link must survive that, not only the first drawing.
    later = create_archive(run, "after the fork").name
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator(f'tr[data-name="{later}"]')).to_be_visible()
    expect(row_link).to_be_visible()
    expect(row_link).to_have_attribute("href", f"/runs/{new_id}/archive")
    activity = page.locator("#ra-activity")
    expect(activity).to_contain_text(f"Fork of {name} into {new_id} started")
    expect(activity).to_contain_text(f"Fork complete: {new_id} from {name}")
    page.screenshot(path=str(shots / "dashboard-fork-done.png"))

    new = web.runs_root / new_id
    assert snapshot(new) == archived and not (new / "archives").exists()
    assert _granted_to_alice(web, new_id)

    link.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.locator("h1 .runid")).to_have_text(new_id)
    expect(page.locator("#ra-empty")).to_be_visible()  # the new run has no archives


def test_escape_closes_the_dialog_forks_nothing_and_returns_focus_to_the_button(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    run, name, _ = archived_run(web)
    page = open_page()
    page.goto(f"/runs/{run.name}/archive")
    button = page.locator(f'tr[data-name="{name}"] button[data-action="fork"]')
    button.click()
    expect(page.locator("#ra-fork")).to_be_visible()
    page.keyboard.type("never-made")
    page.keyboard.press("Escape")
    expect(page.locator("#ra-fork")).to_be_hidden()
    expect(button).to_be_focused()
    button.click()
    expect(page.locator("#ra-fork-id")).to_have_value("")  # a fresh dialog each time
    page.locator("#ra-fork-cancel").click()
    expect(button).to_be_focused()
    assert not (web.runs_root / "never-made").exists() and not _granted_to_alice(web, "never-made")


def test_a_taken_or_bad_id_is_said_in_the_dialog_which_stays_open(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    run, name, _ = archived_run(web)
    taken, _, _ = archived_run(web)
    page = open_page()
    page.goto(f"/runs/{run.name}/archive")
    page.locator(f'tr[data-name="{name}"] button[data-action="fork"]').click()
    page.fill("#ra-fork-id", taken.name)
    page.click("#ra-fork-submit")
    alerts = page.locator("#ra-fork-alerts")
    expect(alerts).to_contain_text(f"Run {taken.name} already exists")
    expect(page.locator("#ra-fork")).to_be_visible()
    expect(page.locator("#ra-fork-id")).to_be_focused()
    page.fill("#ra-fork-id", "../escape")
    page.click("#ra-fork-submit")
    expect(alerts).to_contain_text("letters, digits and _ . ; - only")
    expect(page.locator("#ra-fork")).to_be_visible()
    assert not (web.runs_root.parent / "escape").exists()


def test_on_a_phone_the_dialog_fits_and_an_empty_id_forks_into_a_fresh_one(
    web: WebEnv, worker: Workers, open_page: Callable[..., Page]
) -> None:
    run, name, archived = archived_run(web)
    page = open_page(PHONE)
    page.goto(f"/runs/{run.name}/archive")
    page.locator(f'tr[data-name="{name}"] button[data-action="fork"]').click()
    dialog = page.locator("#ra-fork")
    expect(dialog).to_be_visible()
    box = dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    submit = page.locator("#ra-fork-submit").bounding_box()
    assert submit is not None and submit["height"] >= 44  # a finger's width
    page.click("#ra-fork-submit")
    link = page.locator('.alert[data-code="fork_complete"] a[data-new-run]')
    expect(link).to_be_visible(timeout=60_000)
    new_id = link.get_attribute("data-new-run")
    assert new_id is not None and len(new_id) == 10
    assert snapshot(web.runs_root / new_id) == archived and _granted_to_alice(web, new_id)
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= PHONE["width"]
