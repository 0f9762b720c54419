"""A real ``runarchive serve`` (two gunicorn workers, the embedded valkey, a job worker) under
the attacks of issue 11: slow clients, readable files, revocations made by another process.

One service for the module; the account commands run as their own processes against its data
dir while it serves, as an operator runs them.
"""

from __future__ import annotations

import contextlib
import http.client as httpclient
import os
import signal
import socket
import stat
import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runarchive.web.httpworker import HEAD_TIMEOUT
from tests.support.clients import Browserless
from tests.support.processes import CLI, alive, descendants, environment, free_port, http, run_cli
from tests.support.runs import make_small_run
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

PASSWORD = "long enough password"
RUNID = "run-hardened"


@dataclass
class Service:
    base: str
    port: int
    data: Path
    log: Path

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--data-dir", self.data, stdin=stdin)

    def add_user(self, name: str) -> str:
        """Add ``name`` owning the module's run; return an API token of theirs."""
        assert self.cli("users", "add", name, "--password-stdin", stdin=PASSWORD).returncode == 0
        assert self.cli("runs", "grant", RUNID, name, "--allow-missing").returncode == 0
        return self.cli("tokens", "create", name).stdout.strip()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("serve")
    runs, data = root / "runs", root / "data"
    make_small_run(runs, RUNID)
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # as an older version left it: serve must tighten it
    port = free_port()
    log = root / "serve.log"
    env = {"SECRET_KEY": "test-secret", "RUNARCHIVE_WEB_WORKERS": "2",
           "RUNARCHIVE_WEB_THREADS": "4", "RUNARCHIVE_STOP_TIMEOUT": "5"}  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), "--runs-root", str(runs), "--data-dir", str(data)],
            env=environment(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    started: set[int] = set()
    try:
        wait_until(lambda: (lambda r: r[0] == 200 and r[1]["workers"])(http(f"{base}/healthz")),
                   timeout=60, step=0.2)  # fmt: skip
        started = descendants(proc.pid)
        yield Service(base, port, data, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in started:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def timed_health(port: int, timeout: float = 10.0) -> tuple[int, float]:
    began = time.monotonic()
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
    except (TimeoutError, OSError):
        status = 0
    finally:
        conn.close()
    return status, time.monotonic() - began


class Slowloris:
    """``count`` connections, each sending a request head one byte per ``interval``."""

    HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 4000

    def __init__(self, port: int, count: int, interval: float = 0.5) -> None:
        self.socks = [
            socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)
        ]
        self.interval = interval
        self.closed: set[int] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        sent = 0
        while not self.stopping.is_set() and sent < len(self.HEAD):
            for index, sock in enumerate(self.socks):
                if index in self.closed:
                    continue
                try:
                    sock.send(self.HEAD[sent : sent + 1])
                except OSError:
                    self.closed.add(index)
            sent += 1
            self.stopping.wait(self.interval)

    def dropped_by_server(self) -> int:
        """Count connections the server has closed (a read sees EOF or a reset)."""
        for index, sock in enumerate(self.socks):
            if index in self.closed:
                continue
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    self.closed.add(index)
            except BlockingIOError:
                pass
            except OSError:
                self.closed.add(index)
        return len(self.closed)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        for sock in self.socks:
            sock.close()


def test_health_answers_at_once_while_150_clients_send_headers_a_byte_at_a_time(
    service: Service,
) -> None:
    attack = Slowloris(service.port, 150)
    try:
        time.sleep(2.0)  # every slow connection has sent bytes: gthread gave each a thread
        probes = [timed_health(service.port) for _ in range(5)]
        assert all(status == 200 for status, _ in probes), probes
        assert max(took for _, took in probes) < 2.0, probes

        conn = httpclient.HTTPConnection("127.0.0.1", service.port, timeout=5)
        try:  # kept-alive connections still serve several requests
            for _ in range(3):
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                assert response.status == 200 and b'"status":"ok"' in response.read()
        finally:
            conn.close()

        # A head not complete within HEAD_TIMEOUT is dropped, which frees its connection slot.
        wait_until(lambda: attack.dropped_by_server() == 150, timeout=HEAD_TIMEOUT + 5, step=0.5)
    finally:
        attack.stop()
    assert timed_health(service.port)[0] == 200


def test_the_data_dir_and_the_files_in_it_are_the_owners_only_after_a_real_start(
    service: Service,
) -> None:
    assert stat.S_IMODE(service.data.stat().st_mode) == 0o700
    token = service.add_user("mode-check")  # writes through SQLite (its -wal and -shm)
    assert http(f"{service.base}/runs/{RUNID}/archive/list", token=token)[0] == 200
    found = {}
    for path in service.data.rglob("*"):
        if path.is_file() or path.is_socket():
            found[path.relative_to(service.data).as_posix()] = stat.S_IMODE(path.stat().st_mode)
    expected = {"runarchive.sqlite3", "runarchive.sqlite3-wal", "runarchive.sqlite3-shm",
                "valkey.url", "valkey.conf", "valkey.log", "valkey.sock"}  # fmt: skip
    assert expected <= set(found), found
    assert any(name.startswith("appendonlydir/") for name in found), found
    loose = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert loose == {}
    for folder in service.data.rglob("*"):
        if folder.is_dir():
            assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0, folder


def api_status(client: Browserless, path: str) -> int:
    try:
        client.get(path)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code
    return 200


def test_cli_revocations_apply_to_every_serve_worker_on_the_next_request(
    service: Service,
) -> None:
    """Twenty fresh connections per check land on both gunicorn workers."""
    listing = f"/runs/{RUNID}/archive/list"
    token = service.add_user("revoked-olga")
    browser = Browserless(service.base)
    assert RUNID in browser.login("revoked-olga", PASSWORD)
    assert [api_status(browser, listing) for _ in range(20)] == [200] * 20
    assert [http(service.base + listing, token=token)[0] for _ in range(20)] == [200] * 20

    revoked = service.cli("tokens", "revoke", "revoked-olga")
    assert revoked.returncode == 0 and "revoked 1 token" in revoked.stdout
    assert [http(service.base + listing, token=token)[0] for _ in range(20)] == [401] * 20
    assert api_status(browser, listing) == 200  # the session is another credential

    changed = service.cli("users", "passwd", "revoked-olga", "--password-stdin",
                          stdin="a new long password\n")  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert [api_status(browser, listing) for _ in range(20)] == [401] * 20
    assert 'name="username"' in browser.get("/")  # the page sends it to the login form

    second = service.add_user("removed-rita")
    rita = Browserless(service.base)
    rita.login("removed-rita", PASSWORD)
    assert api_status(rita, listing) == 200
    assert service.cli("users", "remove", "removed-rita").returncode == 0
    assert [api_status(rita, listing) for _ in range(20)] == [401] * 20
    assert [http(service.base + listing, token=second)[0] for _ in range(20)] == [401] * 20
