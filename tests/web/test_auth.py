"""Logging in and out, sessions, API tokens, CSRF and login throttling."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from runarchive.web.db import db
from runarchive.web.models import ApiToken, User
from runarchive.web.throttle import human_duration
from tests.support.web import PASSWORD, WebEnv, csrf_of, login


def test_login_page_carries_a_csrf_token_and_the_next_target(web: WebEnv) -> None:
    response = web.app.test_client().get("/login?next=/runs/x/archive")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'name="csrf-token"' in page
    assert 'value="/runs/x/archive"' in page


def test_it_logs_in_with_the_right_password_and_goes_to_next(web: WebEnv) -> None:
    client = web.app.test_client()
    token = csrf_of(client)
    response = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "/healthz"},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/healthz"
    cookie = response.headers["Set-Cookie"]
    assert "runarchive_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert client.get("/").status_code == 200


def test_it_refuses_a_wrong_password_with_401(web: WebEnv) -> None:
    client = web.app.test_client()
    token = csrf_of(client)
    response = client.post(
        "/login", data={"username": "bob", "password": "nope-nope-nope", "csrf_token": token}
    )
    assert response.status_code == 401
    assert "Wrong user name or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # still anonymous


def test_it_never_redirects_off_site_after_login(web: WebEnv) -> None:
    client = web.app.test_client()
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil", "javascript:x"):
        token = csrf_of(client)
        response = client.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": target},
        )
        assert response.status_code == 302
        assert response.headers["Location"] == "/", target
        client.post("/logout", data={"csrf_token": csrf_of(client, "/")})


def test_login_without_csrf_token_is_refused_with_400(web: WebEnv) -> None:
    client = web.app.test_client()
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_logout_ends_the_session_and_needs_csrf(web: WebEnv) -> None:
    client = web.app.test_client()
    token = login(client, "alice")
    assert client.post("/logout").status_code == 400  # no token: still logged in
    assert client.get("/").status_code == 200
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_a_page_without_a_csrf_token_is_told_what_to_add_and_can_fetch_one(web: WebEnv) -> None:
    # A host page from before WEPPcloud's csrf_bootstrap.js posts with the session alone.
    run = web.new_run()
    browser = web.fresh_browser("alice")
    url = f"/runs/{run.runid}/rq/api/delete-archive"
    refused = browser.client.post(url, json={"archive_name": run.archive})
    assert refused.status_code == 400
    message = refused.get_json()["error"]["message"]
    assert "X-CSRFToken" in message and "GET /csrf-token" in message
    assert 'meta name="csrf-token"' in message and "Authorization: Bearer" in message
    assert (run.path / "archives" / str(run.archive)).is_file()

    got = browser.client.get("/csrf-token")
    assert got.status_code == 200 and got.headers["Cache-Control"] == "no-store"
    assert "Access-Control-Allow-Origin" not in got.headers
    token = got.get_json()["csrf_token"]
    done = browser.client.post(
        url, json={"archive_name": run.archive}, headers={"X-CSRFToken": token}
    )
    assert done.status_code == 200
    assert not (run.path / "archives" / str(run.archive)).exists()


def test_json_post_from_a_session_needs_the_csrf_header(web: WebEnv) -> None:
    run = web.new_run()
    browser = web.fresh_browser("alice")
    url = f"/runs/{run.runid}/rq/api/delete-archive"
    refused = browser.client.post(url, json={"archive_name": run.archive})
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "csrf_failed"
    assert (run.path / "archives" / str(run.archive)).is_file()
    wrong = browser.client.post(
        url, json={"archive_name": run.archive}, headers={"X-CSRFToken": "forged"}
    )
    assert wrong.status_code == 400
    done = browser.post(url, json={"archive_name": run.archive})
    assert done.status_code == 200
    assert not (run.path / "archives" / str(run.archive)).exists()


def test_an_api_token_authenticates_without_session_or_csrf(web: WebEnv) -> None:
    run = web.new_run()
    client = web.token_client("owner")
    listed = client.get(f"/runs/{run.runid}/archive/list")
    assert listed.status_code == 200
    assert "Set-Cookie" not in listed.headers
    deleted = client.post(
        f"/runs/{run.runid}/rq/api/delete-archive", json={"archive_name": run.archive}
    )
    assert deleted.status_code == 200
    assert deleted.get_json() == {"deleted": run.archive}


def test_an_unknown_token_is_401_even_with_a_valid_session(web: WebEnv) -> None:
    run = web.new_run()
    browser = web.fresh_browser("alice")
    response = browser.get(
        f"/runs/{run.runid}/archive/list", headers={"Authorization": "Bearer ra_forged"}
    )
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    empty = browser.get(f"/runs/{run.runid}/archive/list", headers={"Authorization": "Bearer "})
    assert empty.status_code == 401


def test_tokens_are_stored_hashed(web: WebEnv) -> None:
    token = web.tokens["owner"]
    with web.app.app_context():
        rows = db().session.scalars(select(ApiToken)).all()
        hashes = {row.token_hash for row in rows}
        users = db().session.scalars(select(User)).all()
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert token not in hashes
    assert all(u.password_hash != PASSWORD and u.password_hash.startswith("scrypt:") for u in users)
    raw = Path(web.root / "accounts.sqlite3").read_bytes()
    assert token.encode() not in raw and PASSWORD.encode() not in raw
    with sqlite3.connect(web.root / "accounts.sqlite3") as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM users")}
    assert names == {"alice", "bob", "root"}


def test_repeated_failed_logins_are_throttled_with_429(web: WebEnv) -> None:
    client = web.app.test_client()
    for _ in range(3):  # the module's limit
        token = csrf_of(client)
        response = client.post(
            "/login", data={"username": "root", "password": "guess-guess", "csrf_token": token}
        )
        assert response.status_code == 401
    token = csrf_of(client)
    refused = client.post(
        "/login", data={"username": "root", "password": PASSWORD, "csrf_token": token}
    )
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "Too many failed logins" in refused.get_data(as_text=True)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (297, "5 minutes"),
        (300, "5 minutes"),
        (60, "1 minute"),
        (61, "2 minutes"),
        (40, "40 seconds"),
        (1, "1 second"),
        (3600, "1 hour"),
        (5400, "2 hours"),
    ],
)
def test_a_wait_is_said_in_words_rounded_up(seconds: int, words: str) -> None:
    assert human_duration(seconds) == words


def test_a_throttled_login_shows_the_login_page_as_html_saying_when_to_retry(web: WebEnv) -> None:
    client = web.app.test_client()
    for _ in range(3):  # the module's limit
        token = csrf_of(client)
        wrong = client.post(
            "/login", data={"username": "mallory", "password": "guess-guess", "csrf_token": token}
        )
        assert wrong.status_code == 401
    token = csrf_of(client)
    refused = client.post(
        "/login", data={"username": "mallory", "password": "guess-again", "csrf_token": token}
    )
    assert refused.status_code == 429
    assert refused.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    page = refused.get_data(as_text=True)
    assert 'href="/static/css/app.css"' in page and 'id="username"' in page  # the form
    error = re.search(
        r'<p class="alert alert-error" role="alert" id="login-error">([^<]*)</p>', page
    )
    assert error is not None
    # The module's window is 60 s: "in 1 minute", or seconds once the clock has moved on.
    assert re.fullmatch(
        r"Too many failed logins; try again in (1 minute|[1-5]?[0-9] seconds?)\.", error.group(1)
    ), error.group(1)
