"""The outlet on real connected sockets: direct writes, backlog order, the limit, TLS fallback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from runarchive.web.outlet import Outlet


class WrappedSocket(socket.socket):
    """A socket subclass, as TLS and green sockets are: never written from another thread."""


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    for sock in (server, client):  # small buffers: a stalled reader shows after a few KiB
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    sock.settimeout(10)
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "peer closed early"
        data += chunk
    return bytes(data)


def test_a_reading_peer_gets_every_push_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    outlet = Outlet(server)
    for i in range(50):
        assert outlet.push(f"line {i:03}\n".encode())
        assert read_exactly(client, 9) == f"line {i:03}\n".encode()
    outlet.flush()  # nothing was left behind
    assert outlet.broken is None


def test_a_stalled_peer_gets_a_backlog_in_order_without_blocking_the_pusher(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    outlet = Outlet(server, limit=1 << 20)
    frames = [f"{i:06}".encode() * 100 for i in range(400)]  # 240 KB, far over the buffers
    for frame in frames:
        assert outlet.push(frame)  # returns at once although nobody reads
    expected = b"".join(frames)
    writer = threading.Thread(target=outlet.flush)  # the session thread's part
    writer.start()
    received = read_exactly(client, len(expected))
    writer.join(10)
    assert received == expected
    assert outlet.push(b"after") and read_exactly(client, 5) == b"after"


def test_a_peer_too_far_behind_is_cut_off(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    outlet = Outlet(server, limit=64 * 1024)
    pushed = 0
    while outlet.push(b"x" * 1000):
        pushed += 1
        assert pushed < 1000, "the limit never tripped"
    assert pushed * 1000 >= 64 * 1024 - 1000  # the limit counts the backlog, not one frame
    assert isinstance(outlet.broken, BrokenPipeError)
    assert not outlet.push(b"more")
    with pytest.raises(OSError):
        outlet.flush()
    client.settimeout(10)
    drained = b""
    while chunk := client.recv(65536):  # the server side was shut down: EOF follows the data
        drained += chunk
    assert 0 < len(drained) < pushed * 1000


def test_a_wrapped_socket_is_written_only_by_flush(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    wrapped = WrappedSocket(fileno=server.detach())
    outlet = Outlet(wrapped)
    assert outlet.push(b"queued")
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(10)  # nothing written yet
    outlet.flush()
    assert read_exactly(client, 6) == b"queued"
    wrapped.close()


def test_a_closed_socket_refuses_pushes_and_wakes_its_waiter(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _ = pair
    outlet = Outlet(server)
    server.close()
    assert not outlet.push(b"x")
    assert outlet.broken is not None
    outlet.wait(5)  # returns at once: a broken outlet never sleeps
    with socket.socket() as unused:
        other = Outlet(unused)
        other.close()  # the owner is about to close the socket: nothing may be written
        assert not other.push(b"x")
