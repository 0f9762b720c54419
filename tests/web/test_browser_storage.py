"""The dashboard's Storage panel and row pins in a real browser, against real workers.

The app runs in-process on a real threaded server (``live``) with real RQ workers
(``workers``) on the test Redis; Chromium comes from Debian. Runs are real folders with real
archives, renamed to one UTC day each so the retention rule has days to count. What the page
shows is checked against what is on disk (pins, policy, archives) and against the chart the
server draws. Keyboard first: tabs, the Pin toggle and the policy form are driven with keys.

Screenshots go to a temporary folder; with ``RUNARCHIVE_UPDATE_SCREENSHOTS=1`` they replace
``docs/screenshots/storage-panel.png`` and ``storage-panel-phone.png``.
"""

from __future__ import annotations

import os
import re
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, expect

from runarchive.core import Policy, create_archive, pinned_names, run_policy, set_pinned
from runarchive.synthetic_run import generate_run
from runarchive.web.accounts import grant_run, require_user
from runarchive.web.db import db
from tests.support.browser import DESKTOP, PHONE, logged_in_pages
from tests.support.processes import run_cli
from tests.support.runs import flip_entry_byte
from tests.support.web import PASSWORD, LiveServer, WebEnv
from tests.support.workers import Workers

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
SVG = "{http://www.w3.org/2000/svg}"
JOB_TIMEOUT_MS = 60_000
CHART_SRC = re.compile(r"storage\.svg\?width=\d+&v=\d+$")
# Records the ra:jobfinished events the dashboard dispatches, without changing the page.
PROBE_JS = """
window.__ra = { finished: [] };
document.addEventListener("ra:jobfinished", (event) => window.__ra.finished.push(event.detail));
"""
COMMENTS = ["baseline", "calibrated", "climate 2050", "after fire", "final"]


@pytest.fixture
def worker(workers: Workers) -> Workers:
    workers.start()
    return workers


@pytest.fixture
def open_page(browser: Browser, live: LiveServer) -> Iterator[Callable[..., Page]]:
    """Open pages logged in as ``user``; fail the test if a page raised or broke its CSP."""
    with logged_in_pages(browser, live.port, PASSWORD, init_script=PROBE_JS) as open_:
        yield open_


def dated_run(web: WebEnv, days: int = 5, *, public: bool = False) -> tuple[Path, list[str]]:
    """A run owned by alice with ``days`` archives of growing size, one a UTC day (oldest
    first), each a real archive renamed to its day's stamp."""
    runid = f"storage-{uuid.uuid4().hex[:10]}"
    path = web.runs_root / runid
    generate_run(path, seed=5, target_bytes=200_000, files=30)
    if public:
        (path / "PUBLIC").write_text("")
    names = []
    for day in range(days):
        (path / f"output-{day}.bin").write_bytes(os.urandom(40_000 * (day + 1)))
        made = create_archive(path, COMMENTS[day % len(COMMENTS)]).name
        name = f"{runid}.202611{day + 1:02d}T120000Z.zip"
        os.rename(path / "archives" / made, path / "archives" / name)
        names.append(name)
    with web.app.app_context():
        session = db().session
        grant_run(session, runid, require_user(session, "alice"))
    return path, names


class StoragePanel:
    """The dashboard of one run, its tabs, rows and Storage panel, as a user drives them."""

    def __init__(self, page: Page, run: Path) -> None:
        self.page, self.run = page, run
        self.root = page.locator("#ra-dashboard")
        self.chart = page.locator("#ra-storage-chart")
        self.dialogs: list[str] = []
        page.on("dialog", self._answer)

    def _answer(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()

    def open(self) -> StoragePanel:
        self.page.goto(f"/runs/{self.run.name}/archive")
        self.wait_idle()
        return self

    def wait_idle(self) -> None:
        expect(self.root).to_have_attribute("data-busy", "false", timeout=JOB_TIMEOUT_MS)

    def row(self, name: str) -> Locator:
        return self.page.locator(f'#ra-archive-rows tr[data-name="{name}"]')

    def pin_button(self, name: str) -> Locator:
        return self.row(name).locator('button[data-action="pin"]')

    def names(self) -> list[str]:
        rows = self.page.locator("#ra-archive-rows tr[data-name]")
        return [str(n) for n in rows.evaluate_all("rows => rows.map(r => r.dataset.name)")]

    def show_storage_by_keyboard(self) -> None:
        self.page.locator("#ra-tab-archives").focus()
        self.page.keyboard.press("ArrowRight")
        expect(self.page.locator("#ra-tab-storage")).to_have_attribute("aria-selected", "true")
        expect(self.page.locator("#ra-tab-storage")).to_be_focused()
        expect(self.page.locator("#ra-panel-storage")).to_be_visible()
        expect(self.page.locator("#ra-panel-archives")).to_be_hidden()

    def chart_loaded(self) -> None:
        expect(self.chart).to_have_attribute("src", CHART_SRC)
        self.page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=self.chart.element_handle()
        )

    def chart_archives(self) -> list[ET.Element]:
        """The archives of the chart the page shows (its own URL, fetched again)."""
        src = self.chart.get_attribute("src")
        assert src
        body = self.page.request.get(src).text()
        root = ET.fromstring(body)
        return [g for g in root.iter(f"{SVG}g") if g.get("class") == "archive"]

    def finished(self, count: int) -> dict[str, object]:
        self.page.wait_for_function(
            "n => window.__ra.finished.length >= n", arg=count, timeout=JOB_TIMEOUT_MS
        )
        return dict(self.page.evaluate("window.__ra.finished")[count - 1])


