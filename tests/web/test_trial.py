"""The newcomer path: ``runarchive serve --demo`` (what ``make run`` runs) works, logs in with
the printed credentials, stops everything on Ctrl-C, and reuses its data on the next start."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runarchive.core import create_archive
from runarchive.web.server import GRACEFUL_TIMEOUT
from tests.support.clients import Browserless
from tests.support.processes import CLI, alive, descendants, environment, free_port, http
from tests.support.waiting import wait_until

BANNER = re.compile(r"username\s+(\S+)\s+password\s+(\S+)")


def start(
    data: Path, port: int, log: Path, spawned: set[int], cwd: Path | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    with log.open("wb") as out:
        # A session of its own, so the test can send Ctrl-C to the whole group as a terminal does.
        proc = subprocess.Popen(
            [*CLI, "serve", "--demo", "--data-dir", str(data), "--port", str(port)],
            env=environment(RUNARCHIVE_WEB_WORKERS="1", RUNARCHIVE_STOP_TIMEOUT="5"),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd,
        )  # fmt: skip
    found = wait_until(lambda: BANNER.search(log.read_text()), timeout=60, step=0.2)
    wait_until(lambda: http(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=60, step=0.2)
    # The job worker runs in a session of its own: remember it, so a failing test kills it too.
    spawned.update(descendants(proc.pid))
    return proc, found[1], found[2]


def ctrl_c(proc: subprocess.Popen[bytes], log: Path) -> set[int]:
    started = descendants(proc.pid)
    began = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    wait_until(lambda: not any(alive(pid) for pid in started), timeout=20)
    # Every process stopped on its own: no web worker waited out the graceful timeout.
    assert time.monotonic() - began < GRACEFUL_TIMEOUT
    assert "was sent SIGKILL" not in log.read_text()
    return started


@pytest.mark.slow
def test_demo_serve_logs_in_stops_on_ctrl_c_and_reuses_its_data(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    spawned: set[int] = set()
    ctrl_c_reaped: set[int] = set()
    proc, user, password = start(data, port, tmp_path / "first.log", spawned)
    try:
        assert user == "demo"
        assert "http://127.0.0.1:" in (tmp_path / "first.log").read_text()
        client = Browserless(base)
        index = client.login(user, password)
        assert "demo-pinecone" in index
        listed = json.loads(client.get("/runs/demo-pinecone/archive/list"))
        assert (listed["archives"], listed["in_progress"], listed["job_id"]) == ([], False, None)
        run = data / "runs" / "demo-pinecone"
        assert len(list(run.rglob("*.nodb"))) >= 5
        started = ctrl_c(proc, tmp_path / "first.log")
        ctrl_c_reaped |= started
        assert len(started) >= 3  # gunicorn worker(s), the job worker, valkey
        assert not (data / "valkey.url").exists()
        assert http(f"{base}/healthz")[0] == 0

        made = create_archive(run, "between starts")
        proc, user2, password2 = start(data, port, tmp_path / "second.log", spawned)
        assert (user2, password2) == (user, password)
        client = Browserless(base)
        client.login(user2, password2)
        listed = json.loads(client.get("/runs/demo-pinecone/archive/list"))
        assert [(a["name"], a["comment"]) for a in listed["archives"]] == [
            (made.name, "between starts")
        ]
        ctrl_c_reaped |= ctrl_c(proc, tmp_path / "second.log")
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in spawned - ctrl_c_reaped:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_relative_data_dir_from_another_directory_serves_downloads_and_prints_it_absolute(
    tmp_path: Path,
) -> None:
    # What `make run` does, typed in a folder that is not the package's: `--data-dir data`.
    port, spawned = free_port(), set()
    proc, user, password = start(Path("data"), port, tmp_path / "serve.log", spawned, tmp_path)
    try:
        log = (tmp_path / "serve.log").read_text()
        assert f"data dir  {tmp_path / 'data'}" in log
        assert f"export RUNARCHIVE_DATA_DIR={tmp_path / 'data'}" in log
        made = create_archive(tmp_path / "data" / "runs" / "demo-pinecone", "to download")
        client = Browserless(f"http://127.0.0.1:{port}")
        client.login(user, password)
        with client.opener.open(
            f"{client.base}/runs/demo-pinecone/archive/download/{made.name}", timeout=30
        ) as response:
            assert response.status == 200
            body = response.read()
        assert body == made.path.read_bytes()
        ctrl_c(proc, tmp_path / "serve.log")
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in spawned:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_a_busy_port_is_refused_before_any_banner_naming_the_holder(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [*CLI, "serve", "--demo", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
            env=environment(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"Port {port} on 127.0.0.1 is already in use by process {os.getpid()}" in done.stderr
    assert f"make run PORT={port + 1}" in done.stderr
    assert "password" not in done.stdout + done.stderr
    assert not (tmp_path / "data" / "valkey.url").exists()
