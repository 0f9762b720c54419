"""Error pages in a real browser: Chromium (Debian's, through Playwright) on the module's app.

The app is the real one from ``create_app`` on a live werkzeug server; the user logs in through
the form. What is checked is what the browser renders: the stylesheet applied (computed styles
that differ from Chromium's defaults), not just the markup.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

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


def computed(page: Page, selector: str, prop: str) -> str:
    value: str = page.eval_on_selector(
        selector, "(el, prop) => getComputedStyle(el).getPropertyValue(prop)", prop
    )
    return value


def test_the_forbidden_page_is_styled_like_the_rest_of_the_site(web: WebEnv, page: Page) -> None:
    run = web.new_run()  # alice's; bob may not read it
    page.goto("/login")
    page.fill("#username", "bob")
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
    response = page.goto(f"/runs/{run.runid}/archive")
    assert response is not None and response.status == 403
    expect(page.locator("#error-message")).to_have_text(f"You may not read run {run.runid}.")
    expect(page.locator(".site-header")).to_be_visible()
    # Chromium's defaults: body margin 8px, serif font, a transparent header; ours differ.
    assert computed(page, "body", "margin-top") == "0px"
    assert "serif" not in computed(page, "body", "font-family").split(",")[0]
    assert computed(page, ".error-card", "border-top-style") == "solid"
    assert computed(page, ".error-status", "font-size") == "48px"
    back = page.locator(".error-card a.button")
    expect(back).to_have_text("Your runs")
    back.click()
    expect(page.locator("h1")).to_have_text("Your runs")


def test_a_browser_on_an_unknown_url_sees_the_styled_not_found_page(page: Page) -> None:
    response = page.goto("/no/such/page")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page.locator("#error-title")).to_have_text("Not Found")
    assert computed(page, "body", "margin-top") == "0px"
