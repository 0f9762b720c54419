"""``WS /status/<runid>:archive``: a run's status lines, live, over a websocket (flask-sock).

Before the upgrade (plain HTTP answers, so a refused page falls back to polling):

* the ``Origin``, when sent, must be this site (no cross-site websocket hijacking) — else 403;
* the read rule of ``access.py`` — 400/401/403/404 like the JSON routes;
* Redis must be reachable — else 503;
* the process must be under its socket cap (``RUNARCHIVE_WS_MAX_SOCKETS``), and the user (an
  anonymous viewer: the client address) under the per-user cap (Flask config
  ``WS_MAX_SOCKETS_PER_USER``, default 8) — else 503 ``too_many_sockets``. Each open socket
  holds one server thread; the caps keep threads free for HTTP and stop one client from
  taking them all;
* the WSGI server must hand over its socket (werkzeug, gunicorn, eventlet, gevent) — else 503
  ``websocket_unavailable`` instead of an internal error.

After the upgrade the server sends text frames of JSON:

* ``{"type": "status", "data": "<line>"}`` — first the retained recent lines (replay), then
  each new line as it is published;
* ``{"type": "ping"}`` every ``RUNARCHIVE_WS_PING_INTERVAL`` seconds; the client answers
  ``{"type": "pong"}``. A peer silent for three intervals is considered dead and dropped;
* ``{"type": "hangup"}`` before the server closes (shutdown, Redis lost). A peer that stops
  reading is dropped once ``RUNARCHIVE_WS_BACKLOG_BYTES`` of frames wait for it. The client
  reconnects with backoff, or polls.

Lines come from the process's single Redis subscription (``relay.py``); a socket never opens
its own. Live lines are written by the relay thread itself, one encoded frame for all viewers,
without waiting on any of them (``outlet.py``); per-message compression is not negotiated.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import Blueprint, Flask, current_app, g, request
from flask_sock import Sock  # type: ignore[import-untyped]
from wsproto.frame_protocol import FrameProtocol

from runarchive.jobs.keys import Keys

from . import access
from .db import db
from .deployment import Deployment, jobs
from .errors import Forbidden, SocketsFull, WebsocketUnavailable
from .outlet import Outlet
from .relay import MAX_PER_OWNER, Relay, Subscriber

log = logging.getLogger(__name__)

bp = Blueprint("status", __name__)
sock = Sock()
RELAY = "runarchive.relay"
SUBSCRIBE_TIMEOUT = 5.0
SEND_TIMEOUT = 10
DEAD_AFTER_PINGS = 3


def relay() -> Relay:
    """Return the current app's relay."""
    found: Relay = current_app.extensions[RELAY]
    return found


def _is_upgrade() -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _check_origin() -> None:
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser: scripts authenticate with a token
        return
    if urlsplit(origin).netloc.lower() != request.host.lower():
        raise Forbidden("Cross-origin websocket refused.")


@bp.before_request
def _admit() -> None:
    """Refuse before upgrading: origin, read access, Redis, socket cap."""
    if not _is_upgrade() or request.view_args is None:
        return  # routing answers a plain GET with 400 (this URL is a websocket)
    _check_origin()
    access.require_read(str(request.view_args["runid"]))
    jobs().clients.ping()  # 503 now, not a socket that never gets a line, when Redis is down
    if not _server_has_socket():
        raise WebsocketUnavailable("This server cannot hold websockets; poll for status instead.")
    owner = _socket_owner()
    if not relay().reserve(owner):
        raise SocketsFull(
            "Too many live connections on this server; the page will poll for status instead."
        )
    g.socket_owner = owner
    # No per-message deflate: it would make every socket's frames different (and cost a zlib
    # context per socket) where one encoding now serves every viewer; status lines are short.
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


def _server_has_socket() -> bool:
    """Tell whether the WSGI server exposes the raw socket flask-sock needs to upgrade."""
    env = request.environ
    if any(key in env for key in ("werkzeug.socket", "gunicorn.socket", "eventlet.input")):
        return True
    return str(env.get("SERVER_SOFTWARE", "")).startswith("gevent")


def _socket_owner() -> str:
    """Who a socket counts against: the user, else the client address."""
    who = access.user()
    if who is not None:
        return f"user:{who.id}"
    return f"addr:{request.remote_addr or 'unknown'}"


@bp.teardown_request
def _release(exc: BaseException | None) -> None:
    owner = g.pop("socket_owner", None)
    if owner is not None:
        relay().release(owner)


def archive_stream(ws: Any, runid: str) -> None:
    """Relay run ``runid``'s status lines to one websocket (see the module doc)."""
    db().remove()  # hold no database connection for the life of the socket
    interval = float(current_app.config["WS_PING_INTERVAL"])
    backlog = int(current_app.config["WS_BACKLOG_BYTES"])
    sub = relay().join(Keys.status_channel(runid))
    outlet = Outlet(ws.sock, backlog)
    try:
        Session(ws, sub, outlet, interval).serve(lambda: jobs().stream(runid).recent())
    except OSError as exc:  # reset, or a send timed out on a peer that stopped reading
        log.info("websocket of %s lost: %s", runid, exc)
    finally:
        relay().leave(sub)
        outlet.close()  # flask-sock closes the socket next: no relay write may race that


