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

After the upgrade (the status stream protocol, version 2; ``docs/api.md``):

* ``{"type": "status", "data": "<line>", "seq": <n>}`` — each new line as it is published;
  ``seq`` numbers the run's lines, increasing by one (``jobs/stream.py``). **No replay unless
  asked**: a plain connect gets live lines only (WEPPcloud's StatusStream expects nothing
  else); ``?since=<n>`` first sends the retained lines numbered above ``n``, oldest first, and
  then live ones, each line once (``since=0``: everything retained). A ``since`` above the
  newest number means the numbering restarted (the log expired): everything retained is sent.
  The same holds at ``/weppcloud-microservices/status/<runid>:archive``, WEPPcloud's path;
* ``{"type": "ping"}`` every ``RUNARCHIVE_WS_PING_INTERVAL`` seconds; the client answers
  ``{"type": "pong"}``. A peer silent for three intervals is dropped (close 1011);
* a **close code** when the client should come back: 1001 (the server is stopping or
  restarting), 1011 (Redis lost, or the peer fell ``RUNARCHIVE_WS_BACKLOG_BYTES`` behind). The
  client reconnects with backoff, with ``since`` = the last ``seq`` it saw;
* ``{"type": "hangup"}``, then close 1000, only when the client must **not** come back: the
  read rule, re-applied every ``WS_RECHECK_INTERVAL`` seconds (Flask config, default 30) with
  the user reloaded, no longer lets it read (logged out, access revoked, token revoked), or the
  run is gone.

