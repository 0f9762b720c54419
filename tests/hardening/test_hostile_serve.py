"""A hostile run against a real ``runarchive serve``: the download race, a planted journal, a
sparse central directory — over HTTP, on two gunicorn workers, the embedded valkey and the
service's own job worker.

One service for the module (``service``); users and grants are made with the ``runarchive``
account commands against its data dir, as an operator does. The data dir also holds the
embedded valkey's files, which change as it runs, so what is protected there is the secret
key (byte for byte) and the accounts database (its rows, and every file's mode).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runarchive.core import create_archive
from tests.hardening.hostile import (
    SQLITE_MAGIC,
    VICTIM_MARK,
    Secrets,
    environment,
    full_snapshot,
    make_victim_run,
    run_cli,
)
from tests.support.processes import CLI, alive, descendants, free_port
from tests.support.processes import http as http_json
from tests.support.runs import make_small_run
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

PASSWORD = "long enough password"
STAMP = "20240102T030405Z"
MiB = 1 << 20


@dataclass
class Service:
    root: Path
    port: int
    pid: int
    secrets: Secrets
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        done = run_cli(*args, "--data-dir", self.data, cwd=self.root)
        assert done.returncode == 0, done.stderr
        return done

    def request(self, method: str, path: str, who: str | None = "mallory",
                headers: dict[str, str] | None = None, body: Any = None,
                ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """One request on a fresh connection; every body and header is checked for secrets."""
        sent = dict(headers or {})
        if who is not None:
            sent["Authorization"] = f"Bearer {self.tokens[who]}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            got = response.read()
            heads = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        self.secrets.check(got, f"{method} {path}")
        self.secrets.check(json.dumps(heads), f"{method} {path} headers")
        return response.status, heads, got

    def wait_job(self, job_id: str) -> dict[str, Any]:
        """Poll the job until its final trigger is out; return its info."""

        def ended() -> dict[str, Any] | None:
            status, _, body = self.request("GET", f"/rq/api/jobinfo/{job_id}")
            info: dict[str, Any] = json.loads(body)
            return info if status == 200 and info["trigger"] else None

        found: dict[str, Any] = wait_until(ended, timeout=60, step=0.2)
        return found

    def gunicorn_workers(self) -> list[int]:
        """The web worker processes (children of ``serve`` that are not the job worker)."""
        found = []
        for pid in descendants(self.pid):
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                stat_line = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                if int(stat_line[1]) == self.pid and b"runarchive.jobs" not in cmdline:
                    found.append(pid)
        return found


def accounts_rows(data: Path) -> str:
    """The accounts tables' rows (the audit log, which records every action, aside)."""
    with contextlib.closing(sqlite3.connect(f"file:{data / 'runarchive.sqlite3'}?mode=ro",
                                            uri=True)) as conn:  # fmt: skip
        return "\n".join(
            line for line in conn.iterdump()
            if "audit_events" not in line and "sqlite_sequence" not in line
        )  # fmt: skip


