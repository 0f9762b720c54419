"""Real ``runarchive worker`` processes for a test's deployment, and their process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from runarchive.core import POLICY_ENV
from runarchive.jobs import Settings

WORKER_TIMEOUT = 90


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a worker process see the test's deployment."""
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.pop("RUNARCHIVE_REDIS_URL", None)
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    for rule, var in POLICY_ENV.items():  # the site's retention default, when a test sets one
        env.pop(var, None)
        if getattr(settings, rule):
            env[var] = str(getattr(settings, rule))
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
            "RUNARCHIVE_SCRUB_INTERVAL": str(settings.scrub_interval),
            "RUNARCHIVE_SCRUB_RATE": str(settings.scrub_rate),
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

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a worker; ``env`` adds to (or overrides) its environment."""
        log = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [*WORKER_CMD, *args],
            env={**worker_env(self.settings), **(env or {})},
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


LIMIT_FSIZE = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


def start_limited_worker(pool: Workers, max_file_bytes: int, *args: str) -> subprocess.Popen[bytes]:
    """Start a real worker whose processes may not write a file past ``max_file_bytes``.

    Python ignores SIGXFSZ, so a write past the limit fails with ``EFBIG`` — to the core,
    exactly like a full disk.
    """
    log = open(pool.logs / f"worker-{len(pool.procs)}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LIMIT_FSIZE,
            str(max_file_bytes),
            "-m",
            "runarchive.jobs",
            "worker",
            *args,
        ],
        env=worker_env(pool.settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    pool.procs.append(proc)
    return proc
