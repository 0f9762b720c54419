"""End to end in a real browser: the archive dashboard against `runarchive serve` and its worker.

The session starts the real service as a subprocess (``runarchive serve`` with no Redis URL, so
it runs an embedded valkey and a local worker) on a free port, with a temporary data dir and
runs root, creates accounts with the CLI, and drives Debian's Chromium through Playwright (the
Python package only; the browser comes from apt, installed here when missing). Every test makes
its own run with a unique id, so tests share the service but never each other's archives.

The page is observed, never altered: an init script records the ``ra:jobfinished`` events the
dashboard dispatches and every value the progress bar takes. Assertions look at what a user
sees (rows, texts, enabled buttons) and at the files on disk.

Screenshots go to a temporary folder; with ``RUNARCHIVE_UPDATE_SCREENSHOTS=1`` they replace
``docs/screenshots/dashboard.png``, ``dashboard-mid-job.png``, ``dashboard-success.png``,
``dashboard-refusal.png`` and ``dashboard-phone.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    expect,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from runarchive.core import create_archive
from runarchive.jobs.connection import embedded_url
from runarchive.jobs.locks import acquire_lock, release_lock
from runarchive.synthetic_run import generate_run
from tests.support.serve import Serve, ServeFailed
from tests.support.tree import archive_files, snapshot

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(600)]

PASSWORD = "correct horse battery staple"
# Most scenarios act as the admin, so that no run needs a (slow, CLI) grant; alice owns the
# runs granted to her, bob only reads public runs.
USERS = {"admin": ["--admin"], "alice": [], "bob": []}
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
JOB_TIMEOUT_MS = 60_000
PING_INTERVAL = 1  # seconds between the server's pings (20 by default)
ARCHIVE_NAME = re.compile(r"^(?P<runid>[\w.;-]+)\.(?P<stamp>\d{8}T\d{6}Z)(?:-\d+)?\.zip$")

# Records what the dashboard reports, without changing it: its ra:jobfinished events and every
# value given to a <progress> element.
PROBE_JS = """
(() => {
  const ra = (window.__ra = { finished: [], progress: [] });
  document.addEventListener("ra:jobfinished", (event) => ra.finished.push(event.detail));
  const value = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, "value");
  Object.defineProperty(HTMLProgressElement.prototype, "value", {
    configurable: true,
    enumerable: value.enumerable,
    get() { return value.get.call(this); },
    set(v) { ra.progress.push(Number(v)); value.set.call(this, v); },
  });
})();
"""


# ------------------------------------------------------------------------- the service


class Service(Serve):
    """The dashboard tests' ``runarchive serve`` (the shared launcher) and its accounts."""

    @contextlib.contextmanager
    def nodb_lock(self, runid: str, relpath: str) -> Iterator[None]:
        """Hold a NoDb lock of the run, as the host application does, in serve's valkey."""
        url = embedded_url(self.data_dir)
        assert url, "serve's embedded valkey is not running"
        client = redis.Redis.from_url(url)
        try:
            token = acquire_lock(client, runid, relpath, ttl=300, owner="host-app:1")
            assert token is not None
            yield
            release_lock(client, runid, relpath, token)
        finally:
            client.close()

    def run_cli(self, *args: str, stdin: str | None = None) -> str:
        """Run ``runarchive ARGS --data-dir DATA``; fail the test unless it succeeds."""
        done = self.cli(*args, stdin=stdin, timeout=60)
        assert done.returncode == 0, f"runarchive {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def start_or_fail(self) -> None:
        """Start serve; a serve that exits or never gets healthy fails the test with its log."""
        try:
            self.start()
        except ServeFailed as exc:
            pytest.fail(str(exc))


@contextlib.contextmanager
def serving(base: Path, users: dict[str, list[str]]) -> Iterator[Service]:
    """Run ``runarchive serve`` on a free port with its data under ``base`` and ``users``."""
    # Silent for 3 pings: dropped.
    service = Service(base, {"SECRET_KEY": secrets.token_hex(32),
                             "RUNARCHIVE_WS_PING_INTERVAL": str(PING_INTERVAL)})  # fmt: skip
    service.stop_timeout = 30
    try:
        service.start_or_fail()
        with ThreadPoolExecutor() as pool:  # each CLI start costs seconds: overlap them
            added = [
                pool.submit(
                    service.run_cli,
                    "users",
                    "add",
                    user,
                    *flags,
                    "--password-stdin",
                    stdin=PASSWORD,
                )
                for user, flags in users.items()
            ]
            for future in added:
                future.result()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with serving(tmp_path_factory.mktemp("web"), USERS) as started:
        yield started


# ------------------------------------------------------------------------- the browser


# Chromium and the session's browser are fixtures of conftest.py (shared with
# test_wepp_browser.py: one Playwright per process).


@dataclass
class Browsing:
    """A browser context on the service plus the page errors seen in it."""

    context: BrowserContext
    errors: list[str]

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )
        return page


