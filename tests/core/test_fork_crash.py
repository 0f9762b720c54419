"""Crash tests of fork: kill -9 a real process at every point of its work, then recover.

The child forks an archive and kills itself: after K steps while staging (each file created
in the stage, each folder renamed into its name, each file moved in from a scratch folder),
in its last-chance callback (staged and synced, just before the new run appears), or right
after the one rename that makes the run appear. Afterwards
the new run is either absent — and once ``recover_forks`` ran, no stage is left — or whole,
byte for byte the archive (and again no stage once recovered). Never a partial run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runarchive.core import create_archive, fork_archive, recover_forks_in
from runarchive.core.fork import STAGE_PREFIX
from tests.support.tree import Dir, File, Link, Spec, build_tree, snapshot

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import runarchive.core.fork as fork

    source, name, root, point = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point.startswith("extract-"):
        # Every step that puts something into the stage: a file created, a folder renamed
        # into its name, a file moved in from the scratch folder.
        k, real_rename, real_open, done = int(point.split("-")[1]), os.rename, os.open, [0]
        def step():
            if done[0] == k:
                die()
            done[0] += 1
        def rename(*args, **kwargs):
            step()
            real_rename(*args, **kwargs)
        def open_(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                step()
            return real_open(path, flags, *args, **kwargs)
        os.rename, os.open = rename, open_
    elif point == "after-rename":
        real_publish = fork._rename_noreplace
        def publish(*args):
            real_publish(*args)
            die()
        fork._rename_noreplace = publish

    def before_publish(stage):
        if point == "before-rename":
            die()

    fork.fork_archive(source, name, root, "forked-run", before_publish=before_publish,
                      threads=1)
    print("completed", flush=True)
    """
)

SPEC: Spec = {
    "a.txt": File(b"archived a\n"),
    "wepp": Dir(),
    "wepp/output": Dir(0o750),
    **{f"wepp/output/H{i}.dat": File(f"h{i}\n".encode() * 50) for i in range(6)},
    "soil": Dir(0o555),
    "soil/f.sol": File(b"soil\n"),
    "latest": Link("a.txt"),
    "wepp.nodb": File(b'{"state": 1}\n'),
}
POINTS = [f"extract-{k}" for k in range(0, 9)] + ["before-rename", "after-rename"]


def _stages(root: Path) -> list[str]:
    return [n for n in os.listdir(root) if n.startswith(STAGE_PREFIX)]


@pytest.mark.parametrize("point", POINTS)
def test_a_fork_killed_at_any_point_leaves_no_run_or_the_whole_run_and_no_leftovers(
    run_dir: Path, point: str
) -> None:
    build_tree(run_dir, SPEC)
    name = create_archive(run_dir).name
    archived, root = snapshot(run_dir), run_dir.parent
    new = root / "forked-run"
    source_before = snapshot(run_dir)

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(run_dir), name, str(root), point],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    if point == "after-rename":
        assert snapshot(new) == archived  # appeared whole, already verified
    else:
        assert not new.exists() and not new.is_symlink()
        assert _stages(root) != []  # the dead fork's stage, until recovery
    assert recover_forks_in(root) >= (0 if point == "after-rename" else 1)
    assert _stages(root) == []
    assert sorted(os.listdir(root)) == sorted(["ambitious-pinecone"] + ([new.name] * new.exists()))
    assert snapshot(run_dir) == source_before
    if not new.exists():  # the name is free again: a new fork of it succeeds
        fork_archive(run_dir, name, root, new.name)
        assert snapshot(new) == archived
