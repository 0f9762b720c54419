"""Real ``runarchive`` processes: a clean environment, the CLI, free ports, the process tree."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "runarchive"]
CLEARED = ("REDIS_URL", "RUNARCHIVE_REDIS_URL", "RUNARCHIVE_DATABASE_URL", "SECRET_KEY",
           "RUNARCHIVE_SECRET_KEY", "RUNARCHIVE_DEMO", "RUNARCHIVE_RUNS_ROOT")  # fmt: skip


def environment(**extra: str) -> dict[str, str]:
    """The test's environment without any deployment settings of the machine."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(extra)
    return env


def run_cli(*args: str | Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(**env),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (gunicorn workers, the job worker, valkey)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie or a process being reaped has ended


def children() -> list[int]:
    """The processes this process forked and has not reaped (a worker pool's children)."""
    found: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as fh:
            found += [int(pid) for pid in fh.read().split()]
    return found


def open_fds() -> set[int]:
    """The descriptors this process holds open."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    """Wait up to ``seconds`` for every process in ``pids`` to end; return those still alive."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.02)
    return [pid for pid in pids if alive(pid)]


def pids_outliving_a_killed_parent(script: str) -> list[int]:
    """Run ``script`` in a new interpreter: it prints its worker children's pids and then kills
    itself with SIGKILL. Return those children still alive 5 s later (none, if they die with
    their parent); the parent must have died by its own SIGKILL, having printed two pids."""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2, proc.stdout
    return wait_gone(pids, 5)


def http(url: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, ConnectionError):
        return 0, None


def stop_session(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM a process started in a session of its own, wait, then SIGKILL what is left of it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the session we created, nothing else
