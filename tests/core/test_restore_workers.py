"""A restore's extraction workers (forked processes): their failures, their deaths, their handles.

The trees here hold enough files that a restore extracts them in worker processes
(``restore.FORK_MIN_FILES``). A worker that dies fails the restore, which leaves the run
exactly as before; a restore killed mid-extraction takes its workers with it, and the run
can be recovered at once: the workers never hold the run's lock, and recover waits for the
stage lock they do hold (``journal.wait_for_writers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive.core import Busy, create_archive, recover_run, restore_archive
from runarchive.core import journal as journal_module
from runarchive.core.progress import Phase, ProgressEvent
from runarchive.core.restore import FORK_MIN_FILES
from runarchive.core.workers import WorkerDied
from tests.support.journal import leftovers, stage_dir, work_dir, write_journal
from tests.support.processes import alive, descendants
from tests.support.tree import Dir, File, Spec, build_tree, snapshot, tree_bytes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="workers fork on Linux only"),
]

FILES = FORK_MIN_FILES + 200


def many(flavour: str) -> Spec:
    spec: Spec = {"wepp": Dir(), "soil": Dir()}
    spec |= {f"wepp/H{i:04}.dat": File(f"{flavour} {i}\n".encode() * 40) for i in range(FILES)}
    spec |= {"soil/f.sol": File(flavour.encode() * 10), "notes.txt": File(b"notes\n")}
    return spec


class Scenario:
    """A run holding the old tree, with an archive of the new one."""

    def __init__(self, run: Path) -> None:
        self.run = run
        build_tree(run, many("new"))
        self.new = snapshot(run)
        self.name = create_archive(run).name
        for path in sorted(run.rglob("*"), reverse=True):
            if path.relative_to(run).parts[0] != "archives":
                path.rmdir() if path.is_dir() else path.unlink()
        build_tree(run, many("old"))
        self.old = snapshot(run)
        self.archives = tree_bytes(run / "archives")


@pytest.fixture
def scenario(run_dir: Path) -> Iterator[Scenario]:
    before = descendants(os.getpid())
    yield Scenario(run_dir)
    assert descendants(os.getpid()) == before  # no worker left behind, alive or zombie


def workers_now() -> list[int]:
    """The worker processes of a restore running in this process."""
    return sorted(descendants(os.getpid()))


def test_a_restore_of_many_files_extracts_them_in_worker_processes(scenario: Scenario) -> None:
    seen: list[list[int]] = []

    def progress(event: ProgressEvent) -> None:
        if event.phase == Phase.EXTRACT and event.files_done == FILES // 2:
            seen.append(workers_now())

    restore_archive(scenario.run, scenario.name, progress=progress)

    assert len(seen) == 1 and len(seen[0]) >= 1, "no worker process was extracting"
    assert snapshot(scenario.run) == scenario.new


def test_a_worker_killed_mid_extraction_fails_the_restore_and_leaves_the_run(
    scenario: Scenario,
) -> None:
    def progress(event: ProgressEvent) -> None:
        if event.phase == Phase.EXTRACT and event.files_done == 40:
            os.kill(workers_now()[0], signal.SIGKILL)

    with pytest.raises(WorkerDied, match="killed by SIGKILL"):
        restore_archive(scenario.run, scenario.name, progress=progress)

    assert snapshot(scenario.run) == scenario.old
    assert tree_bytes(scenario.run / "archives") == scenario.archives
    assert leftovers(scenario.run) == []


def test_workers_hold_no_lock_of_the_run_and_no_handle_of_the_caller(
    scenario: Scenario, tmp_path: Path
) -> None:
    lock = os.stat(work_dir(scenario.run) / "lock")
    sentinel = tmp_path / "caller's file"
    sentinel.write_bytes(b"")
    caller_fd = os.open(sentinel, os.O_RDONLY)
    held: dict[int, list[os.stat_result]] = {}

    def progress(event: ProgressEvent) -> None:
        if event.phase == Phase.EXTRACT and event.files_done == FILES // 2:
            for pid in workers_now():
                fds = Path(f"/proc/{pid}/fd")
                held[pid] = []
                for name in os.listdir(fds):
                    with contextlib.suppress(OSError):  # closed meanwhile
                        held[pid].append(os.stat(fds / name))

    try:
        restore_archive(scenario.run, scenario.name, progress=progress)
    finally:
        os.close(caller_fd)

    assert held, "no worker was seen"
    targets = [(st.st_dev, st.st_ino) for sts in held.values() for st in sts]
    assert (lock.st_dev, lock.st_ino) not in targets
    assert (os.stat(sentinel).st_dev, os.stat(sentinel).st_ino) not in targets


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from runarchive.core import restore_archive
    from tests.support.processes import descendants

    def progress(event):
        if event.phase == "extract" and event.files_done == int(sys.argv[3]):
            print(*sorted(descendants(os.getpid())), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    restore_archive(Path(sys.argv[1]), sys.argv[2], progress=progress)
    """
)


