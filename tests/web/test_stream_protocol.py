"""The status stream protocol, version 2, as a raw client sees it on WEPPcloud's path.

Clients are the ``websockets`` library's, on a real threaded werkzeug server running a real
app; lines are published through the jobs layer's real status stream. Stopping the server and
losing Redis use an app of their own, so the module's app stays up for the others.

A ``websockets`` client, after the server's close frame, answers it and then waits for the
server to end the TCP connection (RFC 6455 §7.1.1: the server closes first). The clients of the
closing tests wait far longer than their deadlines (``LONG_CLOSE``), so a test passes only when
the server itself ended each connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from runarchive.jobs import JobsContext, Settings
from runarchive.web import create_app, shutdown
from runarchive.web.accounts import create_token, create_user, grant_run, require_user, revoke_run
from runarchive.web.db import db
from runarchive.web.settings import WebSettings
from runarchive.web.websocket import RELAY
from tests.support.runs import make_small_run
from tests.support.waiting import wait_until
from tests.support.web import WS_HEADERS, LiveServer, WebEnv

ALIAS = "/weppcloud-microservices/status/{runid}:archive"
LONG_CLOSE = 60.0  # a client's wait for the server's TCP close, beyond every test deadline


def url_of(live: LiveServer, runid: str, since: int | None = None) -> str:
    query = f"?since={since}" if since is not None else ""
    return f"ws://127.0.0.1:{live.port}{ALIAS.format(runid=runid)}{query}"


class Client:
    """A raw websocket client that answers pings and keeps every frame it got."""

    def __init__(self, url: str, token: str, close_timeout: float = 10.0) -> None:
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=10,
                close_timeout=close_timeout,
            )
        )
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None

    def next_frame(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """Return the next frame (pings answered), or None once the socket is closed."""
        try:
            frame: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd is not None else None
            return None
        self.frames.append(frame)
        if frame["type"] == "ping":
            self.ws.send(json.dumps({"type": "pong"}))
        return frame

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """Return the next status frame."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.next_frame(deadline - time.monotonic())
            assert frame is not None, f"closed with {self.close_code}"
            if frame["type"] == "status":
                return frame
        raise AssertionError(f"no status frame in {timeout} s")

    def wait_live(self) -> None:
        """Return once the server pinged: the socket is past its start, lines now are live."""
        while (frame := self.next_frame()) is not None and frame["type"] != "ping":
            pass
        assert frame is not None, f"closed with {self.close_code}"

    def until_closed(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read until the server closes; return the frames after this call, pings left out."""
        start = len(self.frames)
        deadline = time.monotonic() + timeout
        while self.next_frame(max(0.1, deadline - time.monotonic())) is not None:
            assert time.monotonic() < deadline, "the server did not close"
        return [f for f in self.frames[start:] if f["type"] != "ping"]

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def open_client(
    live: LiveServer, web: WebEnv, runid: str, made: list[Client], since: int | None = None
) -> Client:
    client = Client(url_of(live, runid, since), web.tokens["owner"])
    made.append(client)
    return client


def test_a_plain_connect_gets_no_replay_only_live_lines_with_their_seq(
    web: WebEnv, live: LiveServer, clients: list[Client]
) -> None:
    run = web.new_run()
    stream = web.ctx.stream(run.runid)
    stream.publish("rq:old ENQUEUED archive_rq(x)")
    stream.publish("rq:old TRIGGER   archive ARCHIVE_COMPLETE")
    client = open_client(live, web, run.runid, clients)
    client.wait_live()
    stream.publish("live line")
    frame = client.status()
    assert frame == {"type": "status", "data": "live line", "seq": 3}
    assert [f for f in client.frames if f["type"] == "status"] == [frame]


def test_since_gets_exactly_the_missed_lines_once_then_live_ones(
    web: WebEnv, live: LiveServer, clients: list[Client]
) -> None:
    run = web.new_run()
    stream = web.ctx.stream(run.runid)
    for i in range(3):
        stream.publish(f"line {i}")
    first = open_client(live, web, run.runid, clients, since=0)
    seen = [first.status() for _ in range(3)]
    assert [(f["seq"], f["data"]) for f in seen] == [(1, "line 0"), (2, "line 1"), (3, "line 2")]
    first.close()
    for i in range(3, 6):  # while the client is away
        stream.publish(f"line {i}")
    again = open_client(live, web, run.runid, clients, since=seen[-1]["seq"])
    missed = [again.status() for _ in range(3)]
    assert [(f["seq"], f["data"]) for f in missed] == [(4, "line 3"), (5, "line 4"), (6, "line 5")]
    stream.publish("line 6")
    assert again.status() == {"type": "status", "data": "line 6", "seq": 7}
    lines = [f["data"] for f in again.frames if f["type"] == "status"]
    assert lines == ["line 3", "line 4", "line 5", "line 6"]  # nothing twice


def test_a_malformed_since_is_refused_before_the_upgrade(web: WebEnv, live: LiveServer) -> None:
    run = web.new_run()
    with pytest.raises(Exception, match="400"):
        Client(url_of(live, run.runid) + "?since=-1", web.tokens["owner"])


def test_the_client_answering_pings_with_pong_keeps_its_socket(
    web: WebEnv, live: LiveServer, clients: list[Client]
) -> None:
    run = web.new_run()
    client = open_client(live, web, run.runid, clients)
    deadline = time.monotonic() + 1.5  # five 0.3 s intervals: a silent peer goes after three
    while time.monotonic() < deadline:
        assert client.next_frame(timeout=1) is not None, f"closed with {client.close_code}"
    assert sum(f["type"] == "ping" for f in client.frames) >= 4
    web.ctx.stream(run.runid).publish("still here")
    assert client.status()["data"] == "still here"


def test_revoked_access_gets_hangup_and_a_normal_close(
    web: WebEnv, live: LiveServer, clients: list[Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(web.app.config, "WS_RECHECK_INTERVAL", 0.2)
    run = web.new_run()
    with web.app.app_context():
        session = db().session
        bob = require_user(session, "bob")
        grant_run(session, run.runid, bob)
    client = Client(url_of(live, run.runid), web.tokens["other"])
    clients.append(client)
    client.wait_live()
    with web.app.app_context():
        session = db().session
        assert revoke_run(session, run.runid, require_user(session, "bob"))
    assert client.until_closed() == [{"type": "hangup"}]
    assert client.close_code == 1000


def test_a_deleted_run_gets_hangup(
    web: WebEnv, live: LiveServer, clients: list[Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(web.app.config, "WS_RECHECK_INTERVAL", 0.2)
    run = web.new_run()
    client = open_client(live, web, run.runid, clients)
    client.wait_live()
    shutil.rmtree(run.path)
    assert client.until_closed() == [{"type": "hangup"}]


@dataclass
class OwnServer:
    """An app and server of one test only (it will be stopped), two runs and their token."""

    app: Any
    live: LiveServer
    runid: str
    other: str
    token: str

    def client(self, runid: str | None = None) -> Client:
        """A client that waits for the server to end the connection (``LONG_CLOSE``)."""
        return Client(url_of(self.live, runid or self.runid), self.token, LONG_CLOSE)


@pytest.fixture
def own_server(redis_url: str, tmp_path: Path) -> Iterator[OwnServer]:
    runs = tmp_path / "runs"
    runs.mkdir()
    runids = [f"run-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for runid in runids:
        make_small_run(runs, runid)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=redis_url,
        runs_root=runs,
        queue=f"q-{tag}",
        key_prefix=f"ra-proto-{tag}",
        data_dir=tmp_path / "data",
    )
    websettings = WebSettings(database_url=f"sqlite:///{tmp_path}/a.db", ws_ping_interval=0.3)
    app = create_app({"TESTING": True, "JOBS_SETTINGS": settings, "WEB_SETTINGS": websettings})
    with app.app_context():
        user = create_user(db().session, "owner", "password-123")
        for runid in runids:
            grant_run(db().session, runid, user)
        token = create_token(db().session, user)
    live = LiveServer(app)
    try:
        yield OwnServer(app, live, runids[0], runids[1], token)
    finally:
        live.stop()
        shutdown(app)


def test_stopping_the_server_closes_every_socket_with_going_away_never_hangup(
    own_server: OwnServer, clients: list[Client]
) -> None:
    """Idle, receiving and chatty sockets: each gets 1001 and its connection ended by us.

    The chatty one sends a frame every few milliseconds, as a client answering a burst would:
    a frame of the peer's arriving once the handler has returned used to be read by werkzeug's
    post-response drain, which then waited for the rest of a 10 MB read (the peer's FIN); the
    peer waited for ours. Only the client's own close timeout ended it.
    """
    server = own_server
    receiving = [server.client(server.runid) for _ in range(3)]
    idle = [server.client(server.other) for _ in range(3)]
    chatty = server.client(server.other)
    clients.extend([*receiving, *idle, chatty])
    for client in clients:
        client.wait_live()
    done = threading.Event()

    def publish() -> None:
        with JobsContext.from_settings(
            server.app.extensions["runarchive.deployment"].settings
        ) as ctx:
            stream = ctx.stream(server.runid)
            i = 0
            while not done.wait(0.005):
                stream.publish(f"line {i}")
                i += 1

    def chatter() -> None:
        with contextlib.suppress(ConnectionClosed):
            while not done.wait(0.002):
                chatty.ws.send(json.dumps({"type": "pong"}))

    with ThreadPoolExecutor(len(clients) + 2) as pool:
        background = [pool.submit(publish), pool.submit(chatter)]
        for client in receiving:
            client.status()  # lines are flowing to these when the server stops
        readers = [pool.submit(client.until_closed) for client in clients]
        server.app.extensions[RELAY].stop()
        try:
            after = [reader.result() for reader in readers]
        finally:
            done.set()
        for job in background:
            job.result()
    assert [client.close_code for client in clients] == [1001] * len(clients)
    assert all(frame.get("type") != "hangup" for frames in after for frame in frames)
    assert server.app.extensions[RELAY].sockets == 0


def test_a_peer_that_never_answers_the_close_and_keeps_sending_is_cut_off(
    own_server: OwnServer,
) -> None:
    """A hostile peer keeps talking after our close frame: the connection still ends, soon."""
    server = own_server
    peer = socket.create_connection(("127.0.0.1", server.live.port), timeout=10)
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in WS_HEADERS.items())
        peer.sendall(
            f"GET {ALIAS.format(runid=server.runid)} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
            f"Authorization: Bearer {server.token}\r\n\r\n".encode()
        )
        frames = RawFrames(peer)
        assert frames.head.startswith(b"HTTP/1.1 101")
        assert frames.next() == (0x1, b'{"type":"ping"}')  # live
        stop = threading.Event()

        def keep_talking() -> None:
            pong = masked_text(b'{"type":"pong"}')
            with contextlib.suppress(OSError):
                while not stop.wait(0.002):
                    peer.sendall(pong)

        talker = threading.Thread(target=keep_talking, daemon=True)
        talker.start()
        try:
            server.app.extensions[RELAY].stop()
            while (frame := frames.next()) is not None and frame[0] != 0x8:
                pass
            assert frame is not None, "no close frame"
            assert struct.unpack("!H", frame[1][:2])[0] == 1001
            frames.until_end()  # our end of the TCP connection, not the socket's timeout
        finally:
            stop.set()
            talker.join(10)
    finally:
        peer.close()


def masked_text(payload: bytes) -> bytes:
    """Return a client's text frame (clients must mask; ``payload`` under 126 bytes)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


class RawFrames:
    """Server frames read off a raw socket (unmasked; lengths up to 16 bits)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        self.head, self.buf = self.buf.split(b"\r\n\r\n", 1)

    def _more(self) -> bool:
        data = self.sock.recv(65536)  # the socket's timeout fails the test instead of hanging
        self.buf += data
        return bool(data)

    def until_end(self) -> None:
        """Read (and drop: nothing may follow a close frame) until the server ends the TCP."""
        while self._more():
            self.buf = b""

    def next(self) -> tuple[int, bytes] | None:
        """Return (opcode, payload) of the next frame, or None at the end of the connection."""
        while True:
            if len(self.buf) >= 2:
                size, start = self.buf[1] & 0x7F, 2
                if size == 126 and len(self.buf) >= 4:
                    size, start = struct.unpack("!H", self.buf[2:4])[0], 4
                if size < 126 and len(self.buf) >= start + size:
                    frame = (self.buf[0] & 0x0F, self.buf[start : start + size])
                    self.buf = self.buf[start + size :]
                    return frame
            if not self._more():
                return None


def test_losing_redis_closes_with_an_error_code_and_the_client_comes_back(
    own_server: OwnServer,
) -> None:
    app, live, runid, token = own_server.app, own_server.live, own_server.runid, own_server.token
    relay = app.extensions[RELAY]
    client = own_server.client()
    try:
        client.wait_live()
        with JobsContext.from_settings(app.extensions["runarchive.deployment"].settings) as ctx:
            data = ctx.clients.data
            ids = [c["id"] for c in data.client_list() if c.get("name") == relay.client_name]
            assert len(ids) == 1
            data.execute_command("CLIENT", "KILL", "ID", ids[0])
            assert client.until_closed() == []
            assert client.close_code == 1011
            ctx.stream(runid).publish("while away")
            back = Client(url_of(live, runid, since=0), token)
            try:
                assert back.status()["data"] == "while away"
            finally:
                back.close()
    finally:
        client.close()
    wait_until(lambda: relay.sockets == 0, timeout=5)
