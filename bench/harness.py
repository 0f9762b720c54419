"""The service benchmark's harness: a real ``runarchive serve`` with an admin's API token.

Built on the launcher the browser tests use (``tests/support/serve.py``); this adds what the
benchmarks measure with: plain ``http.client`` requests (one keep-alive connection when asked),
job polling, a second worker, the gunicorn worker pids, and the statistics helpers.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.support.serve import Serve, runarchive_command

from runarchive.synthetic_run import generate_run

WEB_THREADS = 256
WS_MAX_SOCKETS = 220


class Service(Serve):
    """A real ``runarchive serve`` in a temp folder, an admin user and its API token."""

    def __init__(self, base: Path, web_workers: int = 1) -> None:
        super().__init__(
            base,
            {
                "SECRET_KEY": secrets.token_hex(32),
                "RUNARCHIVE_WEB_WORKERS": str(web_workers),
                "RUNARCHIVE_WEB_THREADS": str(WEB_THREADS),
                "RUNARCHIVE_WS_MAX_SOCKETS": str(WS_MAX_SOCKETS),
                "RUNARCHIVE_WS_MAX_SOCKETS_PER_USER": str(WS_MAX_SOCKETS),
            },
        )
        self.token = ""
        self.redis_url = ""

    def run_cli(self, *args: str, stdin: str | None = None) -> str:
        """Run a ``runarchive`` command against the service's data; raise unless it succeeds."""
        done = self.cli(*args, stdin=stdin)
        done.check_returncode()
        return done.stdout

    def start(self, workers: int = 1, timeout: float = 120) -> None:
        """Start serve with its worker, then make the admin and its token."""
        super().start(workers, timeout)
        self.run_cli("users", "add", "admin", "--admin", "--password-stdin", stdin="pw-" * 8)
        self.token = self.run_cli("tokens", "create", "admin").strip().splitlines()[-1]
        self.redis_url = (self.data_dir / "valkey.url").read_text().strip()

    def add_worker(self) -> subprocess.Popen[bytes]:
        command = [
            *runarchive_command(),
            "worker",
            "--data-dir",
            str(self.data_dir),
            "--runs-root",
            str(self.runs_root),
        ]
        proc = self.spawn(command, self.log.with_name("worker2.log"))
        self.procs.append(proc)
        self.wait_healthy(workers=2)
        return proc

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        auth: bool = True,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, bytes, float]:
        """Send one request; return status, body and seconds until the body was read."""
        own = conn is None
        c = conn or self.connection()
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            started = time.perf_counter()
            c.request(method, path, body=payload, headers=headers)
            response = c.getresponse()
            data = response.read()
            return response.status, data, time.perf_counter() - started
        finally:
            if own:
                c.close()

    def archive(self, runid: str) -> str:
        status, body, _ = self.request("POST", f"/runs/{runid}/rq/api/archive", {})
        if status != 202:
            raise RuntimeError(f"archive {runid}: {status} {body[:300]!r}")
        return str(json.loads(body)["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        status, body, _ = self.request("GET", f"/rq/api/jobstatus/{job_id}")
        if status != 200:
            raise RuntimeError(f"jobstatus {job_id}: {status} {body[:300]!r}")
        found: dict[str, Any] = json.loads(body)
        return found

    def wait_job(self, job_id: str, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("trigger"):
                return info
            time.sleep(0.2)
        raise RuntimeError(f"job {job_id} did not finish")

    def web_worker_pids(self) -> list[int]:
        """The gunicorn workers: the serve children whose command line is serve's own."""
        master = self.procs[0].pid
        mine = Path(f"/proc/{master}/cmdline").read_bytes()
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        found = []
        for child in children:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/cmdline").read_bytes() == mine:
                    found.append(int(child))
        if not found:
            raise RuntimeError("no gunicorn worker found")
        return found

    def web_worker_pid(self) -> int:
        """The first gunicorn worker (the only one with the default ``--web-workers 1``)."""
        return self.web_worker_pids()[0]


@contextlib.contextmanager
def running_service(base: Path, web_workers: int = 1) -> Iterator[Service]:
    service = Service(base, web_workers)
    try:
        service.start()
        yield service
    finally:
        service.stop()


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Return n, p50, p95, p99 and max of ``seconds``, in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return {"n": 0}
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return {
        "n": len(ms),
        "p50": round(cuts[49], 2),
        "p95": round(cuts[94], 2),
        "p99": round(cuts[98], 2),
        "max": round(ms[-1], 2),
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def make_run(service: Service, runid: str, mib: float, files: int, seed: int = 0) -> Path:
    run = service.runs_root / runid
    generate_run(run, seed=seed, target_bytes=int(mib * 2**20), files=files)
    return run
