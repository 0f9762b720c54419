"""gunicorn's gthread worker, changed so that slow clients cannot take its threads.

gthread hands a connection to a thread as soon as its first byte arrives, and the thread then
reads the request head with a blocking socket and no deadline. A client sending its headers a
byte at a time (slowloris) holds a thread for as long as it likes: 150 of them held every
thread of two workers and the health probe waited 30 s behind them.

``HeadFirstWorker`` reads the request head in the worker's event loop instead, without a
thread: the socket stays non-blocking and registered with the loop's selector, each readable
event appends what arrived, and only a connection whose head is complete (the blank line after
the headers) is given to a thread, with the bytes handed to gunicorn's parser as if it had read
them itself. A slow connection costs a buffer and a file descriptor, not a thread. A head not
complete within ``HEAD_TIMEOUT`` seconds, or larger than ``MAX_HEAD`` bytes, is dropped (the
connection closed without an answer, as nginx does for ``client_header_timeout``). Kept-alive
connections go through the same wait for their next request. Connections still count against
gunicorn's ``worker_connections``, so a flood of many more connections than that still needs
the reverse proxy's limits (``docs/deployment.md``).

TLS and HTTP/2 prior-knowledge connections, where the first bytes are not an HTTP/1 head, keep
gunicorn's own handling (``serve`` uses neither: TLS ends at the proxy). The class uses
gunicorn's gthread internals (``TConn``, the selector, ``keepalived_conns``, ``nr_conns``), so
the gunicorn version is pinned to one major release in ``pyproject.toml``.
"""

from __future__ import annotations

import errno
import selectors
import time
from collections import deque
from contextlib import suppress
from functools import partial
from typing import Any

from gunicorn.http2 import negotiation  # type: ignore[import-untyped]
from gunicorn.workers.gthread import TConn, ThreadWorker  # type: ignore[import-untyped]

HEAD_TIMEOUT = 10.0
MAX_HEAD = 64 * 1024
END_OF_HEAD = (b"\r\n\r\n", b"\n\n")


class HeadFirstWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, but a connection gets a thread only once its request head has arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heads: deque[Any] = deque()  # connections reading a head, oldest deadline first

    def _reads_heads(self, conn: Any) -> bool:
        return not self.cfg.is_ssl and not negotiation.prior_knowledge_allowed(
            self.cfg, conn.client
        )

    def accept(self, listener: Any) -> None:
        """Accept a connection and wait, in the loop, for its request head."""
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = TConn(self.cfg, sock, client, listener.getsockname())  # non-blocking
        if not self._reads_heads(conn):
            sock.setblocking(True)
            self.enqueue_req(conn)
            return
        self._wait_for_head(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection has bytes: wait for its whole next head too."""
        if not self._reads_heads(conn):
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._wait_for_head(conn)
        self._on_head_bytes(conn, client)

    def _wait_for_head(self, conn: Any) -> None:
        conn.head = bytearray()
        conn.head_deadline = time.monotonic() + HEAD_TIMEOUT
        self.heads.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_bytes, conn))

    def _on_head_bytes(self, conn: Any, _sock: Any) -> None:
        try:
            data = conn.sock.recv(MAX_HEAD)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop_head(conn)
            return
        conn.head += data
        if any(end in conn.head for end in END_OF_HEAD):
            self._stop_waiting(conn)
            conn.data_ready = True
            self.enqueue_req(conn)
        elif len(conn.head) > MAX_HEAD:
            self._drop_head(conn)

    def _stop_waiting(self, conn: Any) -> None:
        with suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        with suppress(ValueError):
            self.heads.remove(conn)

    def _drop_head(self, conn: Any) -> None:
        self._stop_waiting(conn)
        self.nr_conns -= 1
        conn.close()

    def handle(self, conn: Any) -> Any:
        """Give the head read in the loop to gunicorn's parser, then serve as gthread does."""
        head = bytes(getattr(conn, "head", b""))
        if head:
            conn.head = bytearray()
            conn.sock.setblocking(True)
            conn.init()  # makes the parser (plain HTTP/1: reads nothing)
            conn.parser.unreader.unread(head)
        return super().handle(conn)

    def murder_pending(self) -> None:
        """Also drop heads past their deadline (every head, once the worker is stopping)."""
        super().murder_pending()
        now = time.monotonic()
        while self.heads and (not self.alive or self.heads[0].head_deadline <= now):
            self._drop_head(self.heads[0])
