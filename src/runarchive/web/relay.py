"""One Redis subscription per process, fanned out to every websocket watching a run.

A naive relay opens a pub/sub connection per websocket: a hundred viewers are a hundred Redis
connections, and a burst of page reloads a burst of SUBSCRIBEs. Here one background thread owns
one pub/sub connection for the whole process:

* ``join(channel)`` registers a ``Subscriber`` (a bounded queue). The thread SUBSCRIBEs the
  channel when its first subscriber arrives and sets ``Subscriber.ready`` once Redis confirmed
  it, so the caller can then read the retained lines without a gap (lines published after the
  confirmation arrive live; each carries its ``seq``, so the caller sends every line once).
* Each message is encoded once (``encode``: the websocket frame, identical for every viewer)
  and handed to every subscriber of its channel. A subscriber with a ``Sink`` attached (a live
  socket, see ``outlet.py``) gets the bytes written at once by this thread; one still
  replaying gets the line on its bounded queue. A subscriber whose queue or backlog is full (a
  peer that stopped reading) is hung up instead of slowing the others.
* ``leave`` unregisters; the thread UNSUBSCRIBEs a channel ``LINGER`` seconds after its last
  subscriber left, so a page reload does not cost a round of UNSUBSCRIBE/SUBSCRIBE.
* When the Redis connection fails, every subscriber is hung up with ``REDIS_LOST`` (the
  socket is closed with a code that makes the client come back and ask for what it missed) and
  the thread reconnects with backoff; ``stop`` hangs up with ``STOPPING``. Neither is
  ``final``: only the socket's own session hangs up for good (access revoked, run deleted).
* ``reserve``/``release`` ask the process's socket quota (``quotas.SocketQuota``: the
  process's and each user's cap); a stopping relay reserves nothing.

Only the thread touches the pub/sub object (redis-py's is not thread-safe); other threads
only change the channel table under a lock. Nothing here knows Flask.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from .quotas import MAX_PER_OWNER, SocketQuota

log = logging.getLogger(__name__)

POLL = 0.1
LINGER = 5.0
QUEUE_SIZE = 1000
_WAKE = "\x00hangup"  # put on a queue to wake its reader at once; never a real status line
STOPPING = "server stopping"
REDIS_LOST = "connection to Redis lost"
_names = itertools.count(1)


class Sink(Protocol):
    """Where a live subscriber's frames go (``outlet.Outlet``)."""

    def push(self, data: bytes) -> bool:
        """Write or queue ``data``; False when the peer is gone or too far behind."""

    def wake(self) -> None:
        """Get the socket's own thread to look at the subscriber (a hang-up)."""


class Subscriber:
    """One websocket's view of a channel: a bounded queue of lines, or once live a ``Sink``."""

    def __init__(self, channel: str, maxsize: int) -> None:
        self.channel = channel
        self.lines: queue.Queue[str] = queue.Queue(maxsize)
        self.ready = threading.Event()
        self.hangup: str | None = None
        self.final = False  # the client must not come back (see ``hang_up``)
        self._sink: Sink | None = None
        self._lock = threading.Lock()

    def offer(self, line: str, frame: bytes) -> None:
        """Deliver one message (relay thread); hang up a subscriber that stopped reading."""
        with self._lock:
            sink = self._sink
            if sink is None:
                try:
                    self.lines.put_nowait(line)
                except queue.Full:
                    self.hang_up("too slow")
                return
        if not sink.push(frame):
            self.hang_up("too slow or gone")

    def attach(self, sink: Sink, first: Callable[[list[str]], list[bytes]]) -> None:
        """Go live: write ``first(queued lines)`` to ``sink``, then every later message.

        Runs under the lock ``offer`` takes, so no message slips between the replay the
        caller builds from the queued lines and the first line written live.
        """
        with self._lock:
            for frame in first(self.drain()):
                if not sink.push(frame):
                    self.hang_up("too slow or gone")
                    return
            self._sink = sink

    def hang_up(self, reason: str, *, final: bool = False) -> None:
        """Ask the socket's handler to close; ``final``: tell the client not to come back."""
        if self.hangup is None:
            self.hangup = reason
            self.final = final
        self.ready.set()
        with contextlib.suppress(queue.Full):  # a full queue wakes its reader anyway
            self.lines.put_nowait(_WAKE)
        sink = self._sink
        if sink is not None:
            sink.wake()

    def get(self, timeout: float) -> str | None:
        """Return the next line, or None after ``timeout`` seconds or on hang-up."""
        if self.hangup is not None:
            return None
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        return None if line == _WAKE else line

    def drain(self) -> list[str]:
        """Return every queued line without waiting."""
        lines: list[str] = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return lines
            if line != _WAKE:
                lines.append(line)


@dataclass
class _Channel:
    subscribers: set[Subscriber] = field(default_factory=set)
    requested: bool = False
    confirmed: bool = False
    empty_since: float | None = None


