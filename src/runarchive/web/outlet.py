"""A websocket's outgoing bytes, written by the relay thread without ever waiting on a peer.

With a thread per socket waking for every line, 200 viewers of a job cost 200 thread switches
per status line, and the last viewer got its line tens of milliseconds after the first. Here
the relay thread writes each line's frame (encoded once for everybody) straight to every
socket with a non-blocking ``send``: a socket whose kernel buffer has room — nearly always —
takes it at once. What a socket cannot take yet is kept as that socket's backlog, in order,
and its own session thread writes the backlog with an ordinary blocking send (bounded by the
socket's send timeout). A backlog over ``limit`` bytes means the peer stopped reading: ``push``
then answers False and the caller hangs that peer up instead of buffering without end.

Only a plain kernel socket is written directly. A TLS or green (gevent, eventlet) socket
cannot be sent to without blocking from another thread, so for those every frame goes through
the backlog and the session thread: correct, only slower.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

BACKLOG_LIMIT = 1 << 20


class Outlet:
    """One socket's ordered outgoing bytes: direct writes, else a bounded backlog."""

    def __init__(self, sock: Any, limit: int = BACKLOG_LIMIT) -> None:
        self._sock = sock
        self._direct = type(sock) is socket.socket
        self.limit = limit
        self._cond = threading.Condition()
        self._backlog = bytearray()
        self._writing = False  # the session thread is sending backlog: new bytes queue behind
        self._woken = False
        self.broken: OSError | None = None

    def push(self, data: bytes) -> bool:
        """Send or queue ``data``; False when the peer is gone or too far behind."""
        with self._cond:
            if self.broken is not None:
                return False
            if self._backlog or self._writing or not self._direct:
                return self._queue(data)
            try:
                sent = self._sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError as exc:  # closed by the peer or by the socket's reader thread
                self.broken = exc
                self._cond.notify_all()
                return False
            return sent == len(data) or self._queue(memoryview(data)[sent:])

    def _queue(self, data: bytes | memoryview) -> bool:
        if len(self._backlog) + len(data) > self.limit:
            # Part of a frame may be on the wire already: nothing more may follow it. The
            # shutdown also ends a blocked flush at once, so the socket's thread is freed now,
            # not after its send timeout.
            self.broken = BrokenPipeError("peer too slow")
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._cond.notify_all()
            return False
        self._backlog += data
        self._cond.notify_all()
        return True

    def close(self) -> None:
        """Refuse every later push (the socket is about to be closed by its owner)."""
        with self._cond:
            if self.broken is None:
                self.broken = BrokenPipeError("websocket closed")
            self._cond.notify_all()

    def wake(self) -> None:
        """End the session thread's current ``wait`` (a hang-up needs its attention)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for a backlog to write, a wake-up or a broken socket."""
        with self._cond:
            if not self._backlog and not self._woken and self.broken is None:
                self._cond.wait(timeout)
            self._woken = False

    def flush(self) -> None:
        """Write the backlog, blocking; raise ``OSError`` when the peer is gone."""
        while True:
            with self._cond:
                if self.broken is not None:
                    raise self.broken
                if not self._backlog:
                    self._writing = False
                    return
                data = bytes(self._backlog)
                self._backlog.clear()
                self._writing = True
            try:
                self._sock.sendall(data)
            except OSError as exc:
                with self._cond:
                    self.broken = exc
                    self._writing = False
                raise
