"""Pages of a live test server, logged in, watched for what a user would never see.

Every dashboard browser test wants the same thing: a fresh browser context per page (cookies
apart), the login form filled as a user does, and the test failed when a page raised an
uncaught error or broke its Content Security Policy (both invisible in a screenshot).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, BrowserContext, Page

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

Opener = Callable[..., Page]


@contextmanager
def logged_in_pages(
    browser: Browser,
    port: int,
    password: str,
    *,
    timeout_ms: int = 15_000,
    init_script: str | None = None,
    accept_downloads: bool = False,
) -> Iterator[Opener]:
    """Yield ``open_(user="alice", viewport=DESKTOP) -> Page``; on a clean exit, fail if any
    page opened raised or broke its CSP."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_(user: str = "alice", viewport: dict[str, int] = DESKTOP) -> Page:
        context = browser.new_context(
            base_url=f"http://127.0.0.1:{port}", viewport=viewport,
            accept_downloads=accept_downloads,
        )  # fmt: skip
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
        if init_script is not None:
            page.add_init_script(init_script)
        page.goto("/login")
        page.fill("#username", user)
        page.fill("#password", password)
        with page.expect_navigation():
            page.click("form[action='/login'] button[type=submit]")
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()
    assert errors == []
