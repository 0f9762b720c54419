"""The audit log from the command line: the local commands' rows and ``runarchive audit``.

Every command runs as a real process on a real run, recording into a real SQLite database in a
data dir; the rows are read back with ``runarchive audit --json``, as an operator would.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from runarchive.cli.audit_commands import _default_data_dir
from runarchive.core import create_archive
from runarchive.jobs import acquire_lock, release_lock
from runarchive.jobs.settings import default_data_dir
from tests.support.processes import environment, run_cli
from tests.support.tree import Dir, File, build_tree

ME = f"cli:{getpass.getuser()}"


def audit(data: Path, *args: str) -> list[dict[str, Any]]:
    proc = run_cli("audit", *args, "--json", RUNARCHIVE_DATA_DIR=str(data))
    assert proc.returncode == 0, proc.stderr
    events: list[dict[str, Any]] = json.loads(proc.stdout)["events"]
    return events


def brief(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["action"], r["outcome"], r["archive"]) for r in rows]


def test_every_local_command_that_changes_a_run_is_recorded_with_its_outcome(
    run_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = {"RUNARCHIVE_DATA_DIR": str(data)}
    build_tree(run_dir, {"a.txt": File(b"a" * 100), "w": Dir(), "w/x": File(b"x")})
    made = run_cli("archive", run_dir, "--json", **env)
    assert made.returncode == 0, made.stderr
    name = json.loads(made.stdout)["name"]
    size = json.loads(made.stdout)["size"]
    assert run_cli("pin", run_dir, name, **env).returncode == 0
    pinned = run_cli("delete", run_dir, name, **env)
    assert pinned.returncode != 0 and "pinned" in pinned.stderr
    bad = run_cli("delete", run_dir, "../etc.zip", **env)
    assert bad.returncode == 2
    assert run_cli("unpin", run_dir, name, **env).returncode == 0
    (run_dir / "w/x").write_bytes(b"changed")
    restored = run_cli("restore", run_dir, name, "--path", "w/", "--json", **env)
    assert restored.returncode == 0, restored.stderr
    assert run_cli("undo", run_dir, **env).returncode == 0
    nothing = run_cli("undo", run_dir, **env)
    assert nothing.returncode == 3
    pruned = run_cli("prune", run_dir, "--keep-last", "1", **env)
    assert pruned.returncode == 0, pruned.stderr
    assert run_cli("prune", run_dir, "--keep-last", "1", "--dry-run", **env).returncode == 0
    deleted = run_cli("delete", run_dir, name, **env)
    assert deleted.returncode == 0, deleted.stderr

    rows = audit(data)
    assert brief(rows) == [
        ("archive", "done", name), ("pin", "done", name), ("delete", "refused", name),
        ("delete", "refused", "../etc.zip"), ("unpin", "done", name),
        ("restore", "done", name), ("undo", "done", name), ("undo", "refused", None),
        ("prune", "done", None), ("delete", "done", name),
    ]  # fmt: skip
    assert {(r["user"], r["remote_addr"], r["runid"]) for r in rows} == {
        (ME, "local", "ambitious-pinecone")
    }
    assert rows[0]["bytes"] == size and rows[-1]["bytes"] == size
    assert "is pinned" in rows[2]["detail"] and "Invalid archive name" in rows[3]["detail"]
    assert rows[5]["detail"] == "paths: w/" and rows[5]["bytes"] > 0
    assert "nothing to undo" in rows[7]["detail"]
    assert (rows[8]["bytes"], rows[8]["detail"]) == (0, None)  # one archive, kept
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_a_locked_run_refused_by_the_service_rules_is_recorded(
    run_dir: Path, tmp_path: Path, redis_url: str
) -> None:
    import redis

    data = tmp_path / "data"
    build_tree(run_dir, {"a.nodb": File(b"{}")})
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    token = acquire_lock(client, run_dir.name, "a.nodb", owner="host", ttl=30)
    assert token is not None
    try:
        proc = run_cli("archive", run_dir, RUNARCHIVE_DATA_DIR=str(data), REDIS_URL=redis_url)
    finally:
        release_lock(client, run_dir.name, "a.nodb", token)
        client.close()
    assert proc.returncode == 3
    rows = audit(data)
    assert brief(rows) == [("archive", "refused", None)]
    assert "locked" in rows[0]["detail"] and "a.nodb" in rows[0]["detail"]


def test_a_run_a_service_job_holds_refuses_a_local_command_and_that_is_recorded(
    tmp_path: Path, redis_url: str
) -> None:
    import uuid

    from runarchive.jobs import JobsContext, Settings, enqueue_archive

    runs = tmp_path / "runs"
    run = runs / "run-busy"
    build_tree(run, {"a.txt": File(b"a")})
    name = create_archive(run).name
    tag = uuid.uuid4().hex[:8]
    settings = Settings(redis_url=redis_url, runs_root=runs, queue=f"busy-{tag}",
                        key_prefix=f"ra-busy-{tag}", data_dir=tmp_path / "jobs")  # fmt: skip
    with JobsContext.from_settings(settings) as ctx:
        job_id = enqueue_archive(ctx, "run-busy")  # queued, no worker: it holds the run's slot
        proc = run_cli("delete", run, name, RUNARCHIVE_DATA_DIR=str(tmp_path / "data"),
                       REDIS_URL=redis_url, RUNARCHIVE_KEY_PREFIX=settings.key_prefix)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    (row,) = audit(tmp_path / "data")
    assert (row["action"], row["outcome"], row["archive"]) == ("delete", "refused", name)
    assert job_id in row["detail"]
    assert (run / "archives" / name).is_file()


def test_without_a_database_configured_nothing_is_recorded_or_loaded(
    run_dir: Path, tmp_path: Path
) -> None:
    build_tree(run_dir, {"a.txt": File(b"a")})
    probe = (
        "import json, sys\nfrom runarchive.cli import cli\n"
        "try:\n    cli(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code\n"
        "print(json.dumps(sorted(m for m in ('sqlalchemy', 'flask', 'rq', 'redis') "
        "if m in sys.modules)))\n"
    )

    def loaded(**extra: str) -> list[str]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), **extra}
        done = subprocess.run([sys.executable, "-c", probe, "archive", str(run_dir)],
                              capture_output=True, text=True, env={**env, "PYTHONPATH":
                              environment().get("PYTHONPATH", "")})  # fmt: skip
        assert done.returncode == 0, done.stderr
        result: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    assert loaded() == []
    assert not (tmp_path / "home").exists()  # no database made anywhere
    # With a data dir: SQLAlchemy at the moment of recording, still no Flask, RQ or redis-py.
    assert loaded(RUNARCHIVE_DATA_DIR=str(tmp_path / "data")) == ["sqlalchemy"]
    assert [r["action"] for r in audit(tmp_path / "data")] == ["archive"]


def test_audit_filters_by_run_and_moment_and_refuses_bad_input(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {"RUNARCHIVE_DATA_DIR": str(data)}
    runs = []
    for runid in ("run-one", "run-two"):
        path = tmp_path / "runs" / runid
        build_tree(path, {"a.txt": File(b"a")})
        runs.append((path, create_archive(path).name))
    for path, name in runs:
        assert run_cli("pin", path, name, **env).returncode == 0
    every = audit(data)
    assert [r["runid"] for r in every] == ["run-one", "run-two"]
    assert [r["runid"] for r in audit(data, "run-two")] == ["run-two"]
    assert [r["runid"] for r in audit(data, "--since", every[1]["time"])] == ["run-two"]
    assert audit(data, "--since", "2999-01-01T00:00:00") == []
    text = run_cli("audit", "run-one", **env)
    assert text.returncode == 0
    assert f"{ME}  local  run-one  pin done  {runs[0][1]}" in text.stdout
    for bad in (["../x"], ["--since", "yesterday"]):
        proc = run_cli("audit", *bad, **env)
        assert proc.returncode == 2, proc.stderr


def test_a_write_locked_database_spools_the_row_and_audit_replays_it(
    run_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    build_tree(run_dir, {"a.txt": File(b"a")})
    name = create_archive(run_dir).name
    assert audit(data) == []  # the database exists now
    holder = sqlite3.connect(data / "runarchive.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock
    try:
        proc = run_cli("pin", run_dir, name, RUNARCHIVE_DATA_DIR=str(data),
                       RUNARCHIVE_AUDIT_WAIT="0.2")  # fmt: skip
        assert proc.returncode == 0 and proc.stdout.strip() == f"Archive pinned: {name}"
        assert (data / "audit-spool.jsonl").stat().st_size > 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    rows = audit(data)
    assert brief(rows) == [("pin", "done", name)]
    assert (data / "audit-spool.jsonl").stat().st_size == 0


def test_the_cli_spool_folder_rule_is_the_jobs_layers() -> None:
    assert _default_data_dir() == default_data_dir()


def test_enqueue_and_cancel_commands_record_the_request_and_the_jobs_end(
    tmp_path: Path, redis_url: str
) -> None:
    import uuid

    runs = tmp_path / "runs"
    run = runs / "run-queued"
    build_tree(run, {"a.txt": File(b"a" * 10)})
    name = create_archive(run).name
    tag = uuid.uuid4().hex[:8]
    env = {"RUNARCHIVE_DATA_DIR": str(tmp_path / "data"), "REDIS_URL": redis_url,
           "RUNARCHIVE_RUNS_ROOT": str(runs), "RUNARCHIVE_QUEUE": f"audit-{tag}",
           "RUNARCHIVE_KEY_PREFIX": f"ra-audit-{tag}"}  # fmt: skip
    queued = run_cli("enqueue-restore", "run-queued", name, "--path", "a.txt", **env)
    assert queued.returncode == 0, queued.stderr
    busy = run_cli("enqueue-archive", "run-queued", **env)
    assert busy.returncode == 3
    worker = subprocess.run([sys.executable, "-m", "runarchive.jobs", "worker", "--burst"],
                            capture_output=True, text=True, timeout=120,
                            env=environment(**env))  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    second = run_cli("enqueue-archive", "run-queued", **env).stdout.strip()
    canceled = run_cli("cancel", second, **env)
    assert canceled.returncode == 0 and canceled.stdout.strip() == f"{second} canceled"

    rows = audit(tmp_path / "data")
    assert [(r["user"], r["action"], r["outcome"]) for r in rows] == [
        (ME, "restore", "accepted"), (ME, "archive", "refused"), (ME, "restore", "done"),
        (ME, "archive", "accepted"), (ME, "archive", "canceled"),
    ]  # fmt: skip
    job_id = queued.stdout.strip()
    assert rows[0]["job_id"] == rows[2]["job_id"] == job_id
    assert rows[0]["detail"] == rows[2]["detail"] == "paths: a.txt"
    assert job_id in rows[1]["detail"]
    assert rows[3]["job_id"] == rows[4]["job_id"] == second
