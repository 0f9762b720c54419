"""The CLI's archive, restore and delete under the service's rules, as a script runs them.

A real ``runarchive`` process, started from another working directory with a relative RUN_DIR,
against the tests' real valkey: refused with exit 3 while a ``.nodb`` lock is held or a job holds
the run (the run byte for byte unchanged), holding the run's slot and locks while it works (the
service refuses meanwhile; a SIGKILLed CLI is cleaned up by reconcile), a clear exit 1 when the
configured Redis cannot be reached, and ``--no-locks`` as the one way around.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from runarchive.core import create_archive, list_archives
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, running_job
from runarchive.jobs.errors import JobRunning
from runarchive.jobs.lifecycle import reconcile
from runarchive.jobs.locks import acquire_lock, lock_infos, lock_statuses
from runarchive.jobs.settings import Settings
from runarchive.jobs.slot import claim_slot, read_slot
from tests.support.channel import Recorder
from tests.support.runs import make_many_files_run, make_small_run
from tests.support.tree import snapshot
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "runarchive"]


def cli_env(settings: Settings, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RUNARCHIVE_REDIS_URL")}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    env["RUNARCHIVE_KEY_PREFIX"] = settings.key_prefix
    env["RUNARCHIVE_HEARTBEAT_TTL"] = str(settings.heartbeat_ttl)
    return env


def runarchive(
    settings: Settings, *args: str, redis_url: str | None = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI from the runs root's parent (RUN_DIR given as ``runs/<runid>``)."""
    url = settings.redis_url if redis_url == "" else redis_url
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd or Path(str(settings.runs_root)).parent,
        env=cli_env(settings, url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://someone:s3cret@127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.fixture
def run(ctx: JobsContext, runid: str) -> tuple[Path, str, str]:
    """A run with one archive, changed since; returns (path, RUN_DIR relative, archive name)."""
    path = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    name = create_archive(path).name
    (path / "README.md").write_text("changed since the archive\n")
    return path, f"runs/{runid}", name


COMMANDS = {
    "archive": lambda rel, name: ["archive", rel, "-c", "refused"],
    "restore": lambda rel, name: ["restore", rel, name],
    "delete": lambda rel, name: ["delete", rel, name],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_held_nodb_lock_makes_the_cli_refuse_with_exit_3_and_change_nothing(
    ctx: JobsContext, runid: str, run: tuple[Path, str, str], command: str
) -> None:
    path, rel, name = run
    assert acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60) is not None
    before = snapshot(path, with_dir_times=False)

    done = runarchive(ctx.settings, *COMMANDS[command](rel, name))

    assert done.returncode == 3, done.stderr
    assert f"Cannot {command} while files are locked: wepp.nodb" in done.stderr
    assert snapshot(path, with_dir_times=False) == before
    assert [info.name for info in list_archives(path)] == [name]
    assert read_slot(ctx.clients.data, ctx.keys, runid) is None


def test_a_job_holding_the_run_makes_the_cli_refuse_with_exit_3_naming_it(
    ctx: JobsContext, runid: str, run: tuple[Path, str, str]
) -> None:
    path, rel, name = run
    job_id = enqueue_archive(ctx, runid)  # queued; no worker runs in this test
    before = snapshot(path, with_dir_times=False)
    for args in (["restore", rel, name, "--json"], ["delete", rel, name, "--json"]):
        done = runarchive(ctx.settings, *args)
        assert done.returncode == 3, done.stderr
        assert json.loads(done.stdout)["error"] == {
            "code": "job_running",
            "message": f"A job is already running for run {runid}: {job_id}. Wait for it to "
            "finish.",
        }
    assert snapshot(path, with_dir_times=False) == before
    assert read_slot(ctx.clients.data, ctx.keys, runid).job_id == job_id  # type: ignore[union-attr]


def test_with_redis_configured_the_cli_works_and_tells_the_runs_viewers(
    ctx: JobsContext, runid: str, run: tuple[Path, str, str], record: Callable[[str], Recorder]
) -> None:
    path, rel, name = run
    rec = record(runid)
    done = runarchive(ctx.settings, "restore", rel, name)
    assert done.returncode == 0, done.stderr
    assert (path / "README.md").read_text() == "a small run\n"
    made = runarchive(ctx.settings, "archive", rel, "--json")
    assert made.returncode == 0, made.stderr
    new = json.loads(made.stdout)["name"]
    assert runarchive(ctx.settings, "delete", rel, new).returncode == 0
    rec.wait_for(lambda x: x == f"Archive deleted: {new}")
    assert rec.lines == [
        f"Restore complete: {name}",
        f"Archive ready: {new}",
        f"Archive deleted: {new}",
    ]
    assert read_slot(ctx.clients.data, ctx.keys, runid) is None
    assert lock_statuses(ctx.clients.locks, runid) == {}


def test_the_cli_holds_the_slot_and_locks_while_it_works_and_a_killed_cli_is_cleaned_up(
    settings: Settings, runid: str
) -> None:
    settings = replace(settings, heartbeat_ttl=1.0)
    with JobsContext.from_settings(settings) as ctx:
        path = make_many_files_run(Path(str(settings.runs_root)), runid, 5000)
        name = create_archive(path).name
        for folder in sorted(path.glob("d0[0-4]*")):  # so the restore has work to do
            for item in folder.iterdir():
                item.unlink()
        proc = subprocess.Popen(
            [*CLI, "restore", f"runs/{runid}", name],
            cwd=Path(str(settings.runs_root)).parent,
            env=cli_env(settings, settings.redis_url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            slot = wait_until(lambda: read_slot(ctx.clients.data, ctx.keys, runid), step=0.005)
            assert slot.job_id.startswith("local-") and slot.kind == "restore"
            locks = wait_until(lambda: lock_infos(ctx.clients.locks, runid), step=0.005)
            assert {p: i.job_id for p, i in locks.items()} == {"wepp.nodb": slot.job_id}
            with pytest.raises(JobRunning, match=slot.job_id):
                enqueue_archive(ctx, runid)  # the service sees the CLI holding the run …
            holder = running_job(ctx, runid)  # … and its live slot, which reconcile keeps
            assert holder is not None and holder.job_id == slot.job_id
            assert not claim_slot(ctx.clients.data, ctx.keys, runid, "job-x", "archive", ttl=60)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        wait_until(lambda: not ctx.clients.data.exists(ctx.keys.job_alive(slot.job_id)))
        [reaped] = reconcile(ctx, [runid])
        assert (reaped.job_id, reaped.reason, reaped.published) == (
            slot.job_id,
            "local process died",
            False,
        )
        assert read_slot(ctx.clients.data, ctx.keys, runid) is None
        assert lock_statuses(ctx.clients.locks, runid) == {}
        assert ctx.stream(runid).recent() == []  # no job ran, so no trigger
        assert ctx.clients.data.smembers(ctx.keys.pending_recovery()) == set()  # recovered
        again = subprocess.run(
            [*CLI, "verify", str(path), name], capture_output=True, text=True, timeout=120
        )
        assert again.returncode == 0, again.stdout + again.stderr


def test_an_unreachable_redis_fails_clearly_and_no_locks_is_the_way_around(
    ctx: JobsContext, runid: str, run: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, rel, name = run
    before = snapshot(path, with_dir_times=False)
    dead = _dead_url()
    port = dead.rsplit(":", 1)[1].split("/")[0]
    done = runarchive(ctx.settings, "restore", rel, name, redis_url=dead)
    assert done.returncode == 1, done.stderr
    assert f"Cannot reach Redis at redis://someone:***@127.0.0.1:{port}/0" in done.stderr
    assert "--no-locks" in done.stderr and "s3cret" not in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(path, with_dir_times=False) == before

    forced = runarchive(ctx.settings, "restore", rel, name, "--no-locks", redis_url=dead)
    assert forced.returncode == 0, forced.stderr
    assert (path / "README.md").read_text() == "a small run\n"


def test_no_locks_skips_a_held_lock_and_the_flag_beats_the_environment(
    ctx: JobsContext, runid: str, run: tuple[Path, str, str]
) -> None:
    path, rel, name = run
    assert acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60) is not None
    done = runarchive(ctx.settings, "delete", rel, name, "--no-locks")
    assert done.returncode == 0, done.stderr
    assert list_archives(path) == []


def test_without_a_redis_url_the_cli_is_local_only(
    ctx: JobsContext, runid: str, run: tuple[Path, str, str]
) -> None:
    path, rel, name = run
    assert acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60) is not None
    done = runarchive(ctx.settings, "restore", rel, name, redis_url=None)
    assert done.returncode == 0, done.stderr  # no Redis configured: nothing to consult
    assert (path / "README.md").read_text() == "a small run\n"


def test_a_redis_url_option_is_honoured_without_the_environment(
    ctx: JobsContext, runid: str, run: tuple[Path, str, str]
) -> None:
    path, rel, name = run
    assert acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60) is not None
    url = str(ctx.settings.redis_url)
    done = runarchive(ctx.settings, "archive", rel, "--redis-url", url, redis_url=None)
    assert done.returncode == 3, done.stderr
    assert [info.name for info in list_archives(path)] == [name]


def test_the_enqueue_command_tells_the_operator_where_redis_was_expected(
    ctx: JobsContext, runid: str, run: tuple[Path, str, str]
) -> None:
    dead = _dead_url()
    runs_root = str(ctx.settings.runs_root)
    done = runarchive(
        ctx.settings, "enqueue-archive", runid, "--runs-root", runs_root, redis_url=dead
    )
    assert done.returncode == 1, done.stderr
    # Clients get the bare message (503); the operator's terminal also gets where and why.
    assert "The job queue (Redis) is unavailable; retry." in done.stderr
    assert f"Redis at {dead.replace('s3cret', '***')}" in done.stderr
    assert "s3cret" not in done.stderr
