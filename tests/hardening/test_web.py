"""Web hardening: body limits, security headers, cookies, throttling, tracebacks, websockets.

Everything runs against the product's app (``create_app``) with real accounts on a real Redis;
websocket checks use a real threaded server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive.jobs import Settings
from runarchive.web import create_app, shutdown
from runarchive.web.settings import WebSettings
from runarchive.web.websocket import RELAY
from tests.support.clients import Peer
from tests.support.waiting import wait_until
from tests.support.web import WS_HEADERS, LiveServer, WebEnv, csrf_of, upgrade_status
from tests.support.workers import Workers

BIG = b"x" * (1 << 20)


def bearer(web: WebEnv, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {web.tokens[role]}"}


# --- request size -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/runs/{runid}/rq/api/archive", "/login"])
def test_a_huge_body_is_refused_with_413_and_starts_nothing(web: WebEnv, path: str) -> None:
    run = web.new_run()
    client = web.token_client("owner")
    response = client.post(
        path.format(runid=run.runid), data=BIG, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    if path == "/login":  # a page: a short HTML message
        assert "413" in response.get_data(as_text=True)
    else:
        assert response.get_json()["error"]["code"] == "request_entity_too_large"
    assert web.ctx.clients.data.exists(web.ctx.keys.slot(run.runid)) == 0


def test_a_huge_form_comment_is_refused_before_any_job(web: WebEnv) -> None:
    run = web.new_run()
    response = web.token_client("owner").post(
        f"/runs/{run.runid}/rq/api/archive", data={"comment": "c" * (200 * 1024)}
    )
    assert response.status_code == 413
    listing = web.as_role("owner").get(f"/runs/{run.runid}/archive/list").get_json()
    assert listing["in_progress"] is False
    assert [a["name"] for a in listing["archives"]] == [run.archive]


# --- headers and pages ------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    for response in (
        owner.get(f"/runs/{run.runid}/archive"),
        owner.get(f"/runs/{run.runid}/archive/list"),
        web.as_role("anonymous").get("/login"),
        web.as_role("anonymous").get("/no/such/page"),
        web.as_role("anonymous").get("/healthz"),
    ):
        csp = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert directives["frame-ancestors"] == "'none'"
        assert directives["connect-src"] == "'self'"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"


def test_pages_hold_no_inline_script_or_event_handler(web: WebEnv) -> None:
    run = web.new_run()
    pages = [
        web.as_role("owner").get(f"/runs/{run.runid}/archive").get_data(as_text=True),
        web.as_role("owner").get("/").get_data(as_text=True),
        web.as_role("anonymous").get("/login").get_data(as_text=True),
    ]
    for html in pages:
        for tag, body in re.findall(r"(<script\b[^>]*>)(.*?)</script>", html, re.S | re.I):
            assert 'src="' in tag or ('type="application/json"' in tag), tag
            if 'src="' in tag:
                assert body.strip() == ""
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), "inline event handler"
        assert "javascript:" not in html.lower()


def test_a_hostile_run_name_is_never_reflected_into_a_page(web: WebEnv) -> None:
    page = web.as_role("owner").get("/runs/%3Cscript%3Ealert(1)%3Cb%3E/archive")
    assert page.status_code == 400
    assert page.mimetype == "text/html"
    assert "<script>alert(1)" not in page.get_data(as_text=True)
    assert "&lt;script&gt;alert(1)" in page.get_data(as_text=True)
    # JSON errors quote the name, but as JSON that a browser will not sniff into HTML
    api = web.as_role("owner").get("/runs/%3Cscript%3Ealert(1)%3Cb%3E/archive/list")
    assert api.status_code == 400
    assert api.mimetype == "application/json"
    assert api.headers["X-Content-Type-Options"] == "nosniff"


# --- cookies ----------------------------------------------------------------------------------


def _session_cookie(set_cookies: list[str]) -> str:
    found = [c for c in set_cookies if c.startswith("runarchive_session=")]
    assert found, set_cookies
    return found[0]


def test_the_session_cookie_is_httponly_and_samesite(web: WebEnv) -> None:
    client = web.app.test_client()
    response = client.get("/login")
    cookie = _session_cookie(response.headers.getlist("Set-Cookie"))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert "httponly" in attrs
    assert "samesite=lax" in cookie.lower()
    assert "secure" not in attrs  # not configured for TLS


def test_the_session_cookie_is_secure_when_configured(tmp_path: Path, redis_url: str) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    app = create_app(
        {
            "TESTING": True,
            "JOBS_SETTINGS": Settings(redis_url=redis_url, runs_root=runs, data_dir=tmp_path),
            "WEB_SETTINGS": WebSettings(
                database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", secure_cookies=True
            ),
        }
    )
    try:
        response = app.test_client().get("/login", base_url="https://localhost")
        cookie = _session_cookie(response.headers.getlist("Set-Cookie"))
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"secure", "httponly"} <= attrs
    finally:
        shutdown(app)


# --- login throttling -------------------------------------------------------------------------


def test_repeated_failed_logins_are_throttled_with_429(web: WebEnv) -> None:
    client = web.app.test_client()
    token = csrf_of(client)
    form = {"username": "mallory", "password": "guess", "csrf_token": token}
    codes = [client.post("/login", data=form).status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    refused = client.post("/login", data=form)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    # another account from the same address is not locked out by mallory's failures
    other = web.app.test_client()
    form2 = {"username": "nobody-else", "password": "x", "csrf_token": csrf_of(other)}
    assert other.post("/login", data=form2).status_code == 401


# --- tracebacks -------------------------------------------------------------------------------


def test_tracebacks_reach_only_users_with_write_access(web: WebEnv, workers: Workers) -> None:
    run = web.new_run(public=True)
    (run.path / "archives" / f"{run.runid}.20240102T030405Z.zip").write_bytes(b"PK\x03\x04junk")
    owner = web.token_client("owner")
    job_id = owner.post(
        f"/runs/{run.runid}/rq/api/restore-archive",
        json={"archive_name": f"{run.runid}.20240102T030405Z.zip"},
    ).get_json()["job_id"]
    assert workers.burst() == 0
    info = owner.get(f"/rq/api/jobinfo/{job_id}").get_json()
    assert info["trigger"] == "RESTORE_FAILED"
    assert "Traceback" in info["exc_info"]
    for role in ("anonymous", "other"):
        client = web.as_role(role)
        status = client.get(f"/rq/api/jobstatus/{job_id}")
        assert status.status_code == 200  # a PUBLIC run: readers may poll
        assert "exc_info" not in status.get_json()
        assert "Traceback" not in status.get_data(as_text=True)
        assert str(web.runs_root) not in status.get_data(as_text=True)
        refused = client.get(f"/rq/api/jobinfo/{job_id}")
        assert refused.status_code in (401, 403)
        assert "Traceback" not in refused.get_data(as_text=True)


def test_an_unexpected_error_shows_no_details(web: WebEnv) -> None:
    # a websocket URL fetched without an upgrade, a wrong method, a bad job id: handled paths
    client = web.app.test_client()
    for response in (
        client.get("/status/x:archive"),
        client.put("/login"),
        client.post("/runs/r/rq/api/archive", data="{", content_type="application/json"),
        client.get("/rq/api/jobstatus/..%2F..%2Fetc"),
    ):
        text = response.get_data(as_text=True)
        assert response.status_code < 500
        assert "Traceback" not in text and 'File "' not in text


# --- websockets -------------------------------------------------------------------------------


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    try:
        yield made
    finally:
        for peer in made:
            peer.close()


def test_a_cross_origin_websocket_upgrade_is_refused(web: WebEnv, live: LiveServer) -> None:
    run = web.new_run()
    for origin in ("http://evil.example", f"http://127.0.0.1:{live.port}.evil.example", "null"):
        status, body = upgrade_status(live, run.runid, {**bearer(web, "owner"), "Origin": origin})
        assert status == 403, origin
        assert body["error"]["code"] == "forbidden"


def test_a_same_origin_websocket_is_accepted(
    web: WebEnv, live: LiveServer, peers: list[Peer]
) -> None:
    run = web.new_run()
    # simple_websocket sends ``Host: 127.0.0.1`` (no port); the origin must match the Host
    peer = Peer(live.ws_url(run.runid), {**bearer(web, "owner"), "Origin": "http://127.0.0.1"})
    peers.append(peer)
    peer.wait_for(lambda f: f["type"] == "ping")


def test_one_user_cannot_hold_more_than_the_per_user_socket_cap(
    web: WebEnv, live: LiveServer, peers: list[Peer]
) -> None:
    run = web.new_run(public=True)
    relay = web.app.extensions[RELAY]
    wait_until(lambda: relay.sockets == 0, timeout=5)
    cap = relay.max_per_owner
    relay.max_per_owner = 2
    try:
        for _ in range(2):
            peers.append(Peer(live.ws_url(run.runid), bearer(web, "owner")))
        status, body = upgrade_status(live, run.runid, bearer(web, "owner"))
        assert status == 503
        assert body["error"]["code"] == "too_many_sockets"
        # another user (and an anonymous viewer) still get a socket: the cap is per user
        other = Peer(live.ws_url(run.runid), bearer(web, "admin"))
        peers.append(other)
        other.wait_for(lambda f: f["type"] == "ping")
        anon = Peer(live.ws_url(run.runid), {})
        peers.append(anon)
        anon.wait_for(lambda f: f["type"] == "ping")
        # closing one of the owner's sockets gives the slot back
        peers[0].close()
        wait_until(lambda: relay.sockets == 3, timeout=5)
        again = Peer(live.ws_url(run.runid), bearer(web, "owner"))
        peers.append(again)
        again.wait_for(lambda f: f["type"] == "ping")
    finally:
        relay.max_per_owner = cap


def test_a_websocket_without_credentials_on_a_private_run_is_refused(
    web: WebEnv, live: LiveServer
) -> None:
    run = web.new_run()
    status, _ = upgrade_status(live, run.runid, {})
    assert status == 401


def test_an_upgrade_on_a_server_without_websockets_is_a_503_not_an_internal_error(
    web: WebEnv,
) -> None:
    run = web.new_run()
    relay = web.app.extensions[RELAY]
    wait_until(lambda: relay.sockets == 0, timeout=10)  # earlier tests' sockets are closed
    # the WSGI test client hands the app no socket, like a server without websocket support
    response = web.token_client("owner").get(f"/status/{run.runid}:archive", headers=WS_HEADERS)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "websocket_unavailable"
    assert relay.sockets == 0  # refused before a socket was counted
