"""``runarchive restore --path`` and ``runarchive undo`` as processes, on real runs."""

from __future__ import annotations

import json
from pathlib import Path

from runarchive.core import create_archive
from tests.support.journal import kept_undo, leftovers
from tests.support.processes import run_cli
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