def test_the_pin_toggle_round_trips_by_keyboard_and_a_pinned_row_refuses_delete(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    run, names = dated_run(web, days=2)
    view = StoragePanel(open_page(), run).open()
    oldest = names[0]
    pin = view.pin_button(oldest)
    expect(pin).to_have_attribute("aria-pressed", "false")
    pin.focus()
    view.page.keyboard.press("Enter")
    expect(pin).to_have_attribute("aria-pressed", "true")
    expect(pin).to_be_focused()  # the list was redrawn; the keyboard stays where it was
    assert pinned_names(run) == {oldest}
    expect(view.row(oldest).locator(".badge-pin")).to_have_text("pinned")
    delete = view.row(oldest).locator('button[data-action="delete"]')
    expect(delete).to_have_attribute("aria-disabled", "true")
    expect(delete).to_have_attribute("title", "Pinned: unpin it to delete it")

    delete.focus()
    view.page.keyboard.press("Enter")
    note = view.page.locator(f'#ra-archive-rows .row-note[data-note-for="{oldest}"]')
    expect(note).to_have_text(f"{oldest} is pinned: unpin it to delete it.")
    expect(note).to_be_focused()
    assert view.dialogs == []  # refused at the row: no confirm, no request
    assert (run / "archives" / oldest).is_file()

    pin.focus()
    view.page.keyboard.press("Space")
    expect(pin).to_have_attribute("aria-pressed", "false")
    assert pinned_names(run) == set()
    expect(view.row(oldest).locator(".badge-pin")).to_have_count(0)
    expect(delete).not_to_have_attribute("aria-disabled", "true")
    # The other row was never pinned.
    expect(view.pin_button(names[1])).to_have_attribute("aria-pressed", "false")


def test_policy_save_preview_and_prune_now_remove_exactly_what_the_rule_drops(
    web: WebEnv, open_page: Callable[..., Page], worker: Workers
) -> None:
    run, names = dated_run(web, days=5)
    set_pinned(run, names[0], True)  # the oldest: always kept, not counted
    sizes = {n: (run / "archives" / n).stat().st_size for n in names}
    view = StoragePanel(open_page(), run).open()
    view.show_storage_by_keyboard()
    view.chart_loaded()
    drawn = view.chart_archives()
    assert [g.get("data-name") for g in drawn] == names  # oldest first
    assert [g.get("data-pinned") for g in drawn] == ["true", "false", "false", "false", "false"]
    summary = view.page.locator("#ra-storage-summary")
    expect(summary).to_have_text(totals(view.page, run, "1 pinned"))
    assert summary.inner_text().startswith(f"5 archives, {human(sum(sizes.values()))} in all;")
    expect(view.chart).to_have_attribute("alt", f"Storage chart: {summary.inner_text()}")

    keep_last = view.page.locator("#ra-keep_last")
    save = view.page.locator("#ra-policy-save")
    preview_button = view.page.locator("#ra-prune-preview-btn")
    expect(keep_last).to_have_value("0")
    expect(save).to_be_disabled()  # nothing changed yet
    keep_last.fill("-1")
    error = view.page.locator("#ra-policy-error")
    expect(error).to_have_text("Newest must be a whole number from 0 to 100000.")
    expect(keep_last).to_have_attribute("aria-invalid", "true")
    expect(save).to_be_disabled()
    keep_last.fill("2")
    expect(error).to_be_hidden()
    expect(save).to_be_enabled()
    expect(preview_button).to_be_disabled()  # the preview is of the saved policy
    keep_last.press("Enter")  # submits the form
    expect(view.page.locator("#ra-policy-state")).to_have_text("Saved.")
    assert run_policy(run) == Policy(keep_last=2)

    expect(preview_button).to_be_enabled()
    preview_button.focus()
    view.page.keyboard.press("Enter")
    preview = view.page.locator("#ra-prune-preview")
    expect(preview).to_be_visible()
    expect(preview).to_be_focused()
    removed, kept = [names[2], names[1]], [names[4], names[3], names[0]]  # newest first
    listed = view.page.locator("#ra-prune-remove li").evaluate_all(
        "items => items.map(i => i.dataset.name)"
    )
    assert listed == removed
    assert (
        view.page.locator("#ra-prune-keep li").evaluate_all(
            "items => items.map(i => i.dataset.name)"
        )
        == kept
    )
    freed = sizes[names[1]] + sizes[names[2]]
    expect(view.page.locator("#ra-prune-summary")).to_have_text(
        f"Pruning now removes 2 archives and frees {human(freed)}; 3 kept."
    )
    assert all((run / "archives" / n).is_file() for n in names)  # a preview touches nothing
    version = int(view.chart.get_attribute("data-version") or 0)

    view.page.locator("#ra-prune-btn").click()
    assert view.dialogs and view.dialogs[-1].startswith("Remove 2 archives of run")
    event = view.finished(1)
    assert event["ok"] is True and event["trigger"] == "PRUNE_COMPLETE", event
    view.wait_idle()
    expect(view.page.locator("#ra-job-status")).to_have_text("prune complete")
    expect(view.page.locator("#ra-policy-state")).to_have_text("Prune complete.")
    assert sorted(p.name for p in (run / "archives").glob("*.zip")) == sorted(kept)
    assert sorted(view.names()) == sorted(kept)
    expect(view.chart).not_to_have_attribute("data-version", str(version))
    view.chart_loaded()
    assert [g.get("data-name") for g in view.chart_archives()] == [names[0], names[3], names[4]]
    expect(summary).to_have_text(totals(view.page, run, "1 pinned"))
    assert summary.inner_text().startswith(f"3 archives, {human(sum(sizes[n] for n in kept))} in")


def test_a_reader_sees_the_storage_panel_but_no_control_that_changes_anything(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    run, names = dated_run(web, days=2, public=True)
    set_pinned(run, names[0], True)
    view = StoragePanel(open_page("bob"), run).open()
    expect(view.row(names[0]).locator(".badge-pin")).to_have_text("pinned")
    expect(view.page.locator('#ra-archive-rows button[data-action="pin"]')).to_have_count(0)
    expect(view.page.locator("#ra-tab-activity")).to_have_count(0)
    view.show_storage_by_keyboard()
    view.chart_loaded()
    expect(view.page.locator("#ra-keep_last")).to_have_attribute("readonly", "")
    expect(view.page.locator("#ra-policy-save")).to_have_count(0)
    expect(view.page.locator("#ra-prune-btn")).to_have_count(0)
    assert [g.get("data-name") for g in view.chart_archives()] == names


def test_the_activity_tab_lists_what_was_done_newest_first_and_loads_more(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    run, names = dated_run(web, days=2)
    owner = web.as_role("owner")  # alice through the API: 60 rows, more than a page
    for _ in range(30):
        for verb in ("pin", "unpin"):
            assert owner.post(f"/runs/{run.name}/archive/{names[0]}/{verb}").status_code == 200
    view = StoragePanel(open_page(), run).open()
    view.pin_button(names[1]).click()  # and one through the page, the newest
    expect(view.pin_button(names[1])).to_have_attribute("aria-pressed", "true")

    view.page.locator("#ra-tab-archives").focus()
    view.page.keyboard.press("End")  # the last tab, by keyboard
    tab = view.page.locator("#ra-tab-activity")
    expect(tab).to_have_attribute("aria-selected", "true")
    rows = view.page.locator("#ra-audit-rows tr")
    expect(rows).to_have_count(50)
    first = rows.first
    cells = [c.strip() for c in first.locator("td").all_inner_texts()]
    assert cells[1:5] == ["pin", "done", "alice (127.0.0.1)", names[1]], cells
    stamp = first.locator("time")
    iso = stamp.get_attribute("datetime") or ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", iso), iso
    expect(stamp).to_have_attribute("title", iso)  # the ISO time; the text is local time
    assert stamp.inner_text() != iso
    more = view.page.locator("#ra-audit-more")
    expect(more).to_be_visible()
    more.focus()
    view.page.keyboard.press("Enter")
    expect(rows).to_have_count(61)
    expect(more).to_be_hidden()  # the last page
    expect(rows.nth(50)).to_be_focused()  # the keyboard goes on from the first new row
    shown = [int(i) for i in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
    url = f"/runs/{run.name}/archive/audit?limit=1000"
    stored = [e["id"] for e in view.page.request.get(url).json()["events"]]
    assert shown == stored and shown == sorted(shown, reverse=True)
    actions = rows.evaluate_all("rs => rs.map(r => r.dataset.action)")
    assert actions == ["pin"] + ["unpin", "pin"] * 30


def test_a_damaged_archive_is_badged_in_its_row_and_marked_in_the_chart(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    run, names = dated_run(web, days=2)
    bad = run / "archives" / names[0]
    with zipfile.ZipFile(bad) as zf:
        info = next(i for i in zf.infolist() if i.compress_type == zipfile.ZIP_DEFLATED)
    flip_entry_byte(bad, info.filename, zipfile.ZIP_DEFLATED)
    settings = web.ctx.settings
    done = run_cli("scrub", run, "--redis-url", str(settings.redis_url),
                   RUNARCHIVE_KEY_PREFIX=settings.key_prefix)  # fmt: skip
    assert done.returncode == 5, done.stdout + done.stderr  # exits.DAMAGE_FOUND

    view = StoragePanel(open_page(), run).open()
    badge = view.row(names[0]).locator("[data-health=damaged]")
    expect(badge).to_have_text("Damaged")
    expect(view.row(names[1]).locator("[data-health=ok]")).to_have_text("verified")
    view.show_storage_by_keyboard()
    view.chart_loaded()
    marks = {g.get("data-name"): g.get("data-damaged") for g in view.chart_archives()}
    assert marks == {names[0]: "true", names[1]: "false"}
    expect(view.page.locator("#ra-storage-summary")).to_have_text(
        totals(view.page, run, "1 damaged")
    )


def test_the_storage_panel_reads_well_on_a_desktop_and_a_phone(
    web: WebEnv, open_page: Callable[..., Page], tmp_path: Path
) -> None:
    target = SCREENSHOTS if os.environ.get("RUNARCHIVE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    run, names = dated_run(web, days=5)
    set_pinned(run, names[1], True)
    run_policy_put = {"keep_last": 2, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}
    for viewport, shot in ((DESKTOP, "storage-panel.png"), (PHONE, "storage-panel-phone.png")):
        page = open_page(viewport=viewport)
        view = StoragePanel(page, run)
        page.goto(f"/runs/{run.name}/archive#storage")  # the address names the tab
        view.wait_idle()
        expect(page.locator("#ra-panel-storage")).to_be_visible()
        view.chart_loaded()
        if viewport is DESKTOP:
            for key, value in run_policy_put.items():
                page.locator(f"#ra-{key}").fill(str(value))
            page.locator("#ra-policy-save").click()
            expect(page.locator("#ra-policy-state")).to_have_text("Saved.")
        page.locator("#ra-prune-preview-btn").click()
        expect(page.locator("#ra-prune-preview")).to_be_visible()
        # The chart is drawn at the width it is shown at (its text unscaled), within 320-640.
        natural, shown = page.evaluate(
            "img => [img.naturalWidth, img.getBoundingClientRect().width]",
            page.locator("#ra-storage-chart").element_handle(),
        )
        assert 320 <= natural <= 640 and abs(natural - shown) <= 12, (natural, shown)
        # Nothing wider than the screen; the touch targets are big enough.
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        for button in ("#ra-prune-preview-btn", "#ra-prune-btn", "#ra-tab-storage"):
            box = page.locator(button).bounding_box()
            assert box is not None and box["height"] >= 40, button
        page.locator("#ra-panel-storage").scroll_into_view_if_needed()
        page.screenshot(path=target / shot, full_page=True)
        assert (target / shot).stat().st_size > 10_000


def totals(page: Page, run: Path, tail: str) -> str:
    """The totals in words the panel must show, from the list's own ``usage`` now."""
    usage = page.request.get(f"/runs/{run.name}/archive/list").json()["usage"]
    parts = [f"{usage['archives_count']} archives, {human(usage['archives_bytes'])} in all"]
    if usage["quota_bytes"] is not None:
        used = round(100 * usage["archives_bytes"] / usage["quota_bytes"])
        parts.append(f"quota {human(usage['quota_bytes'])} ({used} % used)")
    parts.append(f"the run itself {human(usage['run_bytes'])}")
    parts.append(f"{human(usage['disk_free_bytes'])} free on the disk")
    return "; ".join([*parts, tail]) + "."


def human(n: int) -> str:
    """The page's humanSize (static/js/archive.js), restated."""
    value, unit = float(n), 0
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{int(value)} B"
    return f"{value:.1f} {units[unit]}" if value < 10 else f"{value:.0f} {units[unit]}"
