"""``runarchive restore --path``, ``runarchive undo`` and the undo ``list`` shows, as processes,
on real runs."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runarchive.core import create_archive, human_bytes, undo_info
from tests.support.journal import kept_undo, leftovers
from tests.support.processes import CLI, environment, run_cli
from tests.support.tree import Dir, File, build_tree, snapshot


def test_restore_with_paths_then_undo_puts_the_run_back(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a"), "w": Dir(), "w/x": File(b"x"), "k": File(b"k")})
    name = create_archive(run_dir).name
    (run_dir / "w/x").write_bytes(b"x2")
    (run_dir / "w/y").write_bytes(b"y new")
    (run_dir / "k").write_bytes(b"k2")
    before = snapshot(run_dir)

    proc = run_cli("restore", run_dir, name, "--path", "w/", "--path", "w/x", "--json")

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["paths"] == ["w/"]
    assert (run_dir / "w/x").read_bytes() == b"x" and not (run_dir / "w/y").exists()
    assert (run_dir / "k").read_bytes() == b"k2"  # not chosen: as it was

    proc = run_cli("undo", run_dir)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"Undo complete: the restore of {name} (w) is undone"
    assert snapshot(run_dir) == before
    assert leftovers(run_dir) == [] and kept_undo(run_dir) == []
    again = run_cli("undo", run_dir)
    assert again.returncode == 3 and "nothing to undo" in again.stderr


def test_restore_refuses_a_hostile_or_missing_path_with_exit_2(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a")})
    name = create_archive(run_dir).name
    (run_dir / "a.txt").write_bytes(b"edited")
    before = snapshot(run_dir)
    for path, says in (("../x", "'..'"), ("archives/", "reserved"), ("b.txt", "'b.txt' is not")):
        proc = run_cli("restore", run_dir, name, "--path", path, "--yes")
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr
    assert snapshot(run_dir) == before and kept_undo(run_dir) == []


def _list(run_dir: Path, cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``runarchive list`` started in another folder than the run's (as a user types it)."""
    return subprocess.run(
        [*CLI, "list", str(run_dir), *flags],
        capture_output=True, text=True, timeout=60, env=environment(), cwd=cwd,
    )  # fmt: skip


def test_list_says_while_the_last_restore_can_be_undone(run_dir: Path, tmp_path: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a"), "w": Dir(), "w/x": File(b"x" * 5000)})
    name = create_archive(run_dir).name
    (run_dir / "w/x").write_bytes(b"changed since")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    quiet = _list(run_dir, elsewhere)
    assert quiet.returncode == 0, quiet.stderr
    assert "Undo" not in quiet.stdout
    assert json.loads(_list(run_dir, elsewhere, "--json").stdout)["undo"] == {
        "available": False, "restored": None, "at": None, "expires": None, "bytes": 0,
    }  # fmt: skip
    restored = run_cli("restore", run_dir, name, "--yes")
    assert restored.returncode == 0, restored.stderr

    body = json.loads(_list(run_dir, elsewhere, "--json").stdout)
    text = _list(run_dir, elsewhere).stdout

    undo = body["undo"]
    assert undo == undo_info(run_dir).as_json()  # the API list's object, field for field
    assert set(undo) == {"available", "restored", "at", "expires", "bytes"}
    assert undo["available"] is True and undo["restored"] == name
    at = datetime.fromisoformat(undo["at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(undo["expires"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - at).total_seconds()) < 60
    assert expires - at == timedelta(days=7)  # RUNARCHIVE_UNDO_TTL's default
    assert undo["bytes"] >= len(b"changed since")  # the replaced tree it keeps
    assert [a["name"] for a in body["archives"]] == [name]
    line = text.strip().splitlines()[-1]
    assert line == (
        f"Undo available: restore of {name} at {at:%Y-%m-%d %H:%M:%S} UTC, expires "
        f"{expires:%Y-%m-%d %H:%M:%S} UTC, keeps {human_bytes(undo['bytes'])} "
        "(runarchive undo RUN_DIR)"
    )
    assert name in text.splitlines()[1]  # the rows come first, unchanged

    assert run_cli("undo", run_dir).returncode == 0
    assert "Undo" not in _list(run_dir, elsewhere).stdout
    assert json.loads(_list(run_dir, elsewhere, "--json").stdout)["undo"]["available"] is False
