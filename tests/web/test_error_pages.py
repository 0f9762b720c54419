"""Errors answer what the client asked for: a styled page to browsers, JSON to the API.

A browser (``Accept`` preferring ``text/html`` over ``application/json``) gets the error page,
which extends the layout: the site's stylesheet, the status, the message and a link back. Any
other client — ``Accept: application/json``, ``*/*`` or no ``Accept`` at all — gets the API's
``{"error": {"code", "message"}}``. A throttled login answers the login page itself, as HTML,
saying in words how long to wait.
"""

from __future__ import annotations

import re

import pytest

from tests.support.web import WebEnv

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
API_ACCEPTS = [{"Accept": "application/json"}, {"Accept": "*/*"}, {}]
STYLESHEET = '<link rel="stylesheet" href="/static/css/app.css">'


def assert_error_page(response: object, status: int, message: str) -> str:
    """Check a styled error page: status, HTML, the layout's stylesheet, message, link back."""
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response.mimetype == "text/html"  # type: ignore[attr-defined]
    page: str = response.get_data(as_text=True)  # type: ignore[attr-defined]
    assert STYLESHEET in page
    assert 'class="site-header"' in page  # the layout's header: the page extends base.html
    assert f'<p class="error-status">{status}</p>' in page
    assert message in page
    assert re.search(r'<a class="button[^"]*" href="/[^"]*">', page)
    return page


def assert_json_error(response: object, status: int, code: str) -> None:
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response.mimetype == "application/json"  # type: ignore[attr-defined]
    body = response.get_json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_a_browser_hitting_an_unknown_url_gets_the_styled_not_found_page(web: WebEnv) -> None:
    response = web.as_role("anonymous").get("/no/such/page", headers=BROWSER)
    page = assert_error_page(response, 404, "Not Found")
    assert "<title>Not Found · runarchive</title>" in page
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("accept", API_ACCEPTS, ids=["json", "any", "none"])
def test_an_api_client_hitting_an_unknown_url_gets_json(
    web: WebEnv, accept: dict[str, str]
) -> None:
    response = web.as_role("anonymous").get("/no/such/page", headers=accept)
    assert_json_error(response, 404, "not_found")


def test_a_browser_refused_a_run_gets_the_styled_forbidden_page(web: WebEnv) -> None:
    run = web.new_run()
    other = web.as_role("other")
    dashboard = other.get(f"/runs/{run.runid}/archive", headers=BROWSER)
    assert_error_page(dashboard, 403, f"You may not read run {run.runid}.")
    listing = other.get(f"/runs/{run.runid}/archive/list", headers=BROWSER)
    assert_error_page(listing, 403, f"You may not read run {run.runid}.")


@pytest.mark.parametrize("accept", API_ACCEPTS, ids=["json", "any", "none"])
def test_an_api_client_refused_a_run_gets_json(web: WebEnv, accept: dict[str, str]) -> None:
    run = web.new_run()
    response = web.as_role("other").get(f"/runs/{run.runid}/archive/list", headers=accept)
    assert_json_error(response, 403, "forbidden")


def test_an_anonymous_browser_on_an_api_url_gets_a_page_with_a_login_link(web: WebEnv) -> None:
    run = web.new_run()
    response = web.as_role("anonymous").get(f"/runs/{run.runid}/archive/list", headers=BROWSER)
    page = assert_error_page(response, 401, "Log in")
    assert f'href="/login?next=/runs/{run.runid}/archive/list"' in page


@pytest.mark.parametrize("accept", API_ACCEPTS, ids=["json", "any", "none"])
def test_an_anonymous_api_client_gets_json_401(web: WebEnv, accept: dict[str, str]) -> None:
    run = web.new_run()
    response = web.as_role("anonymous").get(f"/runs/{run.runid}/archive/list", headers=accept)
    assert_json_error(response, 401, "unauthorized")


def test_a_browser_sending_a_bad_run_id_gets_the_styled_bad_request_page(web: WebEnv) -> None:
    response = web.as_role("owner").get("/runs/bad%20id/archive/list", headers=BROWSER)
    assert_error_page(response, 400, "Invalid run id")


@pytest.mark.parametrize("accept", API_ACCEPTS, ids=["json", "any", "none"])
def test_an_api_client_sending_a_bad_run_id_gets_json_400(
    web: WebEnv, accept: dict[str, str]
) -> None:
    response = web.as_role("owner").get("/runs/bad%20id/archive/list", headers=accept)
    assert_json_error(response, 400, "invalid_input")


def test_a_page_url_answers_its_error_as_html_even_without_accept(web: WebEnv) -> None:
    run = web.new_run()
    response = web.as_role("other").get(f"/runs/{run.runid}/archive")
    assert_error_page(response, 403, f"You may not read run {run.runid}.")
