"""Inside an archive, in a real browser: the dashboard's Browse view and its compare.

The module's app runs on a real werkzeug server (conftest's ``live``); runs are generated (or
written) under its runs root and archived with the real core, so what the page shows is checked
against the archive itself, read with ``zipfile``, and against the files on disk.

Screenshots go to a temporary folder; with ``RUNARCHIVE_UPDATE_SCREENSHOTS=1`` they replace
``docs/screenshots/archive-view.png``, ``archive-compare.png`` and ``archive-view-phone.png``.
"""

from __future__ import annotations

import os
import stat
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from runarchive.core import create_archive
from runarchive.synthetic_run import generate_run
from runarchive.web.accounts import grant_run, require_user
from runarchive.web.db import db
from tests.support.browser import DESKTOP, PHONE, logged_in_pages
from tests.support.web import PASSWORD, LiveServer, WebEnv

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
HOSTILE = '<img src=x onerror="window.__pwned=1"> #?%.txt'


@pytest.fixture
def open_page(browser: Browser, live: LiveServer) -> Iterator[Callable[..., Page]]:
    """Open pages logged in as alice; fail the test if a page raised or broke its CSP."""
    with logged_in_pages(browser, live.port, PASSWORD, accept_downloads=True) as open_as:
        yield lambda viewport=DESKTOP: open_as("alice", viewport)


def generated_run(web: WebEnv, **files: bytes) -> Path:
    """Generate a small WEPP-like run (plus ``files``) owned by alice."""
    runid = f"inside-{uuid.uuid4().hex[:10]}"
    path = web.runs_root / runid
    generate_run(path, seed=3, target_bytes=300_000, files=40)
    for name, data in files.items():
        (path / name).write_bytes(data)
    with web.app.app_context():
        session = db().session
        grant_run(session, runid, require_user(session, "alice"))
    return path


class InsideView:
    """The dashboard of one run and its Browse dialog, as a user drives them."""

    def __init__(self, page: Page, run: Path) -> None:
        self.page, self.run = page, run
        self.dialog = page.locator("#ra-inside")
        self.tree = page.locator("#ra-inside-tree")
        self.compare_box = page.locator("#ra-compare")

    def open_dashboard(self) -> InsideView:
        self.page.goto(f"/runs/{self.run.name}/archive")
        expect(self.page.locator("#ra-dashboard")).to_have_attribute("data-busy", "false")
        return self

    def browse_button(self, name: str) -> Locator:
        return self.page.locator(f'#ra-archive-rows tr[data-name="{name}"] [data-inside=browse]')

    def browse(self, name: str) -> None:
        self.browse_button(name).click()
        expect(self.dialog).to_be_visible()
        expect(self.tree).not_to_have_attribute("aria-busy", "true")
        expect(self.tree.locator(":scope > li.entry").first).to_be_visible()

    def entry(self, path: str) -> Locator:
        return self.dialog.locator(f"li.entry[data-path={css_string(path)}]")

    def children(self, folder: str) -> Locator:
        scope = self.tree if folder == "" else self.entry(folder).locator(":scope > ul")
        return scope.locator(":scope > li.entry")

    def expand(self, folder: str) -> None:
        self.entry(folder).locator(":scope > .entry-row .entry-toggle").click()
        expect(self.children(folder).first).to_be_visible()

    def shown(self, folder: str) -> list[dict[str, str | None]]:
        return list(
            self.children(folder).evaluate_all(
                """items => items.map(li => ({
                    path: li.dataset.path, type: li.dataset.type,
                    name: li.querySelector('.entry-name').firstChild.textContent,
                    size: li.querySelector('.entry-size').textContent,
                    bytes: li.querySelector('.entry-size').title || null,
                    href: (li.querySelector('a[download]') || {}).href || null}))"""
            )
        )

    def compare(self, against: str | None = None) -> None:
        if against is not None:
            self.page.select_option("#ra-compare-with", against)
        self.page.click("#ra-compare-btn")
        expect(self.compare_box.locator(".compare-summary")).to_be_visible()

    def count(self, bucket: str) -> int:
        text = self.compare_box.locator(f'[data-bucket="{bucket}"] dd').inner_text()
        return int(text.split()[0])

    def change(self, path: str) -> Locator:
        return self.compare_box.locator(f".change-row[data-path={css_string(path)}]")