sock.route("/status/<runid>:archive", bp=bp)(archive_stream)
# WEPPcloud's StatusStream path, same stream (its relay sits behind /weppcloud-microservices).
sock.route("/weppcloud-microservices/status/<runid>:archive", bp=bp, endpoint="wepp_stream")(
    archive_stream
)


def encode_frame(message: dict[str, str]) -> bytes:
    """Return one server-to-client text frame carrying ``message`` as compact JSON.

    Server frames are unmasked and, with per-message compression refused, identical for every
    socket: the relay encodes a line once and writes the same bytes to all its viewers.
    """
    text = json.dumps(message, separators=(",", ":"))
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(text, fin=True))


def status_frame(line: str) -> bytes:
    """Return the frame of one status line."""
    return encode_frame({"type": "status", "data": line})


PING = encode_frame({"type": "ping"})
HANGUP = encode_frame({"type": "hangup"})


class Session:
    """One socket's conversation: replay, live lines, heartbeat, goodbye.

    Its thread writes the replay and any backlog and keeps the heartbeat; live lines are
    written by the relay thread through the ``Outlet`` (see ``outlet.py``).
    """

    def __init__(self, ws: Any, sub: Subscriber, outlet: Outlet, ping_interval: float) -> None:
        self.ws = ws
        self.sub = sub
        self.outlet = outlet
        self.ping_interval = ping_interval
        self.last_heard = time.monotonic()
        _limit_send_time(ws)

    def serve(self, recent: Any) -> None:
        """Run the conversation until the peer leaves or the server hangs up."""
        if not self.sub.ready.wait(SUBSCRIBE_TIMEOUT) or self.sub.hangup is not None:
            self._goodbye()
            return
        try:
            replay: list[str] = recent()
        except redis.exceptions.RedisError:
            self._goodbye()
            return

        def first(early: list[str]) -> list[bytes]:
            return [status_frame(line) for line in merge_replay(replay, early)]

        self.sub.attach(self.outlet, first)
        self._live()

    def _live(self) -> None:
        self.last_heard = time.monotonic()
        next_ping = self.last_heard + self.ping_interval
        while self.sub.hangup is None:
            self.outlet.flush()
            self._read_client()
            if not self.ws.connected:
                return
            now = time.monotonic()
            if now - self.last_heard > DEAD_AFTER_PINGS * self.ping_interval:
                log.info("dropping silent websocket of %s", self.sub.channel)
                break
            if now >= next_ping:
                if not self.outlet.push(PING):
                    self.sub.hang_up("too slow or gone")
                next_ping = now + self.ping_interval
            self.outlet.wait(max(0.05, min(0.5, next_ping - now)))
        self._goodbye()

    def _read_client(self) -> None:
        while True:
            message = self.ws.receive(timeout=0)
            if message is None:
                return
            self.last_heard = time.monotonic()  # any frame proves the peer alive (pong, too)

    def _goodbye(self) -> None:
        try:
            if self.outlet.push(HANGUP):
                self.outlet.flush()
        except OSError:
            log.debug("peer gone before hangup", exc_info=True)


def merge_replay(replay: list[str], early: list[str]) -> list[str]:
    """Return what a new socket is sent first: the retained lines, then the live ones.

    ``early`` arrived live between the subscription and the moment the replay was read, so
    its head may repeat the replay's tail: that overlap is sent once. When more lines arrived
    meanwhile than Redis retains, ``early`` holds the whole replay and more before it, and is
    sent alone.
    """
    for k in range(min(len(replay), len(early)), 0, -1):
        if early[:k] == replay[-k:]:
            return replay + early[k:]
    n = len(replay)
    if n and any(early[i : i + n] == replay for i in range(1, len(early) - n + 1)):
        return early
    return replay + early


def _limit_send_time(ws: Any) -> None:
    """Make a send to a peer that stopped reading fail after SEND_TIMEOUT s, not hang."""
    raw = getattr(ws, "sock", None)
    if raw is None:
        return
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT, 0))
    except (OSError, AttributeError):
        log.debug("could not set a send timeout on the websocket", exc_info=True)


def init_app(app: Flask, dep: Deployment, max_sockets: int) -> Relay:
    """Register the status blueprint and the process's relay on ``app``."""
    per_user = int(app.config.get("WS_MAX_SOCKETS_PER_USER", MAX_PER_OWNER))
    hub = Relay(
        lambda: dep.context().settings.redis_url or "",
        max_sockets=max_sockets,
        max_per_owner=per_user,
        encode=status_frame,
    )
    app.extensions[RELAY] = hub
    app.register_blueprint(bp)
    return hub
