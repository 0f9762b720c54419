"""Crash tests: kill -9 a real restore or create at chosen points, then recover.

A child process (``CHILD``) runs the real operation; its progress callback sends itself SIGKILL
at the Nth event of a phase, or arms a wrapper around ``os.rename`` at the SWAP event that
kills it after exactly K renames of the swap, or (for create) kills it around the ``os.link``
that publishes the archive. A few kills come from outside at random times. Afterwards the run
must be exactly as before the restore or exactly as the archive (never a mix), ``archives/``
untouched, and no stage, old tree, scratch or journal left (``archives/.runarchive`` holds
only the lock); a killed create
leaves no archive under a final name and its temp file is removed by recover or the next create.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runarchive.core import (
    create_archive,
    list_archives,
    purge_trash,
    recover_run,
    verify_archive,
)
from tests.support.journal import (
    SWAPPED,
    SWAPPING,
    leftovers,
    old_dir,
    read_journal,
    scratch_dir,
    stage_dir,
    top_level_names,
    work_dir,
    write_journal,
)
from tests.support.tree import (
    Dir,
    File,
    Link,
    Spec,
    archive_files,
    build_tree,
    snapshot,
    tree_bytes,
)

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path
    from runarchive.core import create_archive, restore_archive

    run, op, spec = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def kill_after_renames(k):
        real, done = os.rename, [0]
        def rename(*args, **kwargs):
            if done[0] == k:
                die()
            real(*args, **kwargs)
            done[0] += 1
        os.rename = rename

    seen = {}
    def progress(event):
        seen[event.phase] = seen.get(event.phase, 0) + 1
        if event.phase == spec.get("phase") and seen[event.phase] == spec.get("n", 1):
            die()
        if event.phase == "swap" and "renames" in spec:
            kill_after_renames(spec["renames"])

    if "link" in spec:
        real_link = os.link
        def link(src, dst, *args, **kwargs):
            if spec["link"] == "before":
                die()
            real_link(src, dst, *args, **kwargs)
            die()
        os.link = link

    print("ready", flush=True)
    started = time.monotonic()
    if op == "restore":
        extra = {"defer_delete": True} if spec.get("defer") else {}
        restore_archive(run, spec["name"], progress=progress, **extra)
    else:
        create_archive(run, progress=progress)
    print("completed", time.monotonic() - started, flush=True)
    """
)


