"""Pins, a run's policy file and prune on real runs: strict state, crash-safe removal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runarchive.core import (
    NotFound,
    Pinned,
    Policy,
    ReadOnlyRun,
    UnsafeRun,
    delete_archive,
    list_archives,
    pinned_names,
    plan_prune,
    prune_archives,
    run_policy,
    set_pinned,
    set_run_policy,
    verify_archive,
)
from tests.support.runs import copy_archives
from tests.support.tree import File, build_tree
from tests.support.waiting import wait_until

DAYS = [f"202601{d:02d}T120000Z" for d in range(1, 11)]  # ten days, one archive each


def make_archives(run_dir: Path, stamps: list[str] = DAYS) -> list[str]:
    build_tree(run_dir, {"a.txt": File(b"alpha\n" * 1000), "w.nodb": File(b"{}")})
    return copy_archives(run_dir, stamps)


def archive_names(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "archives").iterdir() if p.suffix == ".zip"}


def test_pinning_marks_the_row_refuses_delete_and_unpinning_allows_it(run_dir: Path) -> None:
    names = make_archives(run_dir, DAYS[:2])
    assert set_pinned(run_dir, names[0], True) is True
    assert pinned_names(run_dir) == {names[0]}
    rows = {r.name: r.pinned for r in list_archives(run_dir)}
    assert rows == {names[0]: True, names[1]: False}
    with pytest.raises(Pinned, match=f"Archive {names[0]} is pinned"):
        delete_archive(run_dir, names[0])
    assert names[0] in archive_names(run_dir)
    assert set_pinned(run_dir, names[0], False) is False
    delete_archive(run_dir, names[0])
    assert archive_names(run_dir) == {names[1]}
    state = run_dir / "archives" / ".runarchive" / "pins.json"
    assert state.read_bytes() == b'{"pinned":[],"version":1}\n'


def test_pinning_an_archive_that_is_not_there_is_not_found(run_dir: Path) -> None:
    make_archives(run_dir, DAYS[:1])
    with pytest.raises(NotFound):
        set_pinned(run_dir, "nope.zip", True)
    assert set_pinned(run_dir, "nope.zip", False) is False  # unpin is idempotent


@pytest.mark.parametrize(
    "content",
    [
        b'{"pinned":["../x.zip"],"version":1}\n',
        b'{"pinned":["b.zip","a.zip"],"version":1}\n',
        b'{"pinned": [], "version": 1}\n',
        b'{"pinned":[],"version":1,"extra":1}\n',
        b'{"pinned":[],"version":2}\n',
        b"\xff\xfe",
        b'{"pinned":[' + b'"a.zip",' * 200_000 + b'"b.zip"],"version":1}\n',
    ],
    ids=["path", "unsorted", "spaced", "extra-key", "version", "not-utf8", "too-big"],
)
def test_a_pins_file_not_as_we_write_it_refuses_delete_and_prune_and_list_still_answers(
    run_dir: Path, content: bytes
) -> None:
    names = make_archives(run_dir, DAYS[:3])
    (run_dir / "archives" / ".runarchive").mkdir(exist_ok=True)
    (run_dir / "archives" / ".runarchive" / "pins.json").write_bytes(content)
    assert [r.pinned for r in list_archives(run_dir)] == [False] * 3
    with pytest.raises(UnsafeRun, match=r"pins\.json"):
        delete_archive(run_dir, names[0])
    with pytest.raises(UnsafeRun, match=r"pins\.json"):
        prune_archives(run_dir, policy=Policy(keep_last=1))
    assert archive_names(run_dir) == set(names)


def test_a_pins_file_that_is_a_link_is_refused_not_followed(run_dir: Path, tmp_path: Path) -> None:
    names = make_archives(run_dir, DAYS[:2])
    outside = tmp_path / "elsewhere.json"
    outside.write_bytes(b'{"pinned":[],"version":1}\n')
    (run_dir / "archives" / ".runarchive" / "pins.json").symlink_to(outside)
    with pytest.raises(UnsafeRun):
        set_pinned(run_dir, names[0], True)
    assert outside.read_bytes() == b'{"pinned":[],"version":1}\n'


def test_a_runs_policy_round_trips_and_a_bad_policy_file_refuses_prune(run_dir: Path) -> None:
    names = make_archives(run_dir, DAYS[:3])
    assert run_policy(run_dir) is None
    set_run_policy(run_dir, Policy(keep_last=2))
    assert run_policy(run_dir) == Policy(keep_last=2)
    state = run_dir / "archives" / ".runarchive" / "policy.json"
    assert state.read_bytes() == (
        b'{"keep_daily":0,"keep_last":2,"keep_monthly":0,"keep_weekly":0,"version":1}\n'
    )
    state.write_bytes(
        b'{"keep_daily":0,"keep_last":true,"keep_monthly":0,"keep_weekly":0,"version":1}\n'
    )
    with pytest.raises(UnsafeRun, match=r"policy\.json"):
        prune_archives(run_dir)
    assert archive_names(run_dir) == set(names)
    set_run_policy(run_dir, None)
    assert not state.exists()


def test_prune_removes_what_the_plan_says_keeps_pins_and_frees_the_bytes(run_dir: Path) -> None:
    names = make_archives(run_dir)
    set_pinned(run_dir, names[0], True)
    dry = plan_prune(run_dir, policy=Policy(keep_last=3))
    assert archive_names(run_dir) == set(names)  # a dry run touches nothing
    assert dry.to_dict()["keep"] == [names[9], names[8], names[7], names[0]]
    removed: list[str] = []
    plan = prune_archives(
        run_dir, policy=Policy(keep_last=3), on_removed=lambda n, size: removed.append(n)
    )
    assert plan.to_dict() == dry.to_dict()
    assert removed == names[1:7]  # oldest first
    assert archive_names(run_dir) == {names[0], *names[7:]}
    assert (
        dry.bytes_freed
        == sum(1 for _ in removed) * (run_dir / "archives" / names[0]).stat().st_size
    )


def test_the_runs_policy_applies_else_the_site_default_else_nothing(run_dir: Path) -> None:
    make_archives(run_dir, DAYS[:4])
    assert plan_prune(run_dir).remove == ()
    assert len(plan_prune(run_dir, site_default=Policy(keep_last=1)).remove) == 3
    set_run_policy(run_dir, Policy(keep_last=3))
    assert len(plan_prune(run_dir, site_default=Policy(keep_last=1)).remove) == 1
    set_run_policy(run_dir, Policy())  # a run's empty policy opts out of the site default
    assert plan_prune(run_dir, site_default=Policy(keep_last=1)).remove == ()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from runarchive.core import Policy, prune_archives
    run, marker = Path(sys.argv[1]), Path(sys.argv[2])
    def removed(name, size):
        if not marker.exists():
            marker.write_text(name)
            while True:
                time.sleep(1)  # killed here, after its first removal
    prune_archives(run, policy=Policy(keep_last=2), on_removed=removed)
    """
)


