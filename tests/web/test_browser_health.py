"""The scrub's verdict in a real browser: a damaged archive's row gets a badge with a word and
the damage in text (not only colour), live when the damage line arrives, and its Restore is off.

The app is the module's real app on a live server (real Redis, real relay, real websockets);
the damage is a byte flipped in a real archive and found by the real ``runarchive scrub`` with
the module's Redis, which records it and publishes the line the page listens for. With
``RUNARCHIVE_UPDATE_SCREENSHOTS=1`` the screenshot replaces
``docs/screenshots/dashboard-damaged.png``.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from runarchive.core import create_archive
from tests.support.processes import run_cli
from tests.support.runs import flip_entry_byte
from tests.support.web import PASSWORD, LiveServer, WebEnv

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def page(browser: Browser, live: LiveServer) -> Iterator[Page]:
    context = browser.new_context(
        base_url=f"http://127.0.0.1:{live.port}", viewport={"width": 1280, "height": 800}
    )
    errors: list[str] = []
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.goto("/login")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    yield page
    context.close()
    assert errors == []


def test_a_damaged_archive_is_flagged_live_with_its_damage_and_cannot_be_restored(
    page: Page, web: WebEnv, tmp_path: Path
) -> None:
    run = web.new_run()
    assert run.archive is not None
    time.sleep(1.05)  # names carry the second
    good = create_archive(run.path, "fine").name
    bad = run.path / "archives" / run.archive
    entry = "output/H2.pass.dat"  # text: the archive deflates it
    flip_entry_byte(bad, entry, zipfile.ZIP_DEFLATED)

    page.goto(f"/runs/{run.runid}/archive")
    dashboard = page.locator("#ra-dashboard")
    expect(dashboard).to_have_attribute("data-busy", "false")
    expect(dashboard).to_have_attribute("data-ws", "live")
    bad_row = page.locator(f'#ra-archive-rows tr[data-name="{run.archive}"]')
    good_row = page.locator(f'#ra-archive-rows tr[data-name="{good}"]')
    expect(bad_row.locator("[data-health]")).to_have_count(0)  # unchecked: nothing to say yet
    expect(bad_row.locator("[data-action=restore]")).to_be_enabled()

    prefix = web.ctx.settings.key_prefix
    done = run_cli("scrub", run.path, "--redis-url", str(web.ctx.settings.redis_url),
                   RUNARCHIVE_KEY_PREFIX=prefix)  # fmt: skip
    assert done.returncode == 5, done.stdout + done.stderr

    # The line "Archive damaged: …" reaches the page, which lists again: no reload.
    badge = bad_row.locator("[data-health=damaged]")
    expect(badge).to_have_text("Damaged")
    expect(bad_row.locator(".row-damage")).to_contain_text(f"'{entry}'")
    expect(bad_row.locator(".row-damage")).to_contain_text("Restore is refused")
    restore = bad_row.locator("[data-action=restore]")
    expect(restore).to_be_disabled()
    expect(restore).to_have_attribute("aria-label", f"Restore refused: {run.archive} is damaged")
    expect(bad_row.locator("[data-action=delete]")).to_be_enabled()  # it may still go
    expect(good_row.locator("[data-health=ok]")).to_have_text("verified")
    expect(good_row.locator("[data-action=restore]")).to_be_enabled()
    expect(page.locator("#ra-activity")).to_contain_text(f"Archive damaged: {run.archive}")

    target = SCREENSHOTS if os.environ.get("RUNARCHIVE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    page.screenshot(path=str(target / "dashboard-damaged.png"), full_page=True)