def run_child(run: Path, op: str, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(run), op, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_child(run: Path, op: str, spec: dict[str, Any]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run), op, json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


# ---------------------------------------------------------------------------------------------
# Trees: the archived one (NEW) and the one in place when restore starts (OLD)
# ---------------------------------------------------------------------------------------------

IDENTICAL = File(b"same in both trees\n" * 50, mode=0o640)  # restore may hard-link it


def new_tree(top: int = 20) -> Spec:
    spec: Spec = {f"t{i:03}.txt": File(b"new %d\n" % i) for i in range(top)}
    spec |= {f"wepp/output/H{i}.pass.dat": File(b"%d 0.5 new\n" % i * 300) for i in range(30)}
    spec |= {
        "wepp": Dir(),
        "wepp/output": Dir(0o750),
        "climate": Dir(),
        "climate/station.cli": File(b"climate new\n" * 100),
        "same": Dir(),
        "same/identical.dat": IDENTICAL,
        "empty_new": Dir(),
        "shared.txt": File(b"new shared\n", mode=0o600),
        "latest": Link("wepp/output/H0.pass.dat"),
    }
    return spec


def old_tree(top: int = 20) -> Spec:
    spec: Spec = {f"t{i:03}.txt": File(b"old %d\n" % i) for i in range(top // 2, top + top // 2)}
    spec |= {f"wepp/output/H{i}.pass.dat": File(b"%d 0.9 old\n" % i * 200) for i in range(15)}
    spec |= {
        "wepp": Dir(),
        "wepp/output": Dir(),
        "soil": Dir(0o750),
        "soil/field.sol": File(b"soil old\n" * 40),
        "same": Dir(),
        "same/identical.dat": IDENTICAL,
        "only_old": Dir(0o700),
        "shared.txt": File(b"old shared\n"),
        "latest": Link("shared.txt"),
    }
    return spec


def big_tree(flavour: str) -> Spec:
    """A tree whose restore takes a noticeable fraction of a second, for time-based kills."""
    rng = random.Random(flavour)
    spec: Spec = {
        f"wepp/run{i // 100}/H{i}.pass.dat": File(
            f"{flavour} {i} ".encode() * rng.randint(200, 900)
        )
        for i in range(400)
    }
    spec |= {f"rasters/r{i}.tif": File(rng.randbytes(1 << 20)) for i in range(4)}
    spec |= {f"top{i:02}.nodb": File(f"{flavour} {i}".encode()) for i in range(30)}
    spec |= {"wepp": Dir(), "rasters": Dir()} | {f"wepp/run{k}": Dir() for k in range(4)}
    return spec


def reset_run(run: Path, spec: Spec) -> None:
    """Make the run hold exactly ``spec`` (archives/ kept, with our state inside)."""
    for name in os.listdir(run):
        if name == "archives":
            continue
        path = run / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    build_tree(run, spec)


class Scenario:
    """A run holding OLD, with an archive of NEW in archives/, and both snapshots."""

    def __init__(self, run: Path, new: Spec, old: Spec) -> None:
        self.run, self.old_spec = run, old
        build_tree(run, new)
        self.new = snapshot(run)
        self.name = create_archive(run).name
        reset_run(run, old)
        self.old = snapshot(run)
        self.archives = tree_bytes(run / "archives")
        assert self.old != self.new

    def reset(self) -> None:
        reset_run(self.run, self.old_spec)
        assert snapshot(self.run) == self.old

    def journal_state(self) -> str | None:
        state = read_journal(self.run)
        return None if state is None else str(state["state"])

    def recover(self, how: str) -> None:
        """Recover explicitly, or through an operation that must recover on its own."""
        if how == "recover_run":
            recover_run(self.run)
        elif how == "list_archives":
            names = [a.name for a in list_archives(self.run)]
            assert names == [self.name]
        else:
            created = create_archive(self.run)
            assert verify_archive(self.run, created.name).ok
            self.made = created.name
            # The recovered restore kept its replaced tree for undo; the archive ended that
            # undo and parked the tree as trash, which its callers purge after answering.
            purge_trash(self.run)

    def assert_clean(self, *, allow_new_archive: bool = False) -> None:
        assert leftovers(self.run) == [], "stage, old tree or journal left behind"
        archives = tree_bytes(self.run / "archives")
        if allow_new_archive and hasattr(self, "made"):
            archives.pop(self.made)
        assert archives == self.archives
        hidden = [n for n in archive_files(self.run / "archives") if n.startswith(".")]
        assert hidden == []  # no temp archive left


@pytest.fixture
def scenario(run_dir: Path) -> Scenario:
    return Scenario(run_dir, new_tree(), old_tree())


# ---------------------------------------------------------------------------------------------
# Restore killed at chosen points
# ---------------------------------------------------------------------------------------------

FILES_IN_NEW = sum(1 for node in new_tree().values() if isinstance(node, File))
N_OLD = len([n for n in old_tree() if "/" not in n])
N_NEW = len([n for n in new_tree() if "/" not in n])

KILL_POINTS = [
    pytest.param({"phase": "extract", "n": 1}, "staging", "old", id="extract-first-file"),
    pytest.param({"phase": "extract", "n": FILES_IN_NEW // 2}, "staging", "old", id="extract-half"),
    pytest.param({"phase": "extract", "n": FILES_IN_NEW}, "staging", "old", id="extract-last-file"),
    pytest.param({"phase": "swap"}, SWAPPING, "new", id="swap-event"),
    *(
        pytest.param({"renames": k}, SWAPPING, "new", id=f"swap-after-{k}-renames")
        for k in sorted(
            {0, 1, N_OLD // 2, N_OLD - 1, N_OLD, N_OLD + 1, N_OLD + N_NEW // 2, N_OLD + N_NEW - 1}
        )
    ),
    pytest.param({"phase": "cleanup"}, SWAPPED, "new", id="cleanup-event"),
    pytest.param({"phase": "done"}, None, "new", id="done-event"),
    # The CLI defers deleting the replaced tree (trash-<id>) until after it reports success.
    pytest.param({"phase": "cleanup", "defer": True}, SWAPPED, "new", id="cleanup-deferred"),
    pytest.param({"phase": "done", "defer": True}, None, "new", id="done-deferred-trash-left"),
]


def test_tree_counts_match_the_kill_points(scenario: Scenario) -> None:
    """The kill points above are computed from the trees; keep them honest."""
    assert len(top_level_names(scenario.run)) == N_OLD
    assert sum(1 for v in scenario.new.values() if v[0] == "file") == FILES_IN_NEW
    assert len([p for p in scenario.new if "/" not in p]) == N_NEW


@pytest.mark.parametrize(("kill", "journal", "outcome"), KILL_POINTS)
def test_restore_killed_at_a_chosen_point_recovers_to_old_or_new(
    scenario: Scenario, kill: dict[str, Any], journal: str | None, outcome: str
) -> None:
    proc = run_child(scenario.run, "restore", {"name": scenario.name, **kill})

    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert scenario.journal_state() == journal
    if "renames" in kill:
        _assert_swap_interrupted_after(scenario, kill["renames"])
    result = recover_run(scenario.run)

    expected = scenario.new if outcome == "new" else scenario.old
    assert snapshot(scenario.run) == expected
    assert result.action != "none" or journal is None
    scenario.assert_clean()


def _assert_swap_interrupted_after(scenario: Scenario, renames: int) -> None:
    """Prove the kill landed between renames: exactly ``renames`` of them happened."""
    state = read_journal(scenario.run)
    assert state is not None
    n_old, n_new = len(state["old"]), len(state["new"])
    assert (n_old, n_new) == (N_OLD, N_NEW)
    moved_out = os.listdir(old_dir(scenario.run, state["id"])) if renames else []
    still_staged = os.listdir(stage_dir(scenario.run, state["id"]))
    assert len(moved_out) == min(renames, n_old)
    assert len(still_staged) == n_new - max(0, renames - n_old)


@pytest.mark.parametrize("how", ["recover_run", "list_archives", "create_archive"])
@pytest.mark.parametrize(
    ("kill", "outcome"),
    [
        pytest.param({"phase": "extract", "n": 5}, "old", id="extract"),
        pytest.param({"renames": N_OLD + 2}, "new", id="mid-swap"),
        pytest.param({"phase": "cleanup"}, "new", id="cleanup"),
    ],
)
def test_every_later_operation_recovers_an_interrupted_restore(
    scenario: Scenario, kill: dict[str, Any], outcome: str, how: str
) -> None:
    proc = run_child(scenario.run, "restore", {"name": scenario.name, **kill})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert scenario.journal_state() is not None

    scenario.recover(how)

    assert snapshot(scenario.run) == (scenario.new if outcome == "new" else scenario.old)
    scenario.assert_clean(allow_new_archive=True)


def test_restore_with_many_top_level_entries_killed_at_swap_rolls_forward(
    run_dir: Path,
) -> None:
    scenario = Scenario(run_dir, new_tree(top=300), old_tree(top=300))
    n_old = len(top_level_names(scenario.run))
    n_new = len([p for p in scenario.new if "/" not in p])
    assert n_old > 300 and n_new > 300
    for kill in ({"phase": "swap"}, {"renames": n_old // 2}, {"renames": n_old + n_new // 2}):
        proc = run_child(scenario.run, "restore", {"name": scenario.name, **kill})
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert scenario.journal_state() == SWAPPING
        assert recover_run(scenario.run).action == "rolled_forward"
        assert snapshot(scenario.run) == scenario.new
        scenario.assert_clean()
        scenario.reset()


def test_restore_killed_at_swap_then_half_renamed_by_hand_rolls_forward(
    scenario: Scenario,
) -> None:
    proc = run_child(scenario.run, "restore", {"name": scenario.name, "phase": "swap"})
    assert proc.returncode == -signal.SIGKILL
    state = read_journal(scenario.run)
    assert state is not None and state["state"] == SWAPPING
    _rename_like_the_swap(scenario.run, state, len(state["old"]) + len(state["new"]) // 2)

    assert recover_run(scenario.run).action == "rolled_forward"

    assert snapshot(scenario.run) == scenario.new
    scenario.assert_clean()


# ---------------------------------------------------------------------------------------------
# Journals written by hand, at every split point of the swap
# ---------------------------------------------------------------------------------------------

SMALL_OLD: Spec = {
    "a.txt": File(b"old a\n"),
    "b": Dir(0o700),
    "b/inner.txt": File(b"old inner\n"),
    "keep.txt": File(b"old keep\n"),
    "link": Link("a.txt"),
    "z_only_old.txt": File(b"gone after restore\n"),
}
SMALL_NEW: Spec = {
    "a.txt": File(b"new a\n", mode=0o600),
    "b": Dir(),
    "b/inner.txt": File(b"new inner\n"),
    "c_only_new": Dir(),
    "c_only_new/x.dat": File(b"x" * 1000),
    "keep.txt": File(b"new keep\n"),
    "link": Link("keep.txt"),
}


def _rename_like_the_swap(run: Path, state: dict[str, Any], count: int) -> None:
    """Do the first ``count`` renames of a swap in the core's order: old out, then new in."""
    old, stage = old_dir(run, state["id"]), stage_dir(run, state["id"])
    old.mkdir(exist_ok=True)
    steps = [(run / n, old / n) for n in state["old"]] + [
        (stage / n, run / n) for n in state["new"]
    ]
    for src, dst in steps[:count]:
        os.rename(src, dst)


def _hand_made_swap(run: Path) -> dict[str, Any]:
    build_tree(run, SMALL_OLD)
    work_dir(run).mkdir(parents=True, exist_ok=True)
    jid = "feedc0ffee01"
    build_tree(stage_dir(run, jid), SMALL_NEW)
    state: dict[str, Any] = {
        "id": jid,
        "archive": "ambitious-pinecone.20240102T030405Z.zip",
        "state": SWAPPING,
        "old": top_level_names(run),
        "new": sorted(os.listdir(stage_dir(run, jid))),
    }
    write_journal(run, state)
    return state


N_STEPS = len([n for n in SMALL_OLD if "/" not in n]) + len([n for n in SMALL_NEW if "/" not in n])


@pytest.mark.parametrize("done", range(N_STEPS + 1))
def test_hand_written_swapping_journal_rolls_forward_from_every_split(
    tmp_path: Path, run_dir: Path, done: int
) -> None:
    wanted = snapshot(build_tree(tmp_path / "wanted", SMALL_NEW))
    state = _hand_made_swap(run_dir)
    _rename_like_the_swap(run_dir, state, done)

    result = recover_run(run_dir)

    assert result.action == "rolled_forward"
    assert snapshot(run_dir) == wanted
    assert leftovers(run_dir) == []


@pytest.mark.parametrize("trigger", ["list_archives", "create_archive"])
def test_hand_written_swapping_journal_is_finished_by_the_next_operation(
    tmp_path: Path, run_dir: Path, trigger: str
) -> None:
    wanted = snapshot(build_tree(tmp_path / "wanted", SMALL_NEW))
    state = _hand_made_swap(run_dir)
    _rename_like_the_swap(run_dir, state, 3)

    if trigger == "list_archives":
        assert list_archives(run_dir) == []
    else:
        created = create_archive(run_dir)
        assert archive_files(run_dir / "archives") == [created.name]
        assert purge_trash(run_dir) == 1  # the undo the archive ended (see Scenario.recover)

    assert snapshot(run_dir) == wanted
    assert leftovers(run_dir) == []


def test_hand_written_staging_journal_rolls_back(tmp_path: Path, run_dir: Path) -> None:
    build_tree(run_dir, SMALL_OLD)
    wanted = snapshot(run_dir)
    work_dir(run_dir).mkdir(parents=True)
    jid = "0123456789ab"
    build_tree(stage_dir(run_dir, jid), {"a.txt": File(b"half")})
    build_tree(scratch_dir(run_dir, jid), {"0/1": File(b"partial")})
    write_journal(
        run_dir,
        {"id": jid, "archive": "ambitious-pinecone.20240102T030405Z.zip", "state": "staging"},
    )
    (work_dir(run_dir) / ".journal.json.tmp-4242").write_bytes(b'{"id"')

    result = recover_run(run_dir)

    assert result.action == "rolled_back"
    assert snapshot(run_dir) == wanted
    assert leftovers(run_dir) == []


def test_hand_written_swapped_journal_is_cleaned(tmp_path: Path, run_dir: Path) -> None:
    wanted = snapshot(build_tree(tmp_path / "wanted", SMALL_NEW))
    state = _hand_made_swap(run_dir)
    _rename_like_the_swap(run_dir, state, N_STEPS)
    write_journal(run_dir, {**state, "state": SWAPPED})

    assert recover_run(run_dir).action == "cleaned"
    assert snapshot(run_dir) == wanted
    assert leftovers(run_dir) == []


# ---------------------------------------------------------------------------------------------
# Kills from outside at random times
# ---------------------------------------------------------------------------------------------


def _kill_at(proc: subprocess.Popen[str], delay: float) -> bool:
    """SIGKILL the child after ``delay`` seconds; tell whether it was still running."""
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True
    finally:
        proc.communicate()
    return False


def _calibrate(run_child_once: Callable[[], subprocess.Popen[str]]) -> float:
    proc = run_child_once()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return float(out.split()[-1])


def test_restore_killed_from_outside_at_random_times_is_old_or_new(run_dir: Path) -> None:
    scenario = Scenario(run_dir, big_tree("new"), big_tree("old"))
    spec = {"name": scenario.name}
    duration = _calibrate(lambda: start_child(scenario.run, "restore", spec))
    assert snapshot(scenario.run) == scenario.new
    rng = random.Random(20240102)
    outcomes: list[tuple[float, str | None, str]] = []
    for fraction in (0.05, 0.3, 0.55, 0.8, 1.05):
        scenario.reset()
        delay = duration * fraction * rng.uniform(0.9, 1.1)
        killed = _kill_at(start_child(scenario.run, "restore", spec), delay)
        interrupted = scenario.journal_state()
        recover_run(scenario.run)
        now = snapshot(scenario.run)
        assert now in (scenario.old, scenario.new), f"a mix after a kill at {delay:.3f}s"
        outcomes.append((delay, interrupted, "new" if now == scenario.new else "old"))
        assert killed or now == scenario.new
        scenario.assert_clean()
    # Delays are fractions of a measured restore; at least one must land mid-restore, or the
    # test proved nothing (the others may land before the journal or after the end).
    assert any(state is not None for _, state, _ in outcomes), outcomes


# ---------------------------------------------------------------------------------------------
# Create killed at chosen points and at random times
# ---------------------------------------------------------------------------------------------


class CreateScenario:
    def __init__(self, run: Path, spec: Spec) -> None:
        self.run = run
        build_tree(run, spec)
        self.before = snapshot(run)
        self.first = create_archive(run).name
        self.archives = tree_bytes(run / "archives")
        self.files = sum(1 for node in spec.values() if isinstance(node, File))

    def temp_files(self) -> list[str]:
        names = [n for n in archive_files(self.run / "archives") if n.startswith(".")]
        assert all(re.fullmatch(r"\.tmp-.+\.partial", n) for n in names), names
        return names

    def listed(self) -> list[str]:
        return [a.name for a in list_archives(self.run)]


CREATE_KILLS = [
    pytest.param({"phase": "write", "n": 1}, False, id="write-first-file"),
    pytest.param({"phase": "write", "n": 20}, False, id="write-middle"),
    pytest.param({"phase": "write", "n": -1}, False, id="write-last-file"),
    pytest.param({"link": "before"}, False, id="before-publishing-link"),
    pytest.param({"link": "after"}, True, id="after-link-before-temp-unlink"),
]


@pytest.mark.parametrize("how", ["recover_run", "create_archive"])
@pytest.mark.parametrize(("kill", "published"), CREATE_KILLS)
def test_create_killed_at_a_chosen_point_never_lists_a_partial_archive(
    run_dir: Path, kill: dict[str, Any], published: bool, how: str
) -> None:
    sc = CreateScenario(run_dir, new_tree())
    if kill.get("n") == -1:
        kill = {**kill, "n": sc.files}

    proc = run_child(sc.run, "create", kill)

    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(sc.temp_files()) == 1
    listed = sc.listed()
    assert listed[-1] == sc.first
    assert len(listed) == (2 if published else 1)
    for name in listed:
        assert verify_archive(sc.run, name).ok
    assert sc.temp_files(), "list must not be what removes the temp file"

    if how == "recover_run":
        result = recover_run(sc.run)
        assert (result.action, result.removed_temp) == ("cleaned", 1)
    else:
        made = create_archive(sc.run)
        assert verify_archive(sc.run, made.name).ok
        assert len(sc.listed()) == len(listed) + 1

    assert sc.temp_files() == []
    assert snapshot(sc.run) == sc.before
    archives = tree_bytes(sc.run / "archives")
    assert {k: archives[k] for k in sc.archives} == sc.archives
    assert leftovers(sc.run) == []


def test_create_killed_from_outside_at_random_times_leaves_no_partial_archive(
    run_dir: Path,
) -> None:
    sc = CreateScenario(run_dir, big_tree("create"))
    os.unlink(sc.run / "archives" / sc.first)
    duration = _calibrate(lambda: start_child(sc.run, "create", {}))
    rng = random.Random(7)
    for fraction in (0.1, 0.5, 0.9):
        for name in archive_files(sc.run / "archives"):
            os.unlink(sc.run / "archives" / name)
        _kill_at(start_child(sc.run, "create", {}), duration * fraction * rng.uniform(0.9, 1.1))
        for name in sc.listed():
            assert verify_archive(sc.run, name).ok, f"{name} is listed but incomplete"
        recover_run(sc.run)
        assert sc.temp_files() == []
        assert snapshot(sc.run) == sc.before