def log_in(page: Page, user: str) -> None:
    """Log in through the login form."""
    page.goto("/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    expect(page.locator("[data-testid=user-name]")).to_contain_text(user)


@pytest.fixture(scope="session")
def sessions(browser: Browser, service: Service) -> Callable[[str], Any]:
    """Log each user in once through the form and keep the cookies for later contexts."""
    states: dict[str, Any] = {}

    def state_of(user: str) -> Any:
        if user not in states:
            context = browser.new_context(base_url=service.url)
            try:
                log_in(context.new_page(), user)
                states[user] = context.storage_state()
            finally:
                context.close()
        return states[user]

    return state_of


@pytest.fixture
def browsing(
    browser: Browser, service: Service, sessions: Callable[[str], Any]
) -> Iterator[Callable[..., Browsing]]:
    """Open browser contexts, logged in as ``user`` or anonymous; check no page broke."""
    opened: list[Browsing] = []

    def open_context(user: str | None, viewport: dict[str, int] = DESKTOP) -> Browsing:
        context = browser.new_context(
            base_url=service.url,
            viewport=viewport,
            accept_downloads=True,
            storage_state=sessions(user) if user else None,
        )
        context.add_init_script(script=PROBE_JS)
        opened.append(Browsing(context, []))
        return opened[-1]

    yield open_context
    for item in opened:
        item.context.close()
    errors = [error for item in opened for error in item.errors]
    assert errors == [], "the page raised errors or broke its CSP"


@pytest.fixture
def page(browsing: Callable[..., Browsing]) -> Page:
    """A page of the admin, who may write every run."""
    return browsing("admin").new_page()


# ------------------------------------------------------------------------- runs and pages


@pytest.fixture
def make_run(service: Service) -> Iterator[Callable[..., Path]]:
    """Generate a run with a unique id under the runs root, granted to ``owner`` if given."""

    made: list[Path] = []

    def make(
        *,
        owner: str | None = None,
        public: bool = False,
        target_bytes: int = 2 * 2**20,
        files: int = 120,
        seed: int = 1,
    ) -> Path:
        runid = f"web-{uuid.uuid4().hex[:10]}"
        path = service.runs_root / runid
        made.append(path)
        generate_run(path, seed=seed, target_bytes=target_bytes, files=files)
        if owner is not None:
            service.run_cli("runs", "grant", runid, owner, "--allow-missing")
        if public:
            (path / "PUBLIC").touch()
        return path

    yield make
    for path in made:  # some runs are hundreds of MB
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run(make_run: Callable[..., Path]) -> Path:
    return make_run()


class Dashboard:
    """The archive dashboard of one run, as a user drives it."""

    def __init__(self, page: Page, run: Path) -> None:
        self.page = page
        self.run = run
        self.runid = run.name
        self.root = page.locator("#ra-dashboard")
        self.rows = page.locator("#ra-archive-rows tr[data-name]")
        self.log = page.locator("#ra-status-log")  # the raw lines, behind their disclosure
        self.activity = page.locator("#ra-activity")  # the same lines for people
        self.archive_button = page.locator("#ra-archive-btn")

    def open(self) -> Dashboard:
        self.page.goto(f"/runs/{self.runid}/archive")
        self.wait_idle()
        return self

    def wait_idle(self) -> None:
        expect(self.root).to_have_attribute("data-busy", "false", timeout=JOB_TIMEOUT_MS)

    def wait_live(self) -> None:
        expect(self.root).to_have_attribute("data-ws", "live")

    def finished(self) -> list[dict[str, Any]]:
        return list(self.page.evaluate("window.__ra.finished"))

    def progress_values(self) -> list[float]:
        return [float(v) for v in self.page.evaluate("window.__ra.progress")]

    def wait_finished(self, count: int) -> dict[str, Any]:
        """Wait for the ``count``-th finished job of this page and return its event."""
        try:
            self.page.wait_for_function(
                "n => window.__ra.finished.length >= n", arg=count, timeout=JOB_TIMEOUT_MS
            )
        except PlaywrightTimeout:
            lines = "\n".join(self.log_lines()[-30:])
            raise AssertionError(f"job {count} did not finish; status lines:\n{lines}") from None
        return self.finished()[count - 1]

    def start_archive(self, comment: str) -> None:
        self.page.fill("#ra-comment", comment)
        self.archive_button.click()

    def archive(self, comment: str = "") -> str:
        """Archive through the page; return the new archive's name."""
        before = set(self.names())
        count = len(self.finished()) + 1
        self.start_archive(comment)
        event = self.wait_finished(count)
        assert event["ok"] is True, event
        self.wait_idle()
        expect(self.rows).to_have_count(len(before) + 1)
        (name,) = set(self.names()) - before
        return name

    def names(self) -> list[str]:
        return [str(n) for n in self.rows.evaluate_all("rows => rows.map(r => r.dataset.name)")]

    def row(self, name: str) -> Locator:
        return self.page.locator(f'#ra-archive-rows tr[data-name="{name}"]')

    def log_lines(self) -> list[str]:
        return [str(t) for t in self.log.locator(".line").all_text_contents()]

    def note(self, name: str) -> Locator:
        """The outcome message shown at archive ``name``'s row (or where the row was)."""
        return self.page.locator(f'#ra-archive-rows .row-note[data-note-for="{name}"]')

    def files_of(self, name: str) -> int:
        return int(self.row(name).locator("[data-label=Files]").inner_text())

    @property
    def confirm(self) -> Locator:
        """The restore confirm: the server's preview of the restore, then Restore or Cancel."""
        return self.page.locator("#ra-confirm")

    def confirm_restore(self) -> str:
        """Wait for the confirm's preview, choose Restore; return what the confirm said."""
        expect(self.confirm).to_have_attribute("data-state", "ready", timeout=JOB_TIMEOUT_MS)
        text = self.confirm.inner_text()
        self.page.locator("#ra-confirm-restore").click()
        expect(self.confirm).to_be_hidden()
        return text

    def dismiss_restore(self) -> str:
        """Cancel the open restore confirm; return what it said."""
        expect(self.confirm).to_be_visible()
        text = self.confirm.inner_text()
        self.page.locator("#ra-confirm-cancel").click()
        expect(self.confirm).to_be_hidden()
        return text


def _count(lines: list[str], needle: str) -> int:
    return sum(needle in line for line in lines)


# ------------------------------------------------------------------------- scenarios


def test_logging_in_leads_to_the_runs_and_then_the_dashboard(
    browsing: Callable[..., Browsing], make_run: Callable[..., Path]
) -> None:
    run = make_run(owner="alice")
    page = browsing(None).new_page()
    page.goto(f"/runs/{run.name}/archive")
    expect(page).to_have_url(re.compile(r"/login"))  # anonymous: sent to log in first
    expect(page.locator("#username")).to_be_focused()

    page.fill("#username", "alice")
    page.fill("#password", "not the password")
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    expect(page.locator("#login-error")).to_be_visible()
    expect(page.locator("[data-testid=user-name]")).to_have_count(0)

    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    expect(page.locator("[data-testid=user-name]")).to_contain_text("alice")
    expect(page.locator("h1")).to_contain_text(run.name)  # back where the user was going

    page.goto("/")
    link = page.locator("#run-list a", has_text=run.name)
    expect(link).to_have_attribute("href", f"/runs/{run.name}/archive")
    link.click()

    dashboard = Dashboard(page, run)
    dashboard.wait_idle()
    dashboard.wait_live()
    expect(page.locator("h1")).to_contain_text(run.name)
    expect(page.locator("#ra-empty")).to_be_visible()
    expect(dashboard.archive_button).to_be_enabled()
    # Everything the page runs comes from files: no inline code for the CSP to refuse.
    scripts = page.locator("script").evaluate_all(
        "nodes => nodes.map(s => ({src: s.getAttribute('src'), type: s.type}))"
    )
    assert [s["src"] for s in scripts if s["src"]] == [
        "/static/js/archive.js",
        "/static/js/inside.js",
        "/static/js/storage.js",
        "/static/js/activity.js",
    ]
    assert all(s["src"] or s["type"] == "application/json" for s in scripts), scripts
    assert page.locator("[onclick], [onload], [onerror], [onsubmit]").count() == 0
    csrf = page.locator("meta[name=csrf-token]").get_attribute("content")
    assert csrf

    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    expect(page.locator("[data-testid=user-name]")).to_have_count(0)
    page.goto(f"/runs/{run.name}/archive")
    expect(page).to_have_url(re.compile(r"/login"))


WATCH_DISABLED = """id => {
  const button = document.getElementById(id);
  window.__raWasDisabled = button.disabled;
  new MutationObserver(() => { if (button.disabled) window.__raWasDisabled = true; })
    .observe(button, {attributes: true});
}"""


def test_archiving_streams_live_lines_moves_the_bar_and_lists_the_archive_with_its_comment(
    page: Page, run: Path
) -> None:
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()

    # One comment rule everywhere: longer comments are cut to 40, and the page says so.
    page.fill("#ra-comment", "x" * 55)
    expect(page.locator("#ra-comment-count")).to_have_text("55/40 — will be cut to 40")

    long = "calibrated v2 against the 2019 gauge data, second try"
    stored = long[:40].rstrip()
    started = datetime.now(UTC)
    # Seen by an observer, not polled afterwards: a quick job may end before a poll would look.
    page.evaluate(WATCH_DISABLED, "ra-archive-btn")
    dashboard.start_archive(f"   {long}   ")
    expect(page.locator(".alert", has_text="The comment was cut to 40 characters")).to_contain_text(
        stored
    )
    event = dashboard.wait_finished(1)
    assert page.evaluate("window.__raWasDisabled") is True  # no second click while it ran
    job_id = event["jobId"]
    assert event["ok"] is True
    assert event["trigger"] == "ARCHIVE_COMPLETE"
    dashboard.wait_idle()
    expect(dashboard.archive_button).to_be_enabled()

    # The list shows the new archive with its trimmed comment, size, files and link.
    expect(dashboard.rows).to_have_count(1)
    (name,) = dashboard.names()
    match = ARCHIVE_NAME.match(name)
    assert match and match["runid"] == run.name
    row = dashboard.row(name)
    expect(row.locator("[data-label=Comment]")).to_have_text(stored)
    on_disk = run / "archives" / name
    assert on_disk.is_file()
    expect(row.locator("[data-label=Size]")).to_have_attribute(
        "title", f"{on_disk.stat().st_size} bytes"
    )
    expect(row.locator("[data-label=Size]")).to_have_text(re.compile(r"^\d+(\.\d)? (KiB|MiB)$"))
    files = sum(
        1
        for p in run.rglob("*")
        if p.is_file() and not p.is_symlink() and not {"archives", ".runarchive"} & set(p.parts)
    )
    expect(row.locator("[data-label=Files]")).to_have_text(str(files))
    expect(row.locator("a[data-action=download]")).to_have_attribute(
        "href", f"/runs/{run.name}/archive/download/{name}"
    )
    created = datetime.fromisoformat(
        str(row.locator("time").get_attribute("datetime")).replace("Z", "+00:00")
    )
    assert started - timedelta(seconds=2) <= created <= datetime.now(UTC) + timedelta(seconds=2)

    # The status panel got the job's lines live, the bar followed the PROGRESS lines.
    lines = dashboard.log_lines()
    assert _count(lines, f"rq:{job_id} ENQUEUED archive_rq({run.name})") == 1
    assert _count(lines, f"rq:{job_id} STARTED archive_rq({run.name})") == 1
    assert any(line.startswith("Adding ") for line in lines)
    assert _count(lines, f"rq:{job_id} PROGRESS archive {files}/{files} files") == 1
    assert _count(lines, f"Archive ready: {name}") == 1
    assert _count(lines, f"rq:{job_id} TRIGGER   archive ARCHIVE_COMPLETE") == 1
    values = dashboard.progress_values()
    assert values[0] == 0 and values[-1] == 100
    assert values == sorted(values)  # never moves back
    # The label ends on the file count, or on "Done" when the page learnt the end first; the
    # activity log always names the count (test_a_restore_counts_the_files_the_table_shows).
    expect(page.locator("#ra-progress-label")).to_have_text(
        re.compile(rf"{files}/{files} files|^Done$")
    )

    # Job status and times come from polling; the end is handled once, not once per source.
    expect(page.locator("#ra-job-id")).to_have_text(job_id)
    expect(page.locator("#ra-job-status")).to_have_attribute("data-status", "finished")
    start_iso = page.locator("#ra-job-started time").get_attribute("datetime")
    end_iso = page.locator("#ra-job-ended time").get_attribute("datetime")
    assert start_iso and end_iso and start_iso <= end_iso
    page.wait_for_timeout(1500)  # longer than a poll interval: a second finish would show
    assert [e["jobId"] for e in dashboard.finished()] == [job_id]
    expect(page.locator(".alert-success")).to_have_count(1)


def test_the_download_link_serves_a_valid_zip_of_the_run(
    page: Page, run: Path, tmp_path: Path
) -> None:
    dashboard = Dashboard(page, run).open()
    name = dashboard.archive("for download")

    with page.expect_download() as info:
        dashboard.row(name).locator("a[data-action=download]").click()
    download = info.value
    assert download.suggested_filename == name
    saved = tmp_path / name
    download.save_as(saved)

    assert saved.read_bytes() == (run / "archives" / name).read_bytes()
    with zipfile.ZipFile(saved) as archive:
        assert archive.testzip() is None
        assert archive.read("README.md") == (run / "README.md").read_bytes()
        assert archive.read("ron.nodb") == (run / "ron.nodb").read_bytes()
        assert not any(n.startswith("archives/") for n in archive.namelist())


def test_restore_after_confirm_puts_the_run_files_back(page: Page, run: Path) -> None:
    dashboard = Dashboard(page, run).open()
    name = dashboard.archive("before edits")
    readme = (run / "README.md").read_bytes()
    removed = run / "wepp" / "runs" / "p1.run"
    removed_bytes = removed.read_bytes()
    (run / "README.md").write_text("edited after the archive\n")
    removed.unlink()
    (run / "stray.txt").write_text("not in the archive\n")

    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    dashboard.row(name).get_by_role("button", name=re.compile("Restore")).click()
    questions.append(dashboard.confirm_restore())  # the restore confirm is the page's own
    event = dashboard.wait_finished(2)
    assert event["ok"] is True
    assert event["trigger"] == "RESTORE_COMPLETE"
    dashboard.wait_idle()

    assert len(questions) == 1 and name in questions[0]
    assert (run / "README.md").read_bytes() == readme
    assert removed.read_bytes() == removed_bytes
    assert not (run / "stray.txt").exists()
    assert (run / "archives" / name).is_file()
    expect(dashboard.log).to_contain_text(f"Restore complete: {name}")
    expect(page.locator("#ra-job-status")).to_have_attribute("data-status", "finished")
    expect(page.locator(".alert-success")).to_contain_text("Restore complete")


def test_the_undo_banner_puts_back_what_a_restore_replaced(
    page: Page, run: Path, tmp_path: Path
) -> None:
    target = SCREENSHOTS if os.environ.get("RUNARCHIVE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    dashboard = Dashboard(page, run).open()
    name = dashboard.archive("before edits")
    banner = page.locator("#ra-undo")
    expect(banner).to_be_hidden()  # nothing restored yet
    (run / "README.md").write_text("edited after the archive\n")
    (run / "stray.txt").write_text("not in the archive\n")
    edited = snapshot(run, with_dir_times=False)

    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    dashboard.row(name).get_by_role("button", name=re.compile("Restore")).click()
    questions.append(dashboard.confirm_restore())  # the restore confirm is the page's own
    assert dashboard.wait_finished(2)["trigger"] == "RESTORE_COMPLETE"
    dashboard.wait_idle()
    assert not (run / "stray.txt").exists()
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(f"The restore from {name}")
    page.mouse.move(0, 0)
    page.screenshot(path=target / "dashboard-undo.png")

    page.get_by_role("button", name="Undo restore").click()
    event = dashboard.wait_finished(3)
    assert event["ok"] is True and event["trigger"] == "UNDO_COMPLETE", event
    dashboard.wait_idle()
    assert len(questions) == 2 and name in questions[1]
    # Exactly the tree the restore replaced, the stray file and the edit included.
    assert snapshot(run, with_dir_times=False) == edited
    expect(page.locator(".alert-success")).to_contain_text("Undo complete")
    expect(page.locator("#ra-job-status")).to_have_text("undo complete")
    expect(banner).to_be_hidden()  # nothing left to undo


def test_delete_after_confirm_removes_the_archive_from_list_and_disk(page: Page, run: Path) -> None:
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    keep = dashboard.archive("keep me")
    doomed = dashboard.archive("delete me")

    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    dashboard.row(doomed).get_by_role("button", name=re.compile("Delete")).click()

    expect(dashboard.row(doomed)).to_have_count(0)
    assert dashboard.names() == [keep]
    assert len(questions) == 1 and doomed in questions[0]
    assert not (run / "archives" / doomed).exists()
    assert (run / "archives" / keep).is_file()
    expect(page.locator(".alert-success")).to_contain_text(f"Deleted {doomed}")
    expect(dashboard.log).to_contain_text(f"Archive deleted: {doomed}")

    page.once("dialog", lambda dialog: dialog.accept())
    dashboard.row(keep).get_by_role("button", name=re.compile("Delete")).click()
    expect(dashboard.rows).to_have_count(0)
    expect(page.locator("#ra-empty")).to_be_visible()
    assert not (run / "archives" / keep).exists()


def test_dismissing_the_confirm_restores_and_deletes_nothing(page: Page, run: Path) -> None:
    dashboard = Dashboard(page, run).open()
    name = dashboard.archive("stays")
    (run / "README.md").write_text("edited, and the edit stays\n")

    posts: list[str] = []

    def record(request: Any) -> None:
        if request.method == "POST":
            posts.append(request.url)

    page.on("request", record)
    questions: list[str] = []

    def dismiss(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    dashboard.row(name).get_by_role("button", name=re.compile("Restore")).click()
    questions.append(dashboard.dismiss_restore())  # the restore confirm is the page's own
    dashboard.row(name).get_by_role("button", name=re.compile("Delete")).click()
    page.wait_for_timeout(500)

    assert len(questions) == 2
    assert posts == []
    assert (run / "README.md").read_text() == "edited, and the edit stays\n"
    assert (run / "archives" / name).is_file()
    assert dashboard.names() == [name]
    assert len(dashboard.finished()) == 1
    expect(dashboard.root).to_have_attribute("data-busy", "false")


def test_an_api_refusal_is_shown_in_the_alert_area(page: Page, run: Path) -> None:
    dashboard = Dashboard(page, run).open()
    name = dashboard.archive("vanishes")

    dashboard.row(name).get_by_role("button", name=re.compile("Restore")).click()
    expect(dashboard.confirm).to_have_attribute("data-state", "ready")
    (run / "archives" / name).unlink()  # behind the page's back, after the confirm's preview
    page.locator("#ra-confirm-restore").click()

    alert = page.locator(".alert-error")
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text("Could not start the restore")
    expect(alert).to_contain_text(name)  # the API's message, which names the archive
    assert alert.get_attribute("data-code")  # the API's error code
    expect(dashboard.rows).to_have_count(0)  # the list was refreshed
    expect(dashboard.root).to_have_attribute("data-busy", "false")
    assert len(dashboard.finished()) == 1  # no job was started


def _within_viewport(page: Page, locator: Locator) -> bool:
    """Tell whether ``locator`` is wholly on screen, where the user is looking."""
    box = locator.bounding_box()
    size = page.viewport_size
    assert box is not None and size is not None
    return box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


def test_a_row_action_low_on_a_phone_shows_its_outcome_in_that_row(
    browsing: Callable[..., Browsing], make_run: Callable[..., Path], service: Service
) -> None:
    run = make_run(target_bytes=256 * 2**10, files=20)
    for number in range(8):  # enough cards to scroll a phone several screens
        create_archive(run, f"snapshot {number}")
    page = browsing("admin", PHONE).new_page()
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    expect(dashboard.rows).to_have_count(8)
    assert page.evaluate("document.documentElement.scrollHeight") > 2 * PHONE["height"]
    *_, low, lowest = dashboard.names()

    # A restore from the last card: its outcome is at the card, on screen, not at the top.
    files = dashboard.files_of(lowest)
    dashboard.row(lowest).get_by_role("button", name=re.compile("Restore")).click()
    dashboard.confirm_restore()
    assert dashboard.wait_finished(1)["ok"] is True
    dashboard.wait_idle()
    note = dashboard.row(lowest).locator(".row-note")
    expect(note).to_have_text(f"Restore complete: {files} files from {lowest}.")
    assert _within_viewport(page, note)
    assert not _within_viewport(page, page.locator("#ra-alerts"))  # where it used to be only
    expect(page.locator(".alert-success")).to_contain_text("Restore complete")  # still heard

    # A refusal (the host application holds a NoDb lock) is shown and focused at the row.
    with service.nodb_lock(run.name, "ron.nodb"):
        page.once("dialog", lambda dialog: dialog.accept())
        dashboard.row(low).get_by_role("button", name=re.compile("Delete")).click()
        refusal = dashboard.row(low).locator(".row-note")
        expect(refusal).to_have_text(
            "Could not delete the archive: Cannot delete while files are locked: ron.nodb"
        )
        expect(refusal).to_have_attribute("data-kind", "error")
        expect(refusal).to_be_focused()
        assert _within_viewport(page, refusal)
        expect(dashboard.row(lowest).locator(".row-note")).to_have_count(0)  # one note: the last
        assert (run / "archives" / low).is_file()

    # Once the lock is gone the delete goes through; the outcome stays where the card was.
    page.once("dialog", lambda dialog: dialog.accept())
    dashboard.row(low).get_by_role("button", name=re.compile("Delete")).click()
    expect(dashboard.row(low)).to_have_count(0)
    gone = dashboard.note(low)
    expect(gone).to_have_text(f"Deleted {low}.")
    expect(gone).to_be_focused()
    assert _within_viewport(page, gone)
    assert dashboard.names()[-1] == lowest  # in the deleted card's place, above the next one
    assert not (run / "archives" / low).exists()


def test_the_activity_log_speaks_in_sentences_and_the_raw_lines_are_one_toggle_away(
    page: Page, run: Path
) -> None:
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    name = dashboard.archive("readable")
    files = dashboard.files_of(name)
    job_id = page.locator("#ra-job-id").inner_text()

    entries = dashboard.activity.locator(".entry")
    started = entries.filter(has_text="Archive started")
    expect(started).to_have_count(1)
    expect(started.locator("time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    expect(entries.filter(has_text=re.compile(r"^.*Adding \S+"))).to_have_count(1)  # one, moving
    ready = entries.filter(has_text=f"Archive ready: {name} ({files} files, ")
    expect(ready).to_have_count(1)
    assert "rq:" not in dashboard.activity.inner_text()
    assert job_id not in dashboard.activity.inner_text()
    expect(page.locator("#ra-activity-note")).to_have_text(
        re.compile(r"^From the last job \(ended \d\d:\d\d\)$")
    )

    # The raw lines are there, hidden until asked for.
    raw = page.locator("#ra-status-log")
    expect(raw).to_be_hidden()
    page.get_by_text("Show raw status lines").click()
    expect(raw).to_be_visible()
    expect(raw.locator(".line", has_text=f"rq:{job_id} TRIGGER")).to_be_visible()

    # After a reload the replayed lines are said to be the last job's, with when it ended.
    page.reload()
    dashboard.wait_idle()
    dashboard.wait_live()
    expect(page.locator("#ra-progress-label")).to_have_text("No job running")
    expect(dashboard.activity).to_contain_text(f"Archive ready: {name}")
    note = page.locator("#ra-activity-note")
    expect(note).to_be_visible()
    expect(note).to_have_text(re.compile(r"^From the last job \(ended \d\d:\d\d\)$"))
    info = page.request.get(f"/rq/api/jobstatus/{job_id}").json()
    ended = datetime.fromisoformat(info["ended_at"].replace("Z", "+00:00"))
    shown = page.evaluate(
        "iso => new Date(iso).toLocaleTimeString(undefined,"
        " {hour: '2-digit', minute: '2-digit', hour12: false})",
        ended.isoformat(),
    )
    expect(note).to_have_text(f"From the last job (ended {shown})")
    # Replayed lines carry the job's recorded times, not the time of the reload.
    started_at = page.evaluate(
        "iso => new Date(iso).toLocaleTimeString(undefined,"
        " {hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false})",
        info["started_at"],
    )
    expect(entries.filter(has_text="Archive started").locator("time")).to_have_text(started_at)
    assert "rq:" not in dashboard.activity.inner_text()


def test_a_restore_counts_the_files_the_table_shows(page: Page, run: Path) -> None:
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    name = dashboard.archive("to restore")
    files = dashboard.files_of(name)

    dashboard.row(name).get_by_role("button", name=re.compile("Restore")).click()
    dashboard.confirm_restore()
    assert dashboard.wait_finished(2)["ok"] is True
    dashboard.wait_idle()

    expect(page.locator("#ra-progress-label")).to_contain_text(f"restore: {files}/{files} files")
    expect(dashboard.activity).to_contain_text(f"Restore complete: {files} files from {name}")


def test_with_the_server_stopped_the_page_says_offline_and_retrying(
    browser: Browser, tmp_path: Path
) -> None:
    with serving(tmp_path, {"admin": ["--admin"]}) as own:
        run = own.runs_root / "web-offline"
        generate_run(run, seed=1, target_bytes=64 * 2**10, files=10)
        context = browser.new_context(base_url=own.url, viewport=DESKTOP)
        try:
            page = context.new_page()
            log_in(page, "admin")
            dashboard = Dashboard(page, run).open()
            dashboard.wait_live()
            expect(page.locator("#ra-connection-text")).to_have_text("Live")

            own.stop()
            expect(page.locator("#ra-connection-text")).to_have_text(
                "Offline — retrying", timeout=20_000
            )
            expect(dashboard.root).to_have_attribute("data-ws", "offline")
            page.wait_for_timeout(2500)  # several reconnect attempts: no flicker to Connecting…
            expect(page.locator("#ra-connection-text")).to_have_text("Offline — retrying")
        finally:
            context.close()


def _damage_member(archive: Path, member: str) -> None:
    """Flip a byte in the middle of ``member``'s data: the zip still opens and plans (the
    restore confirm's preview passes), the restore's CRC/sha256 check fails on it."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    data = bytearray(archive.read_bytes())
    head = info.header_offset
    name_len, extra_len = (
        int.from_bytes(data[head + 26 : head + 28], "little"),
        int.from_bytes(data[head + 28 : head + 30], "little"),
    )
    data[head + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def test_a_failed_restore_shows_the_stack_trace(page: Page, run: Path) -> None:
    corrupt = create_archive(run).name
    _damage_member(run / "archives" / corrupt, "README.md")
    (run / "README.md").write_text("edited: the restore must extract the damaged README.md\n")
    readme = (run / "README.md").read_bytes()

    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    assert dashboard.names() == [corrupt]
    expect(page.locator("#ra-trace-panel")).to_be_hidden()

    dashboard.row(corrupt).get_by_role("button", name=re.compile("Restore")).click()
    dashboard.confirm_restore()
    event = dashboard.wait_finished(1)
    assert event["ok"] is False
    assert event["trigger"] == "RESTORE_FAILED"
    dashboard.wait_idle()

    (error,) = [line for line in dashboard.log_lines() if line.startswith("Error: ")]
    reason = error.removeprefix("Error: ")
    trace = page.locator("#ra-trace")
    expect(page.locator("#ra-trace-panel")).to_be_visible()
    expect(trace).to_contain_text("Traceback (most recent call last)", timeout=JOB_TIMEOUT_MS)
    expect(trace).to_contain_text("restore_archive_rq")  # the job function's frame
    expect(trace).to_contain_text(reason)  # ... down to the exception that failed it
    expect(page.locator("#ra-job-status")).to_have_attribute("data-status", "failed")
    expect(page.locator(".alert-error")).to_contain_text(f"Restore failed: {reason}")
    assert (run / "README.md").read_bytes() == readme  # a failed restore leaves the run alone
    expect(dashboard.archive_button).to_be_enabled()


def test_the_page_answers_the_server_pings_and_keeps_its_socket(page: Page, run: Path) -> None:
    sockets: list[Any] = []
    frames: list[tuple[str, str]] = []

    def watch(ws: Any) -> None:
        sockets.append(ws)
        ws.on("framereceived", lambda payload: frames.append(("in", str(payload))))
        ws.on("framesent", lambda payload: frames.append(("out", str(payload))))

    page.on("websocket", watch)
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    page.wait_for_timeout(int(PING_INTERVAL * 4500))  # past the server's dead-peer limit

    pings = [f for f in frames if f[0] == "in" and json.loads(f[1]) == {"type": "ping"}]
    pongs = [f for f in frames if f[0] == "out" and json.loads(f[1]) == {"type": "pong"}]
    assert len(pings) >= 3
    assert len(pongs) == len(pings)
    assert len(sockets) == 1 and not sockets[0].is_closed()  # never dropped as a dead peer
    expect(dashboard.root).to_have_attribute("data-ws", "live")


def test_polling_alone_completes_the_job_when_the_websocket_is_refused(
    page: Page, run: Path
) -> None:
    attempts: list[float] = []

    def refuse(ws: Any) -> None:  # what the server does beyond its socket cap
        attempts.append(time.monotonic())
        ws.close(code=1013, reason="too many sockets")

    # page.route does not see websockets; route_web_socket does and answers in the server's stead.
    page.route_web_socket(re.compile(r".*/status/.*"), refuse)
    dashboard = Dashboard(page, run).open()

    dashboard.start_archive("polled")
    event = dashboard.wait_finished(1)
    assert event["ok"] is True
    assert event["via"] == "polling"
    dashboard.wait_idle()
    (name,) = dashboard.names()
    expect(dashboard.row(name).locator("[data-label=Comment]")).to_have_text("polled")
    assert (run / "archives" / name).is_file()
    assert dashboard.log_lines() == []  # nothing came over the socket
    expect(page.locator("#ra-job-status")).to_have_attribute("data-status", "finished")
    expect(page.locator("#ra-job-ended time")).to_have_count(1)

    # It kept trying to connect, backing off rather than looping.
    page.wait_for_timeout(1000)
    assert 2 <= len(attempts) <= 8, attempts


def test_reloading_during_a_job_resumes_watching_it(
    page: Page, make_run: Callable[..., Path]
) -> None:
    run = make_run(target_bytes=40 * 2**20, files=800)
    for copy in range(1, 9):  # ~350 MB of model output: a job long enough to reload during it
        shutil.copytree(run / "wepp" / "output", run / "wepp" / f"output-{copy}")
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()

    dashboard.start_archive("big one")
    expect(page.locator("#ra-job-status")).to_have_attribute("data-status", "started")
    page.wait_for_function("() => document.getElementById('ra-progress').value > 0")
    job_id = page.locator("#ra-job-id").inner_text()
    moving = dashboard.progress_values()[-1]
    assert 0 < moving < 100  # the bar moves during the job

    page.reload()
    expect(dashboard.root).to_have_attribute("data-job-id", job_id)
    expect(page.locator("#ra-job-id")).to_have_text(job_id)
    expect(dashboard.archive_button).to_be_disabled()
    expect(dashboard.log).to_contain_text(f"rq:{job_id} STARTED")  # replayed on connect
    assert dashboard.finished() == []

    event = dashboard.wait_finished(1)
    assert event["jobId"] == job_id and event["ok"] is True
    dashboard.wait_idle()
    expect(dashboard.archive_button).to_be_enabled()
    (name,) = dashboard.names()
    expect(dashboard.row(name).locator("[data-label=Comment]")).to_have_text("big one")
    assert dashboard.progress_values()[-1] == 100
    page.wait_for_timeout(1200)
    assert len(dashboard.finished()) == 1


def test_the_cancel_button_shows_while_a_job_runs_and_cancels_it_leaving_no_archive(
    page: Page, make_run: Callable[..., Path]
) -> None:
    run = make_run(target_bytes=40 * 2**20, files=800)
    for copy in range(1, 9):  # ~350 MB: an archive long enough to cancel while it runs
        shutil.copytree(run / "wepp" / "output", run / "wepp" / f"output-{copy}")
    dashboard = Dashboard(page, run).open()
    dashboard.wait_live()
    cancel = page.locator("#ra-cancel-btn")
    expect(cancel).to_be_hidden()  # no job, no button

    dashboard.start_archive("to be canceled")
    expect(page.locator("#ra-job-status")).to_have_attribute("data-status", "started")
    page.wait_for_function("() => document.getElementById('ra-progress').value > 0")
    expect(cancel).to_be_visible()
    expect(cancel).to_be_enabled()
    cancel.click()

    event = dashboard.wait_finished(1)
    assert event["ok"] is False and event["trigger"] == "ARCHIVE_FAILED", event
    # The user's own act, not a crash: said as such, no failure alert, no stack trace.
    canceled = page.locator("#ra-alerts [data-code=job_canceled]")
    expect(canceled).to_have_text(re.compile(r"Archive canceled \(canceled by admin\)\."))
    expect(page.locator("#ra-alerts [data-code=job_failed]")).to_have_count(0)
    expect(page.locator("#ra-job-status")).to_have_text("archive canceled")
    expect(page.locator("#ra-progress-label")).to_have_text("Canceled")
    expect(page.locator("#ra-trace-panel")).to_be_hidden()
    expect(dashboard.activity).to_contain_text("Canceled by admin")
    expect(cancel).to_be_hidden()
    dashboard.wait_idle()
    expect(dashboard.archive_button).to_be_enabled()
    expect(page.locator("#ra-empty")).to_be_visible()
    assert archive_files(run / "archives") == []  # no archive, no temp file
    assert _count(dashboard.log_lines(), " TRIGGER ") == 1


def test_a_comment_with_markup_is_shown_as_text(page: Page, run: Path) -> None:
    markup = "<img src=x onerror=window.__xss=1>"
    dashboard = Dashboard(page, run).open()
    name = dashboard.archive(markup)

    cell = dashboard.row(name).locator("[data-label=Comment]")
    expect(cell).to_have_text(markup)
    assert cell.evaluate("td => td.children.length") == 0
    assert page.locator("#ra-archive-rows img").count() == 0
    page.reload()
    Dashboard(page, run).wait_idle()
    expect(cell).to_have_text(markup)
    assert page.evaluate("window.__xss") is None


def test_an_archive_holding_links_shows_how_many_and_a_followed_one_shows_none(
    page: Page, run: Path
) -> None:
    os.symlink("/etc/hostname", run / "outside")
    links = sum(os.path.islink(os.path.join(d, n)) for d, ds, fs in os.walk(run) for n in ds + fs)
    held = create_archive(run, "links kept").name
    time.sleep(1.05)  # names carry the second
    os.unlink(run / "outside")
    followed = create_archive(run, "links followed", links="follow").name
    dashboard = Dashboard(page, run).open()
    expect(dashboard.row(held).locator(".cell-name .badge")).to_have_text(
        f"{links} link{'s' if links != 1 else ''}"
    )
    expect(dashboard.row(followed).locator(".cell-name .badge")).to_have_count(0)


def test_a_reader_of_a_public_run_can_download_but_not_change_anything(
    browsing: Callable[..., Browsing], make_run: Callable[..., Path]
) -> None:
    run = make_run(public=True)
    name = create_archive(run, "made by the owner").name

    page = browsing("bob").new_page()
    dashboard = Dashboard(page, run).open()
    expect(dashboard.rows).to_have_count(1)
    row = dashboard.row(name)
    expect(row.locator("[data-label=Comment]")).to_have_text("made by the owner")
    link = row.locator("a[data-action=download]")
    expect(link).to_be_visible()
    response = page.request.get(str(link.get_attribute("href")))  # with bob's session cookie
    assert response.status == 200
    assert response.body() == (run / "archives" / name).read_bytes()
    expect(row.locator("button[data-action]")).to_have_count(0)  # no Restore, no Delete
    expect(row.locator("button")).to_have_text(["Browse"])  # looking inside is reading
    expect(page.locator("#ra-archive-form")).to_have_count(0)
    expect(page.locator("#ra-cancel-btn")).to_have_count(0)  # no Cancel for readers either
    expect(page.locator("#ra-read-only-note")).to_be_visible()


def _wait_ended(page: Page) -> None:
    """Wait until the job panel and the activity label show when the job ended."""
    expect(page.locator("#ra-job-ended time")).to_have_count(1)
    expect(page.locator("#ra-activity-note")).to_contain_text("(ended ")


def test_the_dashboard_reads_well_mid_job_after_success_after_a_refusal_and_on_a_phone(
    browsing: Callable[..., Browsing],
    make_run: Callable[..., Path],
    service: Service,
    tmp_path: Path,
) -> None:
    target = SCREENSHOTS if os.environ.get("RUNARCHIVE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    # The demo's generator and seed (`serve --demo`), larger, so a restore lasts a few seconds:
    # many files, since the restore's worker processes now extract 3,000 in well under the
    # 0.5 s between two progress lines, and the page must be seen mid-job.
    run = make_run(owner="alice", seed=7, target_bytes=120 * 2**20, files=20000)
    shots = ["dashboard.png", "dashboard-mid-job.png", "dashboard-success.png"]
    shots += ["dashboard-refusal.png", "dashboard-phone.png"]

    desktop = browsing("alice", DESKTOP).new_page()
    dashboard = Dashboard(desktop, run).open()
    dashboard.wait_live()
    baseline = dashboard.archive("baseline, before calibration")
    latest = dashboard.archive("after soil recalibration")
    desktop.mouse.move(0, 0)  # no hover colour on the last button clicked
    desktop.screenshot(path=target / "dashboard.png", full_page=True)

    # Mid-job: the model output is gone and comes back from the baseline.
    shutil.rmtree(run / "wepp" / "output")
    dashboard.row(baseline).get_by_role("button", name=re.compile("Restore")).click()
    dashboard.confirm_restore()
    desktop.wait_for_function(
        "() => { const v = document.getElementById('ra-progress').value; return v > 0 && v < 100 }",
        timeout=JOB_TIMEOUT_MS,
    )
    expect(dashboard.note(baseline)).to_have_text(f"Restore from {baseline} started…")
    desktop.mouse.move(0, 0)
    desktop.screenshot(path=target / "dashboard-mid-job.png", full_page=True)

    assert dashboard.wait_finished(3)["ok"] is True
    dashboard.wait_idle()
    files = dashboard.files_of(baseline)
    expect(dashboard.note(baseline)).to_have_text(
        f"Restore complete: {files} files from {baseline}."
    )
    assert (run / "wepp" / "output").is_dir()
    _wait_ended(desktop)
    desktop.mouse.move(0, 0)
    desktop.screenshot(path=target / "dashboard-success.png", full_page=True)

    with service.nodb_lock(run.name, "ron.nodb"):
        dashboard.row(latest).get_by_role("button", name=re.compile("Restore")).click()
        # The confirm's preview is refused: it says why and offers no Restore.
        expect(dashboard.confirm).to_have_attribute("data-state", "refused")
        expect(desktop.locator("#ra-confirm-restore")).to_be_hidden()
        assert "Cannot restore while files are locked" in dashboard.dismiss_restore()
        expect(dashboard.note(latest)).to_contain_text("Cannot restore while files are locked")
        desktop.mouse.move(0, 0)
        desktop.screenshot(path=target / "dashboard-refusal.png", full_page=True)

    phone = browsing("alice", PHONE).new_page()
    small = Dashboard(phone, run).open()
    small.wait_live()
    expect(small.rows).to_have_count(2)
    # No sideways scrolling; each archive is a card (rows as blocks, column headers hidden).
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert small.rows.first.evaluate("tr => getComputedStyle(tr).display") == "block"
    assert phone.locator("#ra-archives thead").evaluate("h => h.offsetHeight <= 1")
    for button in small.rows.first.locator("a, button").all():
        box = button.bounding_box()
        assert box is not None and box["height"] >= 40 and box["x"] + box["width"] <= 390
    small.row(latest).get_by_role("button", name=re.compile("Restore")).click()
    small.confirm_restore()
    assert small.wait_finished(1)["ok"] is True
    small.wait_idle()
    expect(small.note(latest)).to_contain_text("Restore complete")
    _wait_ended(phone)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.screenshot(path=target / "dashboard-phone.png", full_page=True)
    for shot in shots:
        assert (target / shot).stat().st_size > 10_000, shot