Closing: our close frame, then up to ``CLOSE_TIMEOUT`` seconds for the peer's answering one
(read by simple-websocket's reader thread), then the TCP connection is shut down both ways by us
(``close_socket``), as RFC 6455 asks of a server. The WSGI server's own end of the request must
not be left to do it: werkzeug reads whatever the peer sent after the handler returned with a
blocking 10 MB read, and the peer's close answer landing there held the connection until the
client gave up (10 s for the ``websockets`` library); a peer that kept sending held it forever.

Lines come from the process's single Redis subscription (``relay.py``); a socket never opens
its own. Live lines are written by the relay thread itself, one encoded frame for all viewers,
without waiting on any of them (``outlet.py``); per-message compression is not negotiated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from enum import IntEnum
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import Blueprint, Flask, current_app, g, request
from flask_sock import Sock  # type: ignore[import-untyped]
from wsproto.frame_protocol import FrameProtocol

from runarchive.core import InvalidInput
from runarchive.jobs import parse_entry

from . import access
from .db import db
from .errors import Forbidden, SocketsFull, WebsocketUnavailable
from .jobs_context import Deployment, jobs
from .outlet import Outlet
from .quotas import MAX_PER_OWNER
from .relay import REDIS_LOST, STOPPING, Relay, Subscriber

log = logging.getLogger(__name__)

bp = Blueprint("status", __name__)
sock = Sock()
RELAY = "runarchive.relay"
SUBSCRIBE_TIMEOUT = 5.0
SEND_TIMEOUT = 10
CLOSE_TIMEOUT = 2.0  # seconds a peer has to answer our close frame before we cut it off
DEAD_AFTER_PINGS = 3
RECHECK_INTERVAL = 30.0  # seconds between re-applications of the read rule to an open socket
_SINCE_RE = re.compile(r"[0-9]{1,18}")  # fullmatch


class Close(IntEnum):
    """Close codes: every one but NORMAL (sent after a hangup) asks the client to come back."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server stops or restarts
    INTERNAL_ERROR = 1011  # Redis lost, or the peer too slow or silent


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
    since_of_request()  # 400 for a malformed since=, before anything else is spent
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


def since_of_request() -> int | None:
    """Return the ``since`` query parameter (a line number), None when not asked; 400 if bad."""
    since = request.args.get("since")
    if since is None:
        return None
    if not _SINCE_RE.fullmatch(since):
        raise InvalidInput("since must be a line number (the seq of the last line seen).")
    return int(since)


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
    recheck = float(current_app.config.get("WS_RECHECK_INTERVAL", RECHECK_INTERVAL))
    since = since_of_request()
    stream = jobs().stream(runid)
    sub = relay().join(stream.feed)
    outlet = Outlet(ws.sock, backlog)
    session = Session(ws, sub, outlet, interval)
    try:
        session.serve(stream.numbered, since, lambda: _still_readable(runid), recheck)
    except OSError as exc:  # reset, or a send timed out on a peer that stopped reading
        log.info("websocket of %s lost: %s", runid, exc)
    finally:
        relay().leave(sub)  # no relay write after this: the close frame comes last
        with contextlib.suppress(OSError):
            outlet.flush()
        outlet.close()
        close_socket(ws, session.close_code(), sub.hangup or "")


def close_socket(ws: Any, code: int, message: str, timeout: float = CLOSE_TIMEOUT) -> None:
    """Send the close frame, give the peer ``timeout`` s to answer, then end the connection.

    simple-websocket's reader thread ends when the peer's close frame arrives (or the peer
    goes), having read every byte the peer sent before it. The shutdown then makes any later
    read of the connection — the WSGI server's drain after the response, that reader thread
    when the peer never answered — see the end at once, so nothing can wait on the peer.
    """
    with contextlib.suppress(Exception):  # already closed by the peer, or reset
        ws.close(reason=code, message=message)
    reader = getattr(ws, "thread", None)
    if isinstance(reader, threading.Thread) and reader is not threading.current_thread():
        reader.join(timeout)
    raw = getattr(ws, "sock", None)
    if raw is not None:
        with contextlib.suppress(OSError):  # closed already (the reader closes it when done)
            raw.shutdown(socket.SHUT_RDWR)


def _still_readable(runid: str) -> bool:
    """Re-apply the read rule with the user reloaded: False when the client must go."""
    g.pop("_login_user", None)  # flask-login loads the user (session or token) again
    try:
        found = access.view(runid)
        return found.can_read and found.run_dir is not None
    except Exception:  # a database or Redis hiccup is no reason to send someone away
        log.warning("could not re-check access to %s", runid, exc_info=True)
        return True
    finally:
        db().remove()


sock.route("/status/<runid>:archive", bp=bp)(archive_stream)
# WEPPcloud's StatusStream path, same stream (its relay sits behind /weppcloud-microservices).
sock.route("/weppcloud-microservices/status/<runid>:archive", bp=bp, endpoint="wepp_stream")(
    archive_stream
)


def encode_frame(message: dict[str, Any]) -> bytes:
    """Return one server-to-client text frame carrying ``message`` as compact JSON.

    Server frames are unmasked and, with per-message compression refused, identical for every
    socket: the relay encodes a line once and writes the same bytes to all its viewers.
    """
    text = json.dumps(message, separators=(",", ":"))
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(text, fin=True))


def status_frame(seq: int, line: str) -> bytes:
    """Return the frame of one numbered status line."""
    return encode_frame({"type": "status", "data": line, "seq": seq})


def feed_frame(entry: str) -> bytes:
    """Return the frame of one ``<seq> <line>`` message of the relay's feed channel."""
    parsed = parse_entry(entry)
    if parsed is None:  # not ours: never published by StatusStream
        return encode_frame({"type": "status", "data": entry})
    return status_frame(*parsed)


PING = encode_frame({"type": "ping"})
HANGUP = encode_frame({"type": "hangup"})
Numbered = list[tuple[int, str]]


class Session:
    """One socket's conversation: what the client asked for, live lines, heartbeat, goodbye.

    Its thread writes the missed lines and any backlog and keeps the heartbeat; live lines are
    written by the relay thread through the ``Outlet`` (see ``outlet.py``).
    """

    def __init__(self, ws: Any, sub: Subscriber, outlet: Outlet, ping_interval: float) -> None:
        self.ws = ws
        self.sub = sub
        self.outlet = outlet
        self.ping_interval = ping_interval
        self.last_heard = time.monotonic()
        self.silent = False
        _limit_send_time(ws)

    def serve(
        self,
        retained: Callable[[], Numbered],
        since: int | None,
        readable: Callable[[], bool] = lambda: True,
        recheck: float = RECHECK_INTERVAL,
    ) -> None:
        """Run the conversation until the peer leaves, the server goes, or access ends."""
        if not self.sub.ready.wait(SUBSCRIBE_TIMEOUT):
            self.sub.hang_up("subscription not confirmed")
        if self.sub.hangup is not None:
            self._goodbye()
            return
        try:
            missed: Numbered = retained() if since is not None else []
        except redis.exceptions.RedisError:
            self.sub.hang_up(REDIS_LOST)
            return

        def first(early: list[str]) -> list[bytes]:
            live = [pair for pair in map(parse_entry, early) if pair is not None]
            return [status_frame(*pair) for pair in lines_to_send(missed, live, since)]

        self.sub.attach(self.outlet, first)
        self._live(readable, recheck)

    def _live(self, readable: Callable[[], bool], recheck: float) -> None:
        self.last_heard = time.monotonic()
        next_ping = self.last_heard + self.ping_interval
        next_check = self.last_heard + recheck
        while self.sub.hangup is None:
            self.outlet.flush()
            self._read_client()
            if not self.ws.connected:
                return
            now = time.monotonic()
            if now - self.last_heard > DEAD_AFTER_PINGS * self.ping_interval:
                log.info("dropping silent websocket of %s", self.sub.channel)
                self.silent = True
                return
            if now >= next_check:
                if not readable():
                    self.sub.hang_up("access ended", final=True)
                    break
                next_check = time.monotonic() + recheck
            if now >= next_ping:
                if not self.outlet.push(PING):
                    self.sub.hang_up("too slow or gone")
                next_ping = now + self.ping_interval
            self.outlet.wait(max(0.05, min(0.5, next_ping - now, next_check - now)))
        self._goodbye()

    def _read_client(self) -> None:
        while True:
            message = self.ws.receive(timeout=0)
            if message is None:
                return
            self.last_heard = time.monotonic()  # any frame proves the peer alive (pong, too)

    def _goodbye(self) -> None:
        """Say ``hangup`` when the client must not come back; else the close code says it."""
        if not self.sub.final:
            return
        try:
            if self.outlet.push(HANGUP):
                self.outlet.flush()
        except OSError:
            log.debug("peer gone before hangup", exc_info=True)

    def close_code(self) -> int:
        """Return the code the socket is closed with (see ``Close``)."""
        if self.sub.final or (self.sub.hangup is None and not self.silent):
            return Close.NORMAL  # after a hangup, or the peer left
        if self.sub.hangup == STOPPING:
            return Close.GOING_AWAY
        return Close.INTERNAL_ERROR


def lines_to_send(missed: Numbered, live: Numbered, since: int | None) -> Numbered:
    """Return what a new socket is sent first, each line once and in order.

    ``missed`` is the retained log read after the subscription was confirmed; ``live`` arrived
    on the subscription meanwhile, so it may repeat the log's tail: numbers tell them apart.
    Without ``since`` only live lines are sent. A ``since`` above every number known means the
    numbering restarted (the log expired while the client was away): everything is new to it.
    """
    if since is None:
        return live
    newest = max((seq for seq, _ in (*missed, *live)), default=0)
    if since > newest:
        since = 0
    lines: dict[int, str] = {}
    for seq, line in (*missed, *live):
        if seq > since:
            lines.setdefault(seq, line)
    return sorted(lines.items())


def _limit_send_time(ws: Any) -> None:
    """Make a send to a peer that stopped reading fail after SEND_TIMEOUT s, not hang."""
    raw = getattr(ws, "sock", None)
    if raw is None:
        return
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT, 0))
    except (OSError, AttributeError):
        log.debug("could not set a send timeout on the websocket", exc_info=True)


def init_app(app: Flask, dep: Deployment, max_sockets: int, url_prefix: str = "") -> Relay:
    """Register the status blueprint (under ``url_prefix``) and the process's relay on ``app``."""
    per_user = int(app.config.get("WS_MAX_SOCKETS_PER_USER", MAX_PER_OWNER))
    hub = Relay(
        lambda: dep.context().settings.redis_url or "",
        max_sockets=max_sockets,
        max_per_owner=per_user,
        encode=feed_frame,
    )
    app.extensions[RELAY] = hub
    app.register_blueprint(bp, url_prefix=url_prefix)
    return hub