def css_string(value: str) -> str:
    """Return ``value`` as a quoted CSS string (entry names hold quotes and markup)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def zip_children(archive: Path, folder: str) -> dict[str, zipfile.ZipInfo]:
    """The archive's direct children of ``folder`` (no state folder), by path, from zipfile."""
    found: dict[str, zipfile.ZipInfo] = {}
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = info.filename.rstrip("/")
            if path.startswith(".runarchive") or folderof(path) != folder:
                continue
            found[path] = info
    return found


def is_regular(info: zipfile.ZipInfo) -> bool:
    """Whether the entry is a regular file (not a folder, link or special entry)."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    return not info.is_dir() and kind in (0, stat.S_IFREG)


def folderof(path: str) -> str:
    return path.rpartition("/")[0]


def test_browse_lists_the_archive_folders_and_sizes_and_a_download_gives_the_file_bytes(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    run = generated_run(web)
    archive = create_archive(run, "snapshot")
    view = InsideView(open_page(), run).open_dashboard()
    view.browse(archive.name)
    expect(view.page.locator("#ra-inside-name")).to_have_text(archive.name)

    top = view.shown("")
    expected_top = zip_children(archive.path, "")
    assert {row["path"] for row in top} == set(expected_top)
    folders = [row for row in top if row["type"] == "dir"]
    assert top[: len(folders)] == folders  # folders first
    with zipfile.ZipFile(archive.path) as zf:
        infos = [i for i in zf.infolist() if is_regular(i)]
    for row in folders:
        inside = [i for i in infos if i.filename.startswith(f"{row['path']}/")]
        assert row["size"] is not None
        assert row["size"].startswith(f"{len(inside)} file{'' if len(inside) == 1 else 's'}, ")

    view.expand("wepp")
    folder = "wepp/runs"  # the generator's model inputs: files and a link to the climate
    view.expand(folder)
    rows = view.shown(folder)
    expected = zip_children(archive.path, folder)
    assert {row["path"] for row in rows} == set(expected)
    files = [row for row in rows if row["type"] == "file"]
    assert files and all(is_regular(expected[str(row["path"])]) for row in files)
    for row in rows:  # links and special entries are shown, never offered for download
        if row["type"] in ("symlink", "special"):
            assert row["href"] is None
    for row in files:
        assert row["name"] == str(row["path"]).rpartition("/")[2]
        assert row["bytes"] == f"{expected[str(row['path'])].file_size} bytes"
        assert row["href"] is not None and "/file/" in row["href"]

    largest = max(files, key=lambda row: expected[str(row["path"])].file_size)
    with view.page.expect_download() as download:
        view.entry(str(largest["path"])).locator("a[download]").click()
    with zipfile.ZipFile(archive.path) as zf:
        want = zf.read(str(largest["path"]))
    assert Path(download.value.path()).read_bytes() == want

    # Collapsing and expanding again shows the same rows without asking again.
    toggle = view.entry(folder).locator(":scope > .entry-row .entry-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(view.children(folder).first).to_be_hidden()
    toggle.click()
    assert view.shown(folder) == rows


def test_a_long_folder_comes_a_page_at_a_time_and_load_more_shows_all_of_it_in_order(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    made = web.new_run(archive=False)
    many = made.path / "many"
    many.mkdir()
    for i in range(205):  # one page is 200 rows
        (many / f"f{i:03d}.txt").write_text(f"{i}\n")
    (many / "sub").mkdir()
    archive = create_archive(made.path, "many")
    view = InsideView(open_page(), made.path).open_dashboard()
    view.browse(archive.name)
    view.expand("many")
    expect(view.children("many")).to_have_count(200)
    more = view.entry("many").get_by_role("button", name="Load more")
    more.click()
    expect(view.children("many")).to_have_count(206)
    expect(more).to_have_count(0)
    files = sorted(p for p in zip_children(archive.path, "many") if p != "many/sub")
    assert [row["path"] for row in view.shown("many")] == ["many/sub", *files]  # folders first


def test_entries_a_restore_would_refuse_are_counted_and_not_listed(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    made = web.new_run(archive=False)
    name = f"{made.runid}.20260101T000000Z.zip"  # made by another tool: no manifest
    (made.path / "archives").mkdir()
    with zipfile.ZipFile(made.path / "archives" / name, "w") as zf:
        zf.writestr("kept.txt", "kept\n")
        zf.writestr("../escape.txt", "out\n")
        zf.writestr("archives/inner.zip", "no\n")
    view = InsideView(open_page(), made.path).open_dashboard()
    view.browse(name)
    assert [row["path"] for row in view.shown("")] == ["kept.txt"]
    expect(view.page.locator("#ra-inside-hidden")).to_have_text(
        "2 entries of this archive cannot be shown (names a restore would refuse)."
    )


def test_an_archive_deleted_while_browsed_says_so_in_the_view(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    made = web.new_run()
    assert made.archive is not None
    view = InsideView(open_page(), made.path).open_dashboard()
    view.browse(made.archive)
    (made.path / "archives" / made.archive).unlink()
    toggle = view.entry("output").locator(":scope > .entry-row .entry-toggle")
    toggle.click()
    alert = view.dialog.locator("#ra-inside-alerts [role=alert]")
    expect(alert).to_contain_text("Could not list the archive: ")
    assert alert.get_attribute("data-code") == "not_found"
    expect(toggle).to_have_attribute("aria-expanded", "false")


def test_a_hostile_entry_name_is_shown_as_text_and_its_download_gives_its_bytes(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    run = generated_run(web, **{HOSTILE: b"not markup\n"})
    archive = create_archive(run, "hostile")
    view = InsideView(open_page(), run).open_dashboard()
    view.browse(archive.name)
    row = view.entry(HOSTILE)
    expect(row.locator(".entry-name")).to_have_text(HOSTILE)
    assert view.dialog.locator("img").count() == 0
    with view.page.expect_download() as download:
        row.locator("a[download]").click()
    assert Path(download.value.path()).read_bytes() == b"not markup\n"
    assert view.page.evaluate("window.__pwned") is None


def test_compare_with_the_run_shows_an_edited_file_as_modified_with_its_text_diff(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    made = web.new_run(archive=False)  # output/H0..H4.pass.dat, README.md
    edited = made.path / "output" / "H2.pass.dat"
    edited.write_text("".join(f"hillslope 2 year {year}\n" for year in range(200)))
    archived = create_archive(made.path, "before").name
    edited.write_text(edited.read_text().replace("year 100\n", "year 100 recalibrated\n"))
    (made.path / "README.md").write_bytes(b"\x00\x01binary now")
    (made.path / "output" / "new.txt").write_text("new\n")
    view = InsideView(open_page(), made.path).open_dashboard()
    view.browse(archived)
    view.compare()
    expect(view.compare_box.locator(".compare-heading")).to_have_text(
        f"Changes from {archived} to the current run"
    )
    assert view.count("modified") == 2 and view.count("added") == 1
    assert view.count("removed") == 0
    groups = view.compare_box.locator(".compare-group")
    assert groups.evaluate_all("gs => gs.map(g => g.querySelector('h4').textContent)") == [
        "output",
        "(top folder)",
    ]
    changed = view.change("output/H2.pass.dat")
    assert changed.get_attribute("data-bucket") == "modified"
    expect(changed.locator(".entry-name")).to_have_text("H2.pass.dat")
    changed.get_by_role("button", name="Show diff of output/H2.pass.dat").click()
    diff = changed.locator(".diff-view")
    expect(diff.locator(".diff-add")).to_have_text(["+hillslope 2 year 100 recalibrated"])
    expect(diff.locator(".diff-del")).to_have_text(["-hillslope 2 year 100"])
    expect(diff.locator(".diff-ctx")).to_have_count(6)  # 3 lines of context each side
    expect(diff.locator(".diff-hunk").first).to_contain_text("@@")
    assert view.change("output/new.txt").get_attribute("data-bucket") == "added"

    readme = view.change("README.md")
    readme.get_by_role("button", name="Show diff of README.md").click()
    expect(readme.locator(".diff-note")).to_have_text("Binary file — no text diff")


def test_compare_between_two_archives_lists_what_the_later_one_changed(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    made = web.new_run()
    assert made.archive is not None
    (made.path / "output" / "H0.pass.dat").write_text("rewritten\n")
    (made.path / "output" / "H4.pass.dat").unlink()
    later = create_archive(made.path, "later").name
    (made.path / "output" / "H1.pass.dat").write_text("only in the run\n")
    view = InsideView(open_page(), made.path).open_dashboard()
    view.browse(made.archive)
    options = view.page.locator("#ra-compare-with option")
    assert options.evaluate_all("os => os.map(o => o.value)") == ["", later]
    view.compare(later)
    expect(view.compare_box.locator(".compare-heading")).to_have_text(
        f"Changes from {made.archive} to {later}"
    )
    assert view.count("modified") == 1 and view.count("removed") == 1
    assert view.count("added") == 0
    assert view.change("output/H1.pass.dat").count() == 0  # the run's edit is not in `later`
    assert view.change("output/H4.pass.dat").get_attribute("data-bucket") == "removed"
    changed = view.change("output/H0.pass.dat")
    changed.get_by_role("button", name="Show diff of output/H0.pass.dat").click()
    expect(changed.locator(".diff-add")).to_have_text(["+rewritten"])


def test_a_long_diff_comes_a_page_at_a_time_and_its_pages_join_their_folder_groups(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    made = web.new_run(archive=False)
    for folder in ("a", "b"):  # 2 x 260 changes: the first page (500) ends inside "b"
        (made.path / folder).mkdir()
        for i in range(260):
            (made.path / folder / f"{i:03d}.txt").write_text("before\n")
    archive = create_archive(made.path, "before").name
    for folder in ("a", "b"):
        for i in range(260):
            (made.path / folder / f"{i:03d}.txt").write_text("after, longer\n")
    view = InsideView(open_page(), made.path).open_dashboard()
    view.browse(archive)
    view.compare()
    assert view.count("modified") == 520
    rows = view.compare_box.locator(".change-row")
    expect(rows).to_have_count(500)
    view.compare_box.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(520)
    expect(view.compare_box.get_by_role("button", name="Load more")).to_have_count(0)
    headings = view.compare_box.locator(".compare-group h4")
    expect(headings).to_have_text(["a", "b"])  # the second page joined "b", no new group
    shown = rows.evaluate_all("rs => rs.map(r => r.dataset.path)")
    assert shown == [f"{folder}/{i:03d}.txt" for folder in ("a", "b") for i in range(260)]


def test_a_reader_of_a_public_run_can_browse_and_compare_it(
    web: WebEnv, browser: Browser, live: LiveServer
) -> None:
    made = web.new_run(public=True)  # owned by alice; bob only reads it
    assert made.archive is not None
    (made.path / "README.md").write_text("changed by the owner\n")
    context = browser.new_context(base_url=f"http://127.0.0.1:{live.port}")
    try:
        page = context.new_page()
        page.goto("/login")
        page.fill("#username", "bob")
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("form[action='/login'] button[type=submit]")
        view = InsideView(page, made.path).open_dashboard()
        view.browse(made.archive)
        expect(view.entry("README.md").locator("a[download]")).to_be_visible()
        view.compare()
        assert view.count("modified") == 1
        expect(view.change("README.md")).to_be_visible()
    finally:
        context.close()


def test_the_view_opens_and_closes_from_the_keyboard_and_focus_returns_to_its_button(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    made = web.new_run()
    assert made.archive is not None
    view = InsideView(open_page(), made.path).open_dashboard()
    button = view.browse_button(made.archive)
    button.focus()
    view.page.keyboard.press("Enter")
    expect(view.dialog).to_be_visible()
    expect(view.entry("output")).to_be_visible()
    assert view.dialog.evaluate("d => d.contains(document.activeElement)")  # focus moved in
    for _ in range(10):  # Tab to the folder "output", open it with Enter
        view.page.keyboard.press("Tab")
        if view.page.evaluate("document.activeElement.textContent") == "output":
            break
    view.page.keyboard.press("Enter")
    expect(view.entry("output/H0.pass.dat")).to_be_visible()
    view.page.keyboard.press("Escape")
    expect(view.dialog).to_be_hidden()
    expect(button).to_be_focused()


def test_on_a_phone_the_view_stacks_without_sideways_scrolling(
    web: WebEnv, open_page: Callable[..., Page]
) -> None:
    run = generated_run(web, **{"a-rather-long-file-name-" * 4 + ".txt": b"x\n"})
    archive = create_archive(run, "phone")
    (run / "README.md").write_text("changed on a phone\n")
    page = open_page(PHONE)
    view = InsideView(page, run).open_dashboard()
    view.browse(archive.name)
    view.expand("wepp")
    view.compare()
    view.change("README.md").get_by_role("button", name="Show diff of README.md").click()
    expect(view.change("README.md").locator(".diff-view")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    box = view.dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert view.dialog.evaluate("d => d.scrollWidth <= d.clientWidth")
    for control in view.dialog.locator(".entry-row a, .entry-toggle, .change-row button").all():
        edge = control.bounding_box()
        assert edge is not None and edge["x"] + edge["width"] <= PHONE["width"]


def test_the_view_and_its_compare_read_well_on_a_generated_run_and_on_a_phone(
    web: WebEnv, open_page: Callable[..., Page], tmp_path: Path
) -> None:
    target = SCREENSHOTS if os.environ.get("RUNARCHIVE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    # The demo's generator and seed (`serve --demo`, the dashboard's screenshots), smaller.
    runid = f"inside-{uuid.uuid4().hex[:10]}"
    run = web.runs_root / runid
    generate_run(run, seed=7, target_bytes=600_000, files=40)
    with web.app.app_context():
        session = db().session
        grant_run(session, runid, require_user(session, "alice"))
    archive = create_archive(run, "baseline, before calibration").name

    # A few realistic edits since: a soil recalibrated, a report added, an output dropped.
    soil = run / "wepp" / "runs" / "p1.sol"
    lines = soil.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("'"))  # the soil's line
    before = lines[at]
    fields = before.split()  # 'name' 'texture' layers albedo saturation ki kr shcrit avke
    fields[5] = f"{float(fields[5]) * 0.9:.2f}"  # interrill erodibility, ki, down 10%
    lines[at] = recalibrated = " ".join(fields)
    soil.write_text("\n".join(lines) + "\n")
    (run / "export" / "summary.csv").write_text(
        "hillslope,runoff_mm,soil_loss_t_ha\n1,12.4,0.82\n2,9.7,0.41\n3,15.1,1.07\n"
    )
    (run / "wepp" / "output" / "H3.wat.dat").unlink()

    desktop = open_page(DESKTOP)
    view = InsideView(desktop, run).open_dashboard()
    view.browse(archive)
    view.expand("wepp")
    view.expand("wepp/runs")
    expect(view.entry("wepp/runs/p1.sol")).to_be_visible()
    desktop.mouse.move(0, 0)  # no hover colour on the last toggle clicked
    desktop.screenshot(path=target / "archive-view.png")

    view.compare()
    expect(view.compare_box.locator(".compare-heading")).to_have_text(
        f"Changes from {archive} to the current run"
    )
    assert (view.count("modified"), view.count("added"), view.count("removed")) == (1, 1, 1)
    changed = view.change("wepp/runs/p1.sol")
    assert changed.get_attribute("data-bucket") == "modified"
    assert view.change("export/summary.csv").get_attribute("data-bucket") == "added"
    assert view.change("wepp/output/H3.wat.dat").get_attribute("data-bucket") == "removed"
    changed.get_by_role("button", name="Show diff of wepp/runs/p1.sol").click()
    diff = changed.locator(".diff-view")
    expect(diff.locator(".diff-del")).to_have_text([f"-{before}"])
    expect(diff.locator(".diff-add")).to_have_text([f"+{recalibrated}"])
    expect(diff.locator(".diff-hunk").first).to_contain_text("@@")
    view.page.locator(".inside-compare").evaluate("s => s.scrollIntoView({block: 'start'})")
    desktop.mouse.move(0, 0)
    desktop.screenshot(path=target / "archive-compare.png")

    phone = open_page(PHONE)
    small = InsideView(phone, run).open_dashboard()
    small.browse(archive)
    small.expand("climate")  # near the top: its files show on the first screen
    small.compare()
    small.change("wepp/runs/p1.sol").get_by_role(
        "button", name="Show diff of wepp/runs/p1.sol"
    ).click()
    expect(small.change("wepp/runs/p1.sol").locator(".diff-add")).to_have_count(1)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert small.dialog.evaluate("d => d.scrollWidth <= d.clientWidth")
    box = small.dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    for control in small.dialog.locator(".entry-row a, .entry-toggle, .change-row button").all():
        edge = control.bounding_box()
        assert edge is not None and edge["x"] + edge["width"] <= PHONE["width"]
    small.dialog.evaluate("d => d.scrollTo(0, 0)")
    phone.mouse.move(0, 0)
    phone.screenshot(path=target / "archive-view-phone.png")
    for shot in ("archive-view.png", "archive-compare.png", "archive-view-phone.png"):
        assert (target / shot).stat().st_size > 10_000, shot
