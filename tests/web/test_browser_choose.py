"""Restoring chosen paths from the archive view, and the restore confirm's preview, in a real
browser against ``runarchive serve`` and its worker (test_browser.py's service and pages).

Each test edits the run on disk after archiving it through the page, then checks what the
confirm says against those edits, and what a restore did against the files on disk.

Screenshots go to a temporary folder; with ``RUNARCHIVE_UPDATE_SCREENSHOTS=1`` they replace
``docs/screenshots/restore-confirm.png``, ``archive-choose.png`` and ``archive-choose-phone.png``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from runarchive.core import create_archive
from tests.support.tree import snapshot
from tests.web import test_browser as dashboard_tests
from tests.web.test_browser import PHONE, SCREENSHOTS, Browsing, Dashboard

# test_browser.py's service (``runarchive serve`` with its worker), logged-in pages and runs.
service = dashboard_tests.service
sessions = dashboard_tests.sessions
browsing = dashboard_tests.browsing
page = dashboard_tests.page
make_run = dashboard_tests.make_run
run = dashboard_tests.run

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(600)]


def _target(tmp_path: Path) -> Path:
    return SCREENSHOTS if os.environ.get("RUNARCHIVE_UPDATE_SCREENSHOTS") == "1" else tmp_path


def _count(confirm: Locator, key: str) -> tuple[int, int]:
    cell = confirm.locator(f'[data-count="{key}"]')
    return int(cell.get_attribute("data-files") or -1), int(cell.get_attribute("data-bytes") or 0)


def _box(page: Page, key: str) -> Locator:
    return page.locator(f'#ra-inside-tree input.entry-check[data-key="{key}"]')


def _open_browse(page: Page, name: str) -> None:
    page.locator(f'#ra-archive-rows tr[data-name="{name}"] [data-inside=browse]').click()
    expect(page.locator("#ra-inside")).to_be_visible()
    expect(page.locator("#ra-inside-tree > li.entry").first).to_be_visible()


def test_the_restore_confirm_counts_the_edits_made_since_the_archive(
    page: Page, run: Path, tmp_path: Path
) -> None:
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    name = dashboard.archive("before the edits")
    deleted = [run / "wepp" / "runs" / "p1.run", run / "climate" / "T897926.cli"]
    changed = [run / "README.md", run / "dem" / "dem.tif", run / "soils" / "594586.sol"]
    added = {f"stray-{i}.txt": b"s" * (100 * (i + 1)) for i in range(4)}
    deleted_bytes = sum(p.stat().st_size for p in deleted)
    changed_bytes = sum(p.stat().st_size for p in changed)  # the archive's, written back
    archived = sum(1 for p in run.rglob("*") if p.is_file() and "archives" not in p.parts)
    for path in deleted:
        path.unlink()
    for path in changed:
        path.write_bytes(path.read_bytes() + b"edited")
    for leaf, data in added.items():
        (run / leaf).write_bytes(data)
    edited = snapshot(run, with_dir_times=False)

    dashboard.row(name).get_by_role("button", name=re.compile("Restore")).click()
    confirm = dashboard.confirm
    expect(confirm).to_have_attribute("data-state", "ready")
    assert _count(confirm, "restores") == (2, deleted_bytes)
    assert _count(confirm, "changes") == (3, changed_bytes)
    assert _count(confirm, "removes") == (4, sum(len(d) for d in added.values()))
    assert _count(confirm, "unchanged")[0] == archived - 5
    sentence = confirm.locator(".confirm-sentence").inner_text()
    assert re.fullmatch(
        r"Restores 2 files \(.+\), changes 3 \(.+\), removes 4 files created since \(.+\)\.",
        sentence,
    ), sentence
    expect(confirm.locator(".confirm-sample")).to_contain_text("stray-0.txt")
    expect(page.locator("#ra-confirm-cancel")).to_be_focused()  # the safe choice first
    page.mouse.move(0, 0)
    page.screenshot(path=_target(tmp_path) / "restore-confirm.png")

    page.keyboard.press("Escape")  # nothing is enqueued before Restore
    expect(confirm).to_be_hidden()
    expect(dashboard.row(name).get_by_role("button", name=re.compile("Restore"))).to_be_focused()
    assert snapshot(run, with_dir_times=False) == edited
    assert len(dashboard.finished()) == 1  # the archive only: no restore job

    dashboard.row(name).get_by_role("button", name=re.compile("Restore")).click()
    dashboard.confirm_restore()
    assert dashboard.wait_finished(2)["trigger"] == "RESTORE_COMPLETE"
    assert all(p.is_file() for p in deleted)
    assert not any((run / leaf).exists() for leaf in added)


def test_two_chosen_paths_restore_only_those_and_the_banner_offers_undo(
    page: Page, run: Path, tmp_path: Path
) -> None:
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    name = dashboard.archive("before the edits")
    sol, readme, cli = (
        run / "soils" / "1169837.sol",
        run / "README.md",
        run / "climate" / "S595185.cli",
    )
    original = {p: p.read_bytes() for p in (sol, readme, cli)}
    for path in (sol, readme, cli):
        path.write_bytes(path.read_bytes() + b" edited")
    (run / "soils" / "new.sol").write_bytes(b"n" * 700)  # in a chosen folder: removed
    (run / "stray.txt").write_bytes(b"not chosen: stays")

    _open_browse(page, name)
    count = page.locator("#ra-selection-count")
    expect(count).to_have_text("Nothing chosen")
    expect(page.locator("#ra-restore-selected")).to_be_disabled()
    folder = _box(page, "soils/")
    folder.focus()
    page.keyboard.press("Space")  # the keyboard way
    expect(folder).to_be_checked()
    _box(page, "README.md").check()
    expect(count).to_have_attribute("data-items", "2")
    expect(count).to_have_text(re.compile(r"^2 items, 4 files, [\d.]+ (KiB|MiB)$"))
    # A chosen folder's content is restored with it: shown checked and locked.
    page.locator('li.entry[data-path="soils"] > .entry-row .entry-toggle').click()
    inner = _box(page, "soils/594586.sol")
    expect(inner).to_be_checked()
    expect(inner).to_be_disabled()
    page.mouse.move(0, 0)
    page.screenshot(path=_target(tmp_path) / "archive-choose.png")

    # "Restore selected…" is reached by Tab from the tree's last control.
    page.locator("#ra-inside-tree a, #ra-inside-tree button, #ra-inside-tree input").last.focus()
    for _ in range(3):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "ra-restore-selected":
            break
    expect(page.locator("#ra-restore-selected")).to_be_focused()
    page.keyboard.press("Enter")

    confirm = dashboard.confirm
    expect(confirm).to_have_attribute("data-state", "ready")
    expect(confirm.locator("#ra-confirm-paths li")).to_have_text(["README.md", "soils/"])
    assert _count(confirm, "restores") == (0, 0)
    assert _count(confirm, "changes") == (2, len(original[sol]) + len(original[readme]))
    assert _count(confirm, "removes") == (1, 700)
    dashboard.confirm_restore()
    assert dashboard.wait_finished(2)["trigger"] == "RESTORE_COMPLETE"
    dashboard.wait_idle()

    expect(page.locator("#ra-inside")).to_be_hidden()
    assert sol.read_bytes() == original[sol] and readme.read_bytes() == original[readme]
    assert not (run / "soils" / "new.sol").exists()
    assert cli.read_bytes() == original[cli] + b" edited"  # not chosen: as it was
    assert (run / "stray.txt").read_bytes() == b"not chosen: stays"
    banner = page.locator("#ra-undo")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(f"The restore from {name}")
    expect(page.get_by_role("button", name="Undo restore")).to_be_enabled()


def test_a_search_result_can_be_chosen_and_restored_alone(page: Page, run: Path) -> None:
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    name = dashboard.archive("before the edits")
    soils = sorted(p for p in (run / "soils").iterdir() if p.suffix == ".sol")
    original = {p: p.read_bytes() for p in soils}
    for path in soils:
        path.write_bytes(b"edited")

    _open_browse(page, name)
    page.fill("#ra-inside-search-text", ".SOL")
    page.keyboard.press("Enter")
    matching = [
        p.relative_to(run).as_posix()
        for p in run.rglob("*")
        if ".sol" in p.relative_to(run).as_posix() and "archives" not in p.parts
    ]
    results = page.locator("#ra-inside-results > li.entry")
    expect(results).to_have_count(len(matching))
    shown = results.evaluate_all("rows => rows.map(r => r.dataset.path)")
    assert sorted(shown) == sorted(matching)
    expect(page.locator("#ra-inside-tree")).to_be_hidden()
    note = page.locator("#ra-inside-results-note")
    expect(note).to_have_text(f"{len(matching)} paths contain “.SOL”.")
    first = f"soils/{soils[0].name}"
    row = page.locator(f'#ra-inside-results li.entry[data-path="{first}"]')
    expect(row.locator(".entry-name")).to_have_text(first)  # the whole path
    page.locator(f'#ra-inside-results input.entry-check[data-key="{first}"]').check()
    expect(page.locator("#ra-selection-count")).to_have_attribute("data-items", "1")
    page.locator("#ra-inside-search-clear").click()
    expect(page.locator("#ra-inside-tree")).to_be_visible()
    page.locator('li.entry[data-path="soils"] > .entry-row .entry-toggle').click()
    expect(_box(page, first)).to_be_checked()  # the same choice, seen in the tree

    page.locator("#ra-restore-selected").click()
    confirm = dashboard.confirm
    expect(confirm).to_have_attribute("data-state", "ready")
    assert _count(confirm, "changes") == (1, len(original[soils[0]]))
    dashboard.confirm_restore()
    assert dashboard.wait_finished(2)["trigger"] == "RESTORE_COMPLETE"
    assert soils[0].read_bytes() == original[soils[0]]
    assert all(p.read_bytes() == b"edited" for p in soils[1:])  # not chosen


def test_a_preview_that_fails_says_why_and_offers_no_restore(page: Page, run: Path) -> None:
    archives = run / "archives"
    archives.mkdir()
    broken = f"{run.name}.20200101T000000Z.zip"
    (archives / broken).write_bytes(b"PK\x03\x04" + b"\x00" * 4096)  # no central directory
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)

    dashboard.row(broken).get_by_role("button", name=re.compile("Restore")).click()
    confirm = dashboard.confirm
    expect(confirm).to_have_attribute("data-state", "refused")
    expect(confirm.locator(".confirm-refusal")).to_contain_text("This restore cannot start")
    expect(page.locator("#ra-confirm-restore")).to_be_hidden()
    expect(page.locator("#ra-confirm-cancel")).to_have_text("Close")
    dashboard.dismiss_restore()
    expect(dashboard.note(broken)).to_contain_text("This restore cannot start")
    assert posts == [] and dashboard.finished() == []


def test_on_a_phone_the_boxes_are_big_enough_to_hit(
    browsing: Callable[..., Browsing], make_run: Callable[..., Path], tmp_path: Path
) -> None:
    run = make_run(target_bytes=256 * 2**10, files=30)
    name = create_archive(run, "on a phone").name
    phone = browsing("admin", PHONE).new_page()
    Dashboard(phone, run).open()
    _open_browse(phone, name)
    picks = phone.locator("#ra-inside-tree .entry-pick")
    assert picks.count() >= 5
    for pick in picks.all():
        box = pick.bounding_box()
        assert box is not None and box["width"] >= 44 and box["height"] >= 44, box
        assert box["x"] + box["width"] <= PHONE["width"]
    # A tap on the target, not only on the small box inside it.
    phone.locator('li.entry[data-path="climate"] > .entry-row .entry-pick').click()
    expect(phone.locator("#ra-selection-count")).to_have_attribute("data-items", "1")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.screenshot(path=_target(tmp_path) / "archive-choose-phone.png")
    for control in ("#ra-restore-selected", "#ra-selection-clear", "#ra-inside-search-btn"):
        box = phone.locator(control).bounding_box()
        assert box is not None and box["height"] >= 44, (control, box)
    phone.locator("#ra-restore-selected").click()
    expect(phone.locator("#ra-confirm")).to_have_attribute("data-state", "ready")
    restore = phone.locator("#ra-confirm-restore").bounding_box()
    assert restore is not None and restore["height"] >= 44
    assert restore["x"] + restore["width"] <= PHONE["width"]
