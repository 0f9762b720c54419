"""``runarchive scrub`` as typed: real processes, real archives with a byte flipped, exit codes,
JSON, and the results recorded where the scrub job keeps them when Redis is configured."""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path

from runarchive.core import create_archive
from runarchive.jobs import Settings, archive_health
from runarchive.jobs.context import JobsContext
from runarchive.jobs.runs import locate_run
from tests.support.processes import run_cli
from tests.support.runs import flip_entry_byte, make_mixed_run
from tests.support.tree import snapshot


def _damaged_run(root: Path, runid: str) -> tuple[Path, dict[str, str]]:
    """A run with three archives: one fine, one with a stored entry's byte flipped, one with a
    deflated entry's byte flipped."""
    run = make_mixed_run(root, runid)
    names = {}
    for label in ("fine", "stored", "deflated"):
        names[label] = create_archive(run, label).name
    flip_entry_byte(run / "archives" / names["stored"], "data.bin", zipfile.ZIP_STORED)
    flip_entry_byte(run / "archives" / names["deflated"], "output/H2.txt", zipfile.ZIP_DEFLATED)
    return run, names


def test_scrub_flags_a_flipped_stored_and_deflated_entry_and_exits_5(tmp_path: Path) -> None:
    run, names = _damaged_run(tmp_path / "runs", "scrub-cli-run")
    done = run_cli("scrub", run, "--json")
    assert done.returncode == 5, done.stderr
    body = json.loads(done.stdout)
    rows = {row["name"]: row for row in body["archives"]}
    assert (body["checked"], body["damaged"]) == (3, 2)
    assert rows[names["fine"]]["health"] == "ok" and rows[names["fine"]]["damage"] is None
    assert rows[names["stored"]]["health"] == "damaged"
    assert "'data.bin'" in rows[names["stored"]]["damage"]
    assert rows[names["deflated"]]["health"] == "damaged"
    assert "'output/H2.txt'" in rows[names["deflated"]]["damage"]
    assert {row["run"] for row in body["archives"]} == {"scrub-cli-run"}

    text = run_cli("scrub", run)
    assert text.returncode == 5
    assert f"scrub-cli-run/{names['fine']}: ok\n" in text.stdout
    assert f"scrub-cli-run/{names['stored']}: DAMAGED: CRC mismatch in 'data.bin'" in text.stdout
    assert text.stdout.endswith("Checked 3 archives of 1 run: 2 damaged.\n")


def test_scrub_without_a_run_checks_every_run_under_the_runs_root(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _damaged_run(root, "first-run")
    clean = make_mixed_run(root, "second-run")
    create_archive(clean, "ok")
    done = run_cli("scrub", "--json", RUNARCHIVE_RUNS_ROOT=str(root))
    assert done.returncode == 5
    body = json.loads(done.stdout)
    assert [row["run"] for row in body["archives"]] == ["first-run"] * 3 + ["second-run"]

    only_clean = run_cli("scrub", clean)
    assert only_clean.returncode == 0
    assert only_clean.stdout.endswith("Checked 1 archive of 1 run: 0 damaged.\n")

    nowhere = run_cli("scrub", RUNARCHIVE_RUNS_ROOT="")
    assert nowhere.returncode == 2 and "RUNARCHIVE_RUNS_ROOT" in nowhere.stderr


def test_scrub_with_redis_records_what_the_dashboard_shows(tmp_path: Path, redis_url: str) -> None:
    root = tmp_path / "runs"
    runid = f"scrub-{uuid.uuid4().hex[:8]}"
    run, names = _damaged_run(root, runid)
    prefix = f"ra-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, runs_root=root, key_prefix=prefix)
    with JobsContext.from_settings(settings) as ctx:
        ref = locate_run(settings, runid)
        before = archive_health(ctx, ref, list(names.values()))
        assert {h.state for h in before.values()} == {"unchecked"}

        done = run_cli("scrub", run, "--redis-url", redis_url, RUNARCHIVE_KEY_PREFIX=prefix)
        assert done.returncode == 5, done.stderr
        after = archive_health(ctx, ref, list(names.values()))
        assert after[names["fine"]].state == "ok"
        assert after[names["stored"]].state == "damaged"
        assert "'data.bin'" in (after[names["stored"]].damage or "")
        assert "'output/H2.txt'" in (after[names["deflated"]].damage or "")
        assert all(h.checked_at is not None for h in after.values())


def test_scrub_with_redis_down_says_so_and_exits_1(tmp_path: Path) -> None:
    run, _ = _damaged_run(tmp_path / "runs", "down-run")
    done = run_cli("scrub", run, "--redis-url", "redis://127.0.0.1:1/0")
    assert done.returncode == 1
    assert "Redis" in done.stderr


def test_restore_with_redis_refuses_an_archive_the_scrub_found_damaged(
    tmp_path: Path, redis_url: str
) -> None:
    root = tmp_path / "runs"
    runid = f"scrub-{uuid.uuid4().hex[:8]}"
    run, names = _damaged_run(root, runid)
    prefix = f"ra-test-{uuid.uuid4().hex[:8]}"
    env = {"RUNARCHIVE_KEY_PREFIX": prefix}
    assert run_cli("scrub", run, "--redis-url", redis_url, **env).returncode == 5
    before = snapshot(run)
    refused = run_cli(
        "restore", run, names["stored"], "--yes", "--json", "--redis-url", redis_url, **env
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "damaged_archive"
    assert f"Archive {names['stored']} is damaged" in error["message"]
    assert "'data.bin'" in error["message"]
    assert snapshot(run) == before
    fine = run_cli("restore", run, names["fine"], "--yes", "--redis-url", redis_url, **env)
    assert fine.returncode == 0, fine.stderr