@pytest.mark.parametrize("at", [1, FILES // 2])
def test_a_restore_killed_mid_extraction_takes_its_workers_and_recovers_at_once(
    scenario: Scenario, at: int
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(scenario.run), scenario.name, str(at)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    workers = [int(p) for p in proc.stdout.split()]

    result = recover_run(scenario.run)  # at once: the workers may still be dying

    assert result.action == "rolled_back"
    assert snapshot(scenario.run) == scenario.old
    assert leftovers(scenario.run) == []
    assert workers and not any(alive(pid) for pid in workers)


# ---------------------------------------------------------------------------------------------
# Recover and the stage lock of a killed restore's workers
# ---------------------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    with open(os.path.join(sys.argv[1], "late.dat"), "w") as late:  # a last write, then gone
        late.write("written by a worker as it died")
    """
)


def staging_run(run: Path) -> tuple[dict[str, tuple[object, ...]], Path]:
    build_tree(run, {"a.txt": File(b"as before\n")})
    wanted = snapshot(run)
    jid = "0123456789ab"
    stage = stage_dir(run, jid)
    build_tree(stage, {"half.dat": File(b"half")})
    write_journal(run, {"id": jid, "archive": "ambitious-pinecone.20240102T030405Z.zip",
                        "state": "staging"})  # fmt: skip
    return wanted, stage


def hold(stage: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(stage), str(seconds)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_recover_waits_for_the_stage_writers_then_removes_the_stage(run_dir: Path) -> None:
    wanted, stage = staging_run(run_dir)
    holder = hold(stage, 0.3)
    started = time.monotonic()

    result = recover_run(run_dir)

    assert time.monotonic() - started >= 0.25
    holder.communicate(timeout=10)
    assert holder.returncode == 0  # it wrote its last file before recover removed all
    assert result.action == "rolled_back"
    assert snapshot(run_dir) == wanted
    assert leftovers(run_dir) == []


def test_a_stage_held_too_long_is_busy_and_left_untouched(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted, stage = staging_run(run_dir)
    monkeypatch.setattr(journal_module, "WRITERS_WAIT", 0.2)
    holder = hold(stage, 60)
    try:
        with pytest.raises(Busy, match="still hold"):
            recover_run(run_dir)
        assert (stage / "half.dat").read_bytes() == b"half"
        assert json.loads((work_dir(run_dir) / "journal.json").read_text())["state"] == "staging"
    finally:
        holder.kill()
        holder.communicate(timeout=10)

    assert recover_run(run_dir).action == "rolled_back"
    assert snapshot(run_dir) == wanted
    assert leftovers(run_dir) == []


def test_a_stray_stage_without_journal_waits_for_its_writers_too(run_dir: Path) -> None:
    wanted, stage = staging_run(run_dir)
    (work_dir(run_dir) / "journal.json").unlink()
    holder = hold(stage, 0.3)

    recover_run(run_dir)

    holder.communicate(timeout=10)
    assert holder.returncode == 0
    assert snapshot(run_dir) == wanted
    assert leftovers(run_dir) == []


def test_a_create_and_a_restore_by_workers_in_one_process(run_dir: Path) -> None:
    # Both pools call libc's prctl through the one ctypes object the process shares: a create
    # by worker processes then a restore by worker processes, in the same process, must both
    # work (after today's merge the create's typed prctl made the restore's call refuse).
    from runarchive.core.create import FORK_MIN_ENTRIES

    spec: Spec = {"wepp": Dir()}
    spec |= {f"wepp/H{i:05}.dat": File(f"run {i}\n".encode() * 30)
             for i in range(FORK_MIN_ENTRIES + 100)}  # fmt: skip
    build_tree(run_dir, spec)
    before = snapshot(run_dir)
    name = create_archive(run_dir).name
    for path in (run_dir / "wepp").iterdir():
        path.write_bytes(b"changed")
    restore_archive(run_dir, name)
    assert snapshot(run_dir) == before
