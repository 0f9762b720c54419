"""The status websocket against a real server: admission, replay, live lines, heartbeat, cap.

Clients are ``simple_websocket`` clients on a real threaded werkzeug server running the
module's app; lines are published through the jobs layer's real status stream.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive.web.websocket import RELAY, lines_to_send
from tests.support.clients import Peer
from tests.support.waiting import wait_until
from tests.support.web import LiveServer, WebEnv, login, upgrade_status


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    try:
        yield made
    finally:
        for peer in made:
            peer.close()


def connect(live: LiveServer, web: WebEnv, runid: str, peers: list[Peer], role: str = "owner",
            since: int | None = 0, **headers: str) -> Peer:  # fmt: skip
    """A peer asking for every retained line (``since=0``) unless told otherwise."""
    url = live.ws_url(runid) + (f"?since={since}" if since is not None else "")
    peer = Peer(url, {"Authorization": f"Bearer {web.tokens[role]}", **headers})
    peers.append(peer)
    return peer


def test_since_zero_replays_retained_lines_then_relays_new_ones(
    web: WebEnv, live: LiveServer, peers: list[Peer]
) -> None:
    run = web.new_run()
    stream = web.ctx.stream(run.runid)
    stream.publish("rq:j1 ENQUEUED archive_rq(x)")
    stream.publish("Adding a.txt")
    peer = connect(live, web, run.runid, peers)
    peer.wait_for(lambda f: f.get("data") == "Adding a.txt")
    stream.publish("rq:j1 TRIGGER   archive ARCHIVE_COMPLETE")
    peer.wait_for(lambda f: "TRIGGER" in f.get("data", ""))
    assert peer.lines() == [
        "rq:j1 ENQUEUED archive_rq(x)",
        "Adding a.txt",
        "rq:j1 TRIGGER   archive ARCHIVE_COMPLETE",
    ]


def test_a_session_cookie_authenticates_the_websocket(
    web: WebEnv, live: LiveServer, peers: list[Peer]
) -> None:
    run = web.new_run()
    client = web.app.test_client()
    login(client, "alice")
    cookie = client.get_cookie("runarchive_session")
    assert cookie is not None
    web.ctx.stream(run.runid).publish("hello")
    # simple_websocket sends ``Host: 127.0.0.1`` (no port); a browser's Origin matches its Host.
    headers = {"Cookie": f"runarchive_session={cookie.value}", "Origin": "http://127.0.0.1"}
    peer = Peer(live.ws_url(run.runid) + "?since=0", headers)
    peers.append(peer)
    peer.wait_for(lambda f: f.get("data") == "hello")


def test_public_runs_stream_to_anonymous_viewers(
    web: WebEnv, live: LiveServer, peers: list[Peer]
) -> None:
    run = web.new_run(public=True)
    web.ctx.stream(run.runid).publish("visible")
    peer = Peer(live.ws_url(run.runid) + "?since=0", {})
    peers.append(peer)
    peer.wait_for(lambda f: f.get("data") == "visible")


@pytest.mark.parametrize(
    ("role", "headers", "expected", "code"),
    [
        ("anonymous", {}, 401, "unauthorized"),
        ("other", {}, 403, "forbidden"),
        ("owner", {"Origin": "http://evil.example"}, 403, "forbidden"),
    ],
)
def test_refused_viewers_get_an_http_error_and_no_upgrade(
    web: WebEnv, live: LiveServer, role: str, headers: dict[str, str], expected: int, code: str
) -> None:
    run = web.new_run()
    if role != "anonymous":
        headers = {**headers, "Authorization": f"Bearer {web.tokens[role]}"}
    status, body = upgrade_status(live, run.runid, headers)
    assert status == expected
    assert body["error"]["code"] == code
    assert web.app.extensions[RELAY].subscribers(web.ctx.keys.status_feed(run.runid)) == 0


def test_unknown_and_malformed_runs_are_refused(web: WebEnv, live: LiveServer) -> None:
    admin = {"Authorization": f"Bearer {web.tokens['admin']}"}
    assert upgrade_status(live, "no-such-run", admin)[0] == 404
    assert upgrade_status(live, "bad$id", admin)[0] == 400
    plain = web.as_role("admin").get("/status/no-such-run:archive")
    assert plain.status_code == 400  # not a websocket request


def test_the_server_pings_and_drops_a_silent_peer(
    web: WebEnv, live: LiveServer, peers: list[Peer]
) -> None:
    run = web.new_run()
    relay = web.app.extensions[RELAY]
    channel = web.ctx.keys.status_feed(run.runid)
    answering = connect(live, web, run.runid, peers)
    silent = Peer(live.ws_url(run.runid), {"Authorization": f"Bearer {web.tokens['owner']}"},
                  silent=True)  # fmt: skip
    peers.append(silent)
    wait_until(lambda: relay.subscribers(channel) == 2, timeout=5)
    # 0.3 s ping interval: the silent peer is dropped after 3 intervals, the answering one stays.
    wait_until(lambda: not silent.ws.connected, timeout=5)
    assert silent.ws.close_reason == 1011  # closed so that a live client would come back
    assert any(f["type"] == "ping" for f in silent.frames)
    assert not any(f["type"] == "hangup" for f in silent.frames)
    wait_until(lambda: relay.subscribers(channel) == 1, timeout=5)
    time.sleep(1.2)  # four more intervals
    assert answering.ws.connected
    assert sum(f["type"] == "ping" for f in answering.frames) >= 5
    assert not any(f["type"] == "hangup" for f in answering.frames)
    assert relay.subscribers(channel) == 1


def test_one_redis_subscription_serves_every_socket_of_the_process(
    web: WebEnv, live: LiveServer, peers: list[Peer]
) -> None:
    a, b = web.new_run(), web.new_run()
    relay = web.app.extensions[RELAY]
    for _ in range(3):
        connect(live, web, a.runid, peers)
    connect(live, web, b.runid, peers)
    wait_until(lambda: relay.subscribers(web.ctx.keys.status_feed(a.runid)) == 3, timeout=5)
    web.ctx.stream(a.runid).publish("to all three")
    for peer in peers[:3]:
        peer.wait_for(lambda f: f.get("data") == "to all three")
    data = web.ctx.clients.data
    relay_clients = [c for c in data.client_list() if c.get("name") == relay.client_name]
    assert len(relay_clients) == 1
    channels = (web.ctx.keys.status_feed(a.runid), web.ctx.keys.status_feed(b.runid))
    wait_until(lambda: dict(data.pubsub_numsub(*channels)) == dict.fromkeys(channels, 1))
    assert "to all three" not in peers[3].lines()


def test_sockets_beyond_the_cap_are_refused_so_the_page_polls(
    web: WebEnv, live: LiveServer, peers: list[Peer]
) -> None:
    run = web.new_run()
    relay = web.app.extensions[RELAY]
    wait_until(lambda: relay.sockets == 0, timeout=5)  # earlier tests' sockets are closed
    cap = relay.max_sockets
    relay.max_sockets = 2
    try:
        first = connect(live, web, run.runid, peers)
        connect(live, web, run.runid, peers)
        status, body = upgrade_status(
            live, run.runid, {"Authorization": f"Bearer {web.tokens['owner']}"}
        )
        assert status == 503
        assert body["error"]["code"] == "too_many_sockets"
        assert web.as_role("owner").get(f"/runs/{run.runid}/archive/list").status_code == 200
        first.close()
        wait_until(lambda: relay.sockets < relay.max_sockets, timeout=5)
        connect(live, web, run.runid, peers).wait_for(lambda f: f["type"] == "ping")
    finally:
        relay.max_sockets = cap


def stalled_peer(live: LiveServer, runid: str, token: str) -> tuple[socket.socket, str]:
    """Upgrade a raw socket that offers compression, then never reads; return it and the reply."""
    raw = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.sendall(
        (
            f"GET /status/{runid}:archive HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = raw.recv(1)  # byte by byte: frames after the headers stay unread
        assert chunk, "closed during the handshake"
        reply += chunk
    return raw, reply.decode("latin-1")


def test_a_peer_that_stops_reading_is_dropped_while_the_others_get_every_line(
    web: WebEnv, live: LiveServer, peers: list[Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(web.app.config, "WS_BACKLOG_BYTES", 64 * 1024)
    run = web.new_run()
    relay = web.app.extensions[RELAY]
    channel = web.ctx.keys.status_feed(run.runid)
    reader = connect(live, web, run.runid, peers)
    raw, reply = stalled_peer(live, run.runid, web.tokens["owner"])
    try:
        assert reply.startswith("HTTP/1.1 101")
        assert "sec-websocket-extensions" not in reply.lower()  # no per-message deflate
        wait_until(lambda: relay.subscribers(channel) == 2, timeout=5)
        stream = web.ctx.stream(run.runid)
        stream.publish("start")
        reader.wait_for(lambda f: f.get("data") == "start")  # replay done: the reader is live
        filler = "x" * 2000
        sent = 0
        while relay.subscribers(channel) == 2:
            stream.publish(f"line {sent:05} {filler}")
            sent += 1
            assert sent < 20_000, "the stalled peer was never dropped"
        stream.publish("after the drop")
        reader.wait_for(lambda f: f.get("data") == "after the drop", timeout=30)
        expected = [f"line {i:05} {filler}" for i in range(sent)] + ["after the drop"]
        assert reader.lines()[-len(expected) :] == expected
        wait_until(lambda: relay.subscribers(channel) == 1, timeout=5)
    finally:
        raw.close()


def test_a_tls_socket_gets_every_line_through_its_own_thread(
    web: WebEnv, tmp_path: Path, peers: list[Peer]
) -> None:
    """A TLS socket cannot take the relay thread's non-blocking writes: its session writes."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = LiveServer(web.app, tls=(str(cert), str(key)))
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        trust.check_hostname = False  # the certificate names no IP address; the CA is pinned
        run = web.new_run()
        auth = {"Authorization": f"Bearer {web.tokens['owner']}"}
        peer = Peer(server.ws_url(run.runid) + "?since=0", auth, tls=trust)
        peers.append(peer)
        stream = web.ctx.stream(run.runid)
        stream.publish("start")
        peer.wait_for(lambda f: f.get("data") == "start")
        for i in range(200):
            stream.publish(f"tls {i}")
        peer.wait_for(lambda f: f.get("data") == "tls 199")
        assert [x for x in peer.lines() if x.startswith("tls ")] == [f"tls {i}" for i in range(200)]
    finally:
        server.stop()


def test_lines_seen_both_in_the_log_and_live_are_sent_once_in_order() -> None:
    log = [(3, "c"), (4, "d"), (5, "e")]
    live = [(4, "d"), (5, "e"), (6, "f")]
    assert lines_to_send(log, live, since=0) == [(3, "c"), (4, "d"), (5, "e"), (6, "f")]
    assert lines_to_send(log, live, since=4) == [(5, "e"), (6, "f")]
    assert lines_to_send(log, [], since=5) == []


def test_a_plain_connect_gets_only_live_lines() -> None:
    assert lines_to_send([(1, "old"), (2, "older job")], [(3, "live")], since=None) == [(3, "live")]


def test_a_since_beyond_every_number_means_the_numbering_restarted() -> None:
    """The log expired while the client was away: numbering began again at 1."""
    assert lines_to_send([(1, "a"), (2, "b")], [], since=900) == [(1, "a"), (2, "b")]