def test_prune_killed_midway_leaves_only_whole_archives_a_consistent_list_and_finishes_later(
    run_dir: Path, tmp_path: Path
) -> None:
    names = make_archives(run_dir)
    before = {n: (run_dir / "archives" / n).read_bytes() for n in names}
    marker = tmp_path / "first-removed"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir), str(marker)])
    try:
        wait_until(marker.exists)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert marker.read_text() == names[0]  # the oldest went first
    left = archive_names(run_dir)
    assert left == set(names[1:])
    assert {r.name for r in list_archives(run_dir)} == left
    for name in left:
        assert (run_dir / "archives" / name).read_bytes() == before[name]
        assert verify_archive(run_dir, name).ok
    assert not [p for p in (run_dir / "archives").iterdir() if p.name.startswith(".tmp")]
    prune_archives(run_dir, policy=Policy(keep_last=2))  # the lock died with the process
    assert archive_names(run_dir) == set(names[-2:])


def test_a_read_only_run_is_pruned_only_when_there_is_nothing_to_remove(run_dir: Path) -> None:
    names = make_archives(run_dir, DAYS[:3])
    (run_dir / "READONLY").write_text("")
    assert prune_archives(run_dir, policy=Policy(keep_last=5)).remove == ()
    with pytest.raises(ReadOnlyRun):
        prune_archives(run_dir, policy=Policy(keep_last=1))
    assert archive_names(run_dir) == set(names)
