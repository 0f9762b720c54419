"""A real ``runarchive serve`` in a folder of its own: the launcher the browser tests and the
service benchmark share.

``serve`` runs in a session of its own (``start_new_session``), so stopping it can also kill
whatever it left in that group — never anything else. Health is ``GET /healthz`` answering 200
with at least the wanted number of job workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.support.processes import free_port

# Variables of the caller's shell that would point serve at another deployment.
FOREIGN = frozenset({"REDIS_URL", "RUNARCHIVE_DATABASE_URL", "RUNARCHIVE_RUNS_ROOT"})


class ServeFailed(RuntimeError):
    """``serve`` exited or did not become healthy in time (the message ends with its log)."""


def runarchive_command() -> list[str]:
    """Return the ``runarchive`` entry point of this interpreter's environment."""
    script = Path(sys.executable).with_name("runarchive")
    return [str(script)] if script.exists() else [sys.executable, "-m", "runarchive"]


class Serve:
    """``runarchive serve`` on a free port with its data dir and runs root under ``base``."""

    def __init__(self, base: Path, env: Mapping[str, str] | None = None) -> None:
        self.data_dir, self.runs_root = base / "data", base / "runs"
        self.runs_root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "serve.log"
        self.env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        self.env.update(env or {})
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stop_timeout = 40.0

    @property
    def command(self) -> list[str]:
        """The ``serve`` command line."""
        return [*runarchive_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--runs-root", str(self.runs_root)]  # fmt: skip

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The ``serve`` process (the first one started), if any."""
        return self.procs[0] if self.procs else None

    def start(self, workers: int = 0, timeout: float = 120) -> None:
        """Start ``serve`` and wait until it is healthy with ``workers`` job workers."""
        self.procs.insert(0, self.spawn(self.command, self.log))
        self.wait_healthy(workers, timeout)

    def spawn(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``command`` in a session of its own with the service's environment."""
        with log.open("ab") as out:
            return subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def wait_healthy(self, workers: int = 0, timeout: float = 120) -> None:
        """Wait for ``/healthz`` to answer 200 with ``workers`` workers; ServeFailed if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.proc
            if proc is not None and proc.poll() is not None:
                raise ServeFailed(
                    f"runarchive serve exited with {proc.returncode}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(urllib.error.URLError, OSError, ValueError),
                urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response,
            ):
                if response.status == 200 and json.load(response).get("workers", 0) >= workers:
                    return
            time.sleep(0.25)
        raise ServeFailed(f"runarchive serve did not become healthy:\n{self.log_tail()}")

    def cli(
        self, *args: str, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``runarchive ARGS --data-dir DATA`` against the service's database."""
        return subprocess.run(
            [*runarchive_command(), *args, "--data-dir", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of serve's log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop every process started (serve stops its valkey and worker), then their groups."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the session we created, nothing else
        self.procs.clear()