class Relay:
    """The process's single pub/sub connection and the sockets fed from it."""

    def __init__(
        self,
        url: Callable[[], str],
        *,
        max_sockets: int,
        max_per_owner: int = MAX_PER_OWNER,
        queue_size: int = QUEUE_SIZE,
        linger: float = LINGER,
        encode: Callable[[str], bytes] = str.encode,
    ) -> None:
        self._url = url
        self._encode = encode
        self.quota = SocketQuota(max_sockets, max_per_owner)
        self.queue_size = queue_size
        self.linger = linger
        self.client_name = f"runarchive-relay-{os.getpid()}-{next(_names)}"
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    # --- socket budget (the quota's; the settings and tests adjust its caps here) -----------

    @property
    def sockets(self) -> int:
        """Sockets currently counted against the cap."""
        return self.quota.sockets

    @property
    def max_sockets(self) -> int:
        return self.quota.max_sockets

    @max_sockets.setter
    def max_sockets(self, value: int) -> None:
        self.quota.max_sockets = value

    @property
    def max_per_owner(self) -> int:
        return self.quota.max_per_owner

    @max_per_owner.setter
    def max_per_owner(self, value: int) -> None:
        self.quota.max_per_owner = value

    def reserve(self, owner: str = "") -> bool:
        """Count one more socket of ``owner`` (``quotas``); False at a cap or when stopping."""
        return not self._stopping.is_set() and self.quota.reserve(owner)

    def release(self, owner: str = "") -> None:
        """Give back a socket reserved for ``owner``."""
        self.quota.release(owner)

    # --- subscriptions ------------------------------------------------------------------------

    def join(self, channel: str) -> Subscriber:
        """Register a subscriber of ``channel``; its ``ready`` is set once Redis confirmed."""
        sub = Subscriber(channel, self.queue_size)
        with self._lock:
            if self._stopping.is_set():
                sub.hang_up(STOPPING)
                return sub
            state = self._channels.setdefault(channel, _Channel())
            state.subscribers.add(sub)
            state.empty_since = None
            if state.confirmed:
                sub.ready.set()
            self._ensure_thread()
        return sub

    def leave(self, sub: Subscriber) -> None:
        """Unregister ``sub`` (the channel is unsubscribed after ``linger`` seconds)."""
        with self._lock:
            state = self._channels.get(sub.channel)
            if state is not None and sub in state.subscribers:
                state.subscribers.discard(sub)
                if not state.subscribers:
                    state.empty_since = time.monotonic()

    def subscribers(self, channel: str) -> int:
        """Return how many sockets watch ``channel`` (for tests and health)."""
        with self._lock:
            state = self._channels.get(channel)
            return len(state.subscribers) if state is not None else 0

    def stop(self, timeout: float = 5.0) -> None:
        """Hang up every subscriber and stop the thread."""
        self._stopping.set()
        with self._lock:
            for state in self._channels.values():
                for sub in state.subscribers:
                    sub.hang_up(STOPPING)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- the thread ---------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if os.getpid() != self._pid:  # forked after the thread started: start our own
            self._pid = os.getpid()
            self._thread = None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="status-relay", daemon=True)
            self._thread.start()

    def _client(self) -> Any:
        return redis.Redis.from_url(
            self._url(),
            decode_responses=True,
            client_name=self.client_name,
            socket_connect_timeout=5,
            health_check_interval=30,
        )

    def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            client = None
            pubsub = None
            try:
                client = self._client()
                pubsub = client.pubsub()
                while not self._stopping.is_set():
                    self._sync(pubsub)
                    message = pubsub.get_message(timeout=POLL)
                    if message is not None:
                        self._dispatch(message)
                    backoff = 0.2
            except Exception as exc:  # Redis down, or a bug: never kill the relay
                log.warning("status relay lost Redis (%s); reconnecting in %.1f s", exc, backoff)
                self._drop_all(REDIS_LOST)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    _quietly(pubsub.close)
                if client is not None:
                    _quietly(client.close)

    def _sync(self, pubsub: Any) -> None:
        """Subscribe channels that gained a subscriber, drop those empty for ``linger`` s."""
        now = time.monotonic()
        subscribe: list[str] = []
        unsubscribe: list[str] = []
        with self._lock:
            for name, state in list(self._channels.items()):
                if state.subscribers and not state.requested:
                    state.requested = True
                    subscribe.append(name)
                elif (
                    not state.subscribers
                    and state.empty_since is not None
                    and now - state.empty_since >= self.linger
                ):
                    del self._channels[name]
                    if state.requested:
                        unsubscribe.append(name)
        if subscribe:
            pubsub.subscribe(*subscribe)
        if unsubscribe:
            pubsub.unsubscribe(*unsubscribe)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = str(message.get("channel"))
        with self._lock:
            state = self._channels.get(channel)
            if state is None:
                return
            if kind == "subscribe":
                state.confirmed = True
                for sub in state.subscribers:
                    sub.ready.set()
            elif kind == "message":
                line = str(message.get("data"))
                frame = self._encode(line)
                for sub in list(state.subscribers):
                    sub.offer(line, frame)

    def _drop_all(self, reason: str) -> None:
        with self._lock:
            for state in self._channels.values():
                for sub in state.subscribers:
                    sub.hang_up(reason)
            self._channels.clear()


def _quietly(func: Callable[[], Any]) -> None:
    try:
        func()
    except Exception:
        log.debug("ignored error while closing", exc_info=True)
