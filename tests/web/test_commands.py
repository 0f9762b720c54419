"""The web commands as an operator uses them: real processes, exit codes, the stored accounts.

``serve`` is started for real (gunicorn, the embedded valkey, a worker), used through its API
to archive a run, and stopped with SIGTERM or SIGINT; no process it started may outlive it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import simple_websocket
from click.testing import CliRunner

from runarchive.cli import cli
from runarchive.web.accounts import hash_token
from tests.support.processes import CLI, alive, descendants, environment, free_port, http, run_cli
from tests.support.runs import make_small_run
from tests.support.waiting import wait_until


@pytest.mark.slow
def test_accounts_are_managed_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = run_cli("users", "add", "carol", "--admin", "--password-stdin", "--data-dir", data,
                    stdin="long enough password\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    (data / "runs" / "run-1").mkdir(parents=True)  # grants name runs that exist
    granted = run_cli("runs", "grant", "run-1", "carol", "--data-dir", data)
    assert granted.returncode == 0 and "granted run-1 to carol" in granted.stdout
    created = run_cli("tokens", "create", "carol", "--data-dir", data)
    assert created.returncode == 0
    token = created.stdout.strip()
    assert token.startswith("ra_") and len(token) > 40

    with sqlite3.connect(data / "runarchive.sqlite3") as conn:
        query = "SELECT is_admin, password_hash FROM users WHERE name='carol'"
        admin = conn.execute(query).fetchone()
        runs = conn.execute("SELECT runid FROM run_access").fetchall()
        hashes = [row[0] for row in conn.execute("SELECT token_hash FROM api_tokens")]
    assert admin[0] == 1 and admin[1].startswith("scrypt:")
    assert runs == [("run-1",)]
    assert hashes == [hash_token(token)]


def test_account_commands_refuse_bad_input_with_exit_2(tmp_path: Path) -> None:
    """In-process (click's runner) for speed; the commands and database are the real ones."""
    data = str(tmp_path / "data")
    runner = CliRunner()

    def invoke(*args: str, stdin: str = "long enough password\n") -> Any:
        return runner.invoke(cli, [*args, "--data-dir", data], input=stdin)

    assert invoke("users", "add", "carol", "--password-stdin").exit_code == 0
    again = invoke("users", "add", "carol", "--password-stdin")
    assert again.exit_code == 2 and "already exists" in again.output
    short = invoke("users", "add", "dave", "--password-stdin", stdin="x\n")
    assert short.exit_code == 2 and "too short" in short.output
    assert invoke("users", "add", "../x", "--password-stdin").exit_code == 2
    prompted = invoke("users", "add", "erin", stdin="long enough password\nlong enough password\n")
    assert prompted.exit_code == 0, prompted.output
    ghost = invoke("runs", "grant", "run-1", "carol")
    assert ghost.exit_code == 1 and "Run run-1 not found" in ghost.output
    assert "--allow-missing" in ghost.output
    assert invoke("runs", "grant", "run-1", "carol", "--allow-missing").exit_code == 0
    (tmp_path / "data" / "runs" / "run-1").mkdir(parents=True)
    assert "already owns" in invoke("runs", "grant", "run-1", "carol").output
    assert invoke("runs", "grant", "../etc", "carol").exit_code == 2
    assert invoke("runs", "grant", "run-1", "nobody").exit_code == 1
    assert invoke("tokens", "create", "nobody").exit_code == 1
    assert "revoked run-1 from carol" in invoke("runs", "revoke", "run-1", "carol").output
    with sqlite3.connect(tmp_path / "data" / "runarchive.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM run_access").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM users").fetchone() == (2,)


@pytest.mark.slow
def test_the_database_url_option_wins_over_the_data_dir(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    added = run_cli(
        *("users", "add", "erin", "--password-stdin", "--database-url", url),
        stdin="long enough password\n",
        RUNARCHIVE_DATA_DIR=str(tmp_path / "d"),
    )
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "elsewhere.db").is_file()
    assert not (tmp_path / "d" / "runarchive.sqlite3").exists()


@pytest.mark.slow
def test_serve_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    result = run_cli("serve", "--runs-root", tmp_path, "--data-dir", tmp_path / "data")
    assert result.returncode == 2
    assert "SECRET_KEY" in result.stderr
    assert not (tmp_path / "data" / "valkey.url").exists()


# --- serve, for real ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_runs_the_whole_service_and_leaves_no_process_behind(
    tmp_path: Path, sig: signal.Signals
) -> None:
    runs, data = tmp_path / "runs", tmp_path / "data"
    make_small_run(runs, "run-serve")
    env = {"SECRET_KEY": "test-secret", "RUNARCHIVE_WEB_WORKERS": "1",
           "RUNARCHIVE_WEB_THREADS": "4", "RUNARCHIVE_STOP_TIMEOUT": "5"}  # fmt: skip
    assert run_cli("users", "add", "olga", "--password-stdin", "--data-dir", data,
                   stdin="long enough password\n").returncode == 0  # fmt: skip
    assert run_cli("runs", "grant", "run-serve", "olga", "--data-dir", data,
                   "--runs-root", runs).returncode == 0  # fmt: skip
    token = run_cli("tokens", "create", "olga", "--data-dir", data).stdout.strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--runs-root", str(runs), "--data-dir", str(data)],
        env=environment(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    started: set[int] = set()
    try:
        health = wait_until(lambda: (lambda r: r[1] if r[0] == 200 and r[1]["workers"] else None)(
            http(f"{base}/healthz")), timeout=60, step=0.2)  # fmt: skip
        assert health == {"status": "ok", "database": "ok", "redis": "ok", "workers": 1}
        assert (data / "valkey.url").is_file()
        started = descendants(proc.pid)
        assert len(started) >= 3  # a gunicorn worker, the job worker, valkey

        status, body = http(f"{base}/runs/run-serve/rq/api/archive", token=token,
                            body={"comment": "via serve"})  # fmt: skip
        assert status == 202, body
        listed = wait_until(lambda: http(f"{base}/runs/run-serve/archive/list", token=token)[1]
                            if list((runs / "run-serve" / "archives").glob("*.zip")) else None,
                            timeout=30)  # fmt: skip
        assert listed["archives"][0]["comment"] == "via serve"

        ws = simple_websocket.Client.connect(
            f"ws://127.0.0.1:{port}/status/run-serve:archive?since=0",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:  # the retained lines of the archive job are sent through gunicorn (since=0)
            replay = wait_until(lambda: json.loads(ws.receive(timeout=5) or "null"), timeout=10)
            assert replay["type"] == "status" and "ENQUEUED" in replay["data"]
            stopping = time.monotonic()
            proc.send_signal(sig)
            frames = []
            with contextlib.suppress(simple_websocket.ConnectionClosed):
                while (raw := ws.receive(timeout=10)) is not None:
                    frames.append(json.loads(raw))
            wait_until(lambda: not ws.connected, timeout=10)
            assert ws.close_reason == 1001  # the open socket is told "going away", not cut
            assert {"type": "hangup"} not in frames  # ... and so comes back after a restart
        finally:
            with contextlib.suppress(Exception):
                ws.close()
        assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        assert time.monotonic() - stopping < 15  # no wait on the open websocket
        wait_until(lambda: not any(alive(pid) for pid in started), timeout=10)
        assert not (data / "valkey.url").exists()
        assert http(f"{base}/healthz")[0] == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in started:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
