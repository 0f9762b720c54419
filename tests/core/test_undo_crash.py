"""Crash tests of partial restore and undo: kill -9 a real process after exactly K renames of
the swap (every point from the first to past the last), then recover.

As in ``test_crash.py``: the child arms a wrapper around ``os.rename`` at the SWAP event that
kills it after K renames. Afterwards the run must be exactly as before or exactly as intended
(never a mix), no stage, old tree or journal left, and the undo consistent with what happened:
a restore recovered at any point still keeps what it replaced (undo gives the pre-restore tree
back), an undo recovered at any point leaves nothing to undo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runarchive.core import (
    NothingToUndo,
    create_archive,
    list_archives,
    recover_run,
    restore_archive,
    undo_info,
    undo_restore,
)
from tests.support.journal import kept_undo, leftovers, read_journal
from tests.support.tree import Dir, File, Link, Spec, build_tree, snapshot

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from runarchive.core import restore_archive, undo_restore

    run, op, spec = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])

    def kill_after_renames(k):
        real, done = os.rename, [0]
        def rename(*args, **kwargs):
            if done[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            real(*args, **kwargs)
            done[0] += 1
        os.rename = rename

    def progress(event):
        if event.phase == "swap":
            kill_after_renames(spec["renames"])

    if op == "restore":
        restore_archive(run, spec["name"], progress=progress, paths=spec.get("paths"),
                        defer_delete=True)
    else:
        undo_restore(run, progress=progress, defer_delete=True)
    print("completed", flush=True)
    """
)

ARCHIVED: Spec = {
    "a.txt": File(b"archived a\n"),
    "wepp": Dir(),
    "wepp/output": Dir(0o750),
    "wepp/output/H1.dat": File(b"h1 archived\n" * 30),
    "wepp/output/empty": Dir(),
    "wepp/runs": Dir(),
    "wepp/runs/p1.run": File(b"p1 archived\n"),
    "soil": Dir(0o555),
    "soil/f.sol": File(b"soil archived\n"),
    "latest": Link("a.txt"),
}


def edit(run: Path) -> None:
    (run / "a.txt").write_bytes(b"edited a\n")
    (run / "wepp/output/H1.dat").write_bytes(b"h1 edited\n")
    (run / "wepp/output/H2.dat").write_bytes(b"h2 new\n")
    (run / "wepp/runs/p1.run").unlink()
    (run / "latest").unlink()
    os.symlink("wepp/output/H1.dat", run / "latest")
    (run / "new_ro").mkdir(mode=0o500)
    os.utime(run / "wepp", ns=(1_700_000_000_000_000_000,) * 2)


def child(run: Path, op: str, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(run), op, json.dumps(spec)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


class World:
    """A run edited after its archive; ``restored`` is what a restore of ``paths`` makes."""

    def __init__(self, run: Path, paths: list[str] | None) -> None:
        self.run, self.paths = run, paths
        build_tree(run, ARCHIVED)
        self.name = create_archive(run).name
        edit(run)
        self.before = snapshot(run)
        restore_archive(run, self.name, paths=paths)
        self.restored = snapshot(run)
        undo_restore(run)
        assert snapshot(run) == self.before and self.restored != self.before

    def assert_clean(self) -> None:
        assert leftovers(self.run) == [], "stage, old tree, journal or stray undo left behind"
        assert [a.name for a in list_archives(self.run)] == [self.name]


SCOPES = [
    pytest.param(None, id="full"),
    pytest.param(["wepp/output/", "a.txt", "latest"], id="partial"),
    pytest.param(["wepp/runs/p1.run", "soil"], id="partial-missing-and-read-only"),
]
RENAMES = range(0, 14)


@pytest.mark.parametrize("paths", SCOPES)
def test_restore_killed_after_any_rename_recovers_to_the_restore_and_keeps_its_undo(
    run_dir: Path, paths: list[str] | None
) -> None:
    world = World(run_dir, paths)
    for k in RENAMES:
        proc = child(run_dir, "restore", {"name": world.name, "paths": paths, "renames": k})
        if proc.returncode == 0:
            break  # past the last rename: the restore completed
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert read_journal(run_dir) is not None or kept_undo(run_dir), k

        recover_run(run_dir)

        assert snapshot(run_dir) == world.restored, k
        world.assert_clean()
        assert undo_info(run_dir).available, k
        undo_restore(run_dir)  # what the killed restore replaced is put back exactly
        assert snapshot(run_dir) == world.before, k
        world.assert_clean()
    else:
        pytest.fail("the restore never completed: raise RENAMES")
    assert k > 3


@pytest.mark.parametrize("paths", SCOPES)
def test_undo_killed_after_any_rename_recovers_to_before_or_after_it(
    run_dir: Path, paths: list[str] | None
) -> None:
    world = World(run_dir, paths)
    for k in RENAMES:
        restore_archive(run_dir, world.name, paths=paths)
        assert snapshot(run_dir) == world.restored
        proc = child(run_dir, "undo", {"renames": k})
        if proc.returncode == 0:
            assert snapshot(run_dir) == world.before
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        journal = read_journal(run_dir)

        recover_run(run_dir)

        if journal is None:  # killed before the undo's journal: nothing happened yet
            assert k == 0
            assert snapshot(run_dir) == world.restored
            assert undo_info(run_dir).available
            undo_restore(run_dir)
        assert journal is None or journal["kind"] == "undo"
        assert snapshot(run_dir) == world.before, k  # exactly the pre-restore tree
        world.assert_clean()
        assert not undo_info(run_dir).available and kept_undo(run_dir) == []
        with pytest.raises(NothingToUndo):
            undo_restore(run_dir)
    else:
        pytest.fail("the undo never completed: raise RENAMES")
    assert k > 3