def protected_data(data: Path) -> dict[str, Any]:
    """The secret key byte for byte, the accounts by their rows, every account file's mode."""
    key = data / "secret_key"
    return {
        "secret_key": (key.read_bytes(), stat.S_IMODE(key.stat().st_mode)),
        "accounts": hashlib.sha256(accounts_rows(data).encode()).hexdigest(),
        "modes": {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.glob("runarchive.sqlite3*")},
        "dir": stat.S_IMODE(data.stat().st_mode),
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("hostile-serve")
    runs, data, outside = root / "runs", root / "data", root / "outside"
    for folder in (runs, data, outside):
        folder.mkdir(mode=0o700)
    outside_secret = b"OUTSIDE-SECRET-" + secrets.token_hex(16).encode()
    (outside / "secret.txt").write_bytes(outside_secret)
    key = secrets.token_hex(32).encode()
    (data / "secret_key").write_bytes(key + b"\n")
    (data / "secret_key").chmod(0o600)
    port = free_port()
    env = {"SECRET_KEY": "serve-secret-" + secrets.token_hex(8), "RUNARCHIVE_WEB_WORKERS": "2",
           "RUNARCHIVE_WEB_THREADS": "8", "RUNARCHIVE_STOP_TIMEOUT": "5"}  # fmt: skip
    with (root / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), "--runs-root", str(runs), "--data-dir", str(data)],
            env=environment(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    started: set[int] = set()
    service = Service(root, port, proc.pid,
                      Secrets(outside_secret, key, SQLITE_MAGIC, VICTIM_MARK))  # fmt: skip
    try:
        wait_until(lambda: (lambda r: r[0] == 200 and r[1]["workers"])(
            http_json(f"http://127.0.0.1:{port}/healthz")), timeout=60, step=0.2)  # fmt: skip
        started = descendants(proc.pid)
        for name in ("victor", "mallory"):
            done = run_cli("users", "add", name, "--password-stdin", "--data-dir", data,
                           cwd=root, stdin=PASSWORD.encode())  # fmt: skip
            assert done.returncode == 0, done.stderr
            service.tokens[name] = service.cli("tokens", "create", name).stdout.decode().strip()
        yield service
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


@dataclass
class Pair:
    service: Service
    victim_id: str
    attacker_id: str
    attacker_archive: str
    before: dict[str, Any] = field(default_factory=dict)

    @property
    def victim(self) -> Path:
        return self.service.runs / self.victim_id

    @property
    def attacker(self) -> Path:
        return self.service.runs / self.attacker_id

    def protected(self) -> dict[str, Any]:
        return {"victim": full_snapshot(self.victim),
                "outside": full_snapshot(self.service.root / "outside"),
                "data": protected_data(self.service.data)}  # fmt: skip

    def assert_untouched(self) -> None:
        after = self.protected()
        for part, facts in after.items():
            assert facts == self.before[part], f"{part} changed"


@pytest.fixture
def pair(service: Service) -> Pair:
    tag = uuid.uuid4().hex[:8]
    victim_id, attacker_id = f"victim-{tag}", f"mallory-{tag}"
    create_archive(make_victim_run(service.runs, victim_id), "victim's own")
    attacker_archive = create_archive(make_small_run(service.runs, attacker_id), "first").name
    service.cli("runs", "grant", victim_id, "victor", "--allow-missing")
    service.cli("runs", "grant", attacker_id, "mallory", "--allow-missing")
    found = Pair(service, victim_id, attacker_id, attacker_archive)
    found.before = found.protected()
    return found


def test_a_planted_journal_is_refused_over_http_and_the_victim_is_untouched(pair: Pair) -> None:
    work = pair.attacker / "archives" / ".runarchive"
    (pair.attacker / ".runarchive-stage-x").mkdir()
    (work / "journal.json").write_text(
        json.dumps({"id": f"x/../../../{pair.victim_id}", "state": "staging"})
    )
    (pair.attacker / "PUBLIC").write_text("")
    base = f"/runs/{pair.attacker_id}"
    for who in ("mallory", None):
        status, _, body = pair.service.request("GET", f"{base}/archive/list", who)
        assert status == 200, body
        assert [a["name"] for a in json.loads(body)["archives"]] == [pair.attacker_archive]
        pair.assert_untouched()
    archive = {"archive_name": pair.attacker_archive}
    status, _, body = pair.service.request("POST", f"{base}/rq/api/delete-archive", body=archive)
    assert status == 409 and json.loads(body)["error"]["code"] == "unsafe_run"
    assert "is not one runarchive wrote" in json.loads(body)["error"]["message"]
    status, _, body = pair.service.request("POST", f"{base}/rq/api/restore-archive", body=archive)
    if status == 202:  # the service's own worker runs the job: it must fail, unsafe
        info = pair.service.wait_job(json.loads(body)["job_id"])
        assert info["trigger"] == "RESTORE_FAILED"
        assert "UnsafeRun" in info["exc_info"]
    else:
        assert status == 409, body
    pair.assert_untouched()
    assert (work / "journal.json").is_file() and (pair.attacker / "archives").is_dir()


class Swapper:
    """Replaces the attacker's archive with a link to each target and back, in a tight loop.

    Each step is one ``rename``: the archive name always exists, as a regular file (the real
    archive, hard-linked back in) or as a link to a secret.
    """

    def __init__(self, archive: Path, real: Path, targets: list[Path]) -> None:
        self.archive, self.real, self.targets = archive, real, targets
        self.swaps = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        folder = self.archive.parent
        while not self.stop.is_set():
            for target in self.targets:
                os.symlink(target, folder / ".swap-link")
                os.rename(folder / ".swap-link", self.archive)
                os.link(self.real, folder / ".swap-back")
                os.rename(folder / ".swap-back", self.archive)
                self.swaps += 1

    def __enter__(self) -> Swapper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_downloads_during_a_link_swapping_race_only_ever_send_the_real_archive(
    pair: Pair,
) -> None:
    service = pair.service
    archives = pair.attacker / "archives"
    real = archives / pair.attacker_archive
    truth = real.read_bytes()
    keep = pair.attacker / "real.zip"
    os.link(real, keep)
    targets = [service.data / "runarchive.sqlite3", service.data / "secret_key",
               service.root / "outside" / "secret.txt"]  # fmt: skip
    path = f"/runs/{pair.attacker_id}/archive/download/{pair.attacker_archive}"
    results: list[tuple[str, int, dict[str, str], bytes, tuple[int, int] | None]] = []
    leaks: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(20):
            kind = rng.choice(["GET", "RANGE", "HEAD"])
            span = None
            headers = {}
            if kind == "RANGE":
                start = rng.randrange(len(truth))
                span = (start, min(len(truth) - 1, start + rng.randrange(1, 4096)))
                headers["Range"] = f"bytes={span[0]}-{span[1]}"
            method = "HEAD" if kind == "HEAD" else "GET"
            try:
                status, heads, body = service.request(method, path, headers=headers)
            except (AssertionError, OSError, http.client.HTTPException) as exc:
                with lock:  # a secret served, or a response cut short (another file's size)
                    leaks.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
                continue
            with lock:
                results.append((kind, status, heads, body, span))

    began = time.monotonic()
    with Swapper(real, keep, targets) as swapper:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        while time.monotonic() - began < 3.0:  # the race runs for several seconds at least
            results.append(("GET", *service.request("GET", path)[:3], None))
    assert leaks == []
    assert swapper.swaps > 100
    assert len(results) >= 160
    served = 0
    for kind, status, heads, body, span in results:
        if status == 200 and kind != "HEAD":
            assert body == truth, (kind, len(body))
            served += 1
        elif status == 200:
            assert body == b"" and int(heads["content-length"]) == len(truth)
        elif status == 206:
            assert span is not None and body == truth[span[0] : span[1] + 1]
            served += 1
        else:
            assert status in (404, 409), (status, body[:200])
            if kind != "HEAD":  # a HEAD refusal carries no body
                assert json.loads(body)["error"]["code"] in ("not_found", "unsafe_run")
    assert served > 0  # the race did not simply refuse everything
    os.replace(keep, real)
    pair.assert_untouched()


def sparse_zip(path: Path, claimed_cd: int) -> None:
    """A file of a few KiB on disk whose end record claims a ``claimed_cd``-byte directory.

    60000 entries, not 0xFFFF: the sentinel would send a reader to look for zip64 records
    and fail early; a plain count makes a naive reader load the whole claimed directory.
    """
    eocd = b"PK\x05\x06" + (0).to_bytes(4, "little") + (60000).to_bytes(2, "little") * 2
    eocd += claimed_cd.to_bytes(4, "little") + (0).to_bytes(4, "little") + b"\x00\x00"
    with path.open("wb") as out:
        out.write(b"PK\x01\x02" + bytes(4092))  # a directory record's signature, then holes
        out.truncate(claimed_cd)
        out.seek(claimed_cd)
        out.write(eocd)


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


# The process's own peak (VmHWM of its memory map): ``ru_maxrss`` also counts the parent's
# pages at fork time on Linux, so under a big pytest process it reported pytest, not the CLI.
MAXRSS = ("import atexit, sys; atexit.register(lambda: sys.stderr.write('MAXRSS=%s\\n' % "
          "[l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])); "
          "from runarchive.cli import main; sys.argv[0] = 'runarchive'; main()")  # fmt: skip


def test_a_sparse_archive_claiming_a_gigabyte_directory_lists_unreadable_in_little_memory(
    pair: Pair,
) -> None:
    name = f"{pair.attacker_id}.{STAMP}.zip"
    planted = pair.attacker / "archives" / name
    sparse_zip(planted, 1 << 30)
    assert planted.stat().st_size > 1 << 30 and planted.stat().st_blocks * 512 < 64 * 1024
    workers = pair.service.gunicorn_workers()
    assert len(workers) == 2
    for _ in range(6):  # fresh connections: both workers answer some
        status, _, body = pair.service.request("GET", f"/runs/{pair.attacker_id}/archive/list")
        assert status == 200, body[:300]
        rows = {a["name"]: a for a in json.loads(body)["archives"]}
        assert rows[name]["readable"] is False
        assert rows[pair.attacker_archive]["readable"] is True
    for pid in workers:
        assert vm_hwm_kib(pid) < 200 * 1024, f"gunicorn worker {pid}: {vm_hwm_kib(pid)} KiB"

    done = subprocess.run([sys.executable, "-c", MAXRSS, "list", f"runs/{pair.attacker_id}",
                           "--json"], cwd=pair.service.root, capture_output=True, timeout=60,
                          env=environment())  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = [a for a in json.loads(done.stdout)["archives"] if a["name"] == name]
    assert row["readable"] is False and row["error"], row
    maxrss = int(done.stderr.decode().rsplit("MAXRSS=", 1)[1])
    assert maxrss < 200 * 1024, f"runarchive list: {maxrss} KiB"
    pair.assert_untouched()
