"""Forked worker processes (``core.workers``): results, failures, deaths, what children keep.

Every test runs real children. After each one, no child of the test process may be left
(alive or zombie) and no descriptor the pool opened may still be open here.
"""

from __future__ import annotations

import errno
import os
import signal
import struct
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive.core.errors import DamagedArchive, RunArchiveError
from runarchive.core.workers import WorkerDied, run_tasks
from tests.support.processes import descendants, open_fds, pids_outliving_a_killed_parent

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers fork on Linux only")


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    """Every test leaves no child process and no descriptor behind."""
    children, fds = descendants(os.getpid()), open_fds()
    yield
    assert descendants(os.getpid()) == children
    assert open_fds() - fds == set()


def collect(count: int, work: object, workers: int = 2, **kw: object) -> dict[int, int]:
    results: dict[int, int] = {}

    def done(index: int, result: int) -> None:
        assert index not in results
        results[index] = result

    run_tasks(count, work, done, workers=workers, **kw)  # type: ignore[arg-type]
    return results


def test_every_task_runs_once_and_its_result_comes_back_here() -> None:
    def work(i: int) -> int:
        time.sleep(0.005)  # both children get some
        return i * 3

    results = collect(40, work)

    assert results == {i: i * 3 for i in range(40)}


def test_tasks_run_in_two_other_processes() -> None:
    def work(i: int) -> int:
        time.sleep(0.01)
        return os.getpid()

    pids = set(collect(20, work).values())

    assert len(pids) == 2 and os.getpid() not in pids


def test_more_tasks_than_a_pipe_holds_are_all_fed() -> None:
    results = collect(40_000, lambda i: i % 7)  # 160 KB of indices: fed as the pipe drains

    assert len(results) == 40_000 and all(results[i] == i % 7 for i in (0, 39_999, 12_345))


@pytest.mark.parametrize("workers", [1, 2])
def test_one_worker_or_one_task_runs_here_in_order(workers: int) -> None:
    seen: list[tuple[int, int]] = []
    started: list[int] = []

    run_tasks(5 if workers == 1 else 1, lambda i: os.getpid(), lambda i, r: seen.append((i, r)),
              workers=workers, start=lambda: started.append(os.getpid()))  # fmt: skip

    assert [i for i, _ in seen] == list(range(len(seen)))
    assert {r for _, r in seen} == {os.getpid()} and started == [os.getpid()]


def test_start_runs_once_in_each_child_before_its_tasks() -> None:
    state = {"started": 0}

    def start() -> None:
        state["started"] += 1

    def work(i: int) -> int:
        time.sleep(0.005)
        return state["started"]

    assert set(collect(20, work, start=start).values()) == {1}
    assert state["started"] == 0  # never here


def test_an_exception_in_a_task_is_raised_here_with_its_type_and_words() -> None:
    def work(i: int) -> int:
        if i == 7:
            raise DamagedArchive("CRC mismatch in 'a/b.dat': the archive is damaged.")
        return i

    with pytest.raises(DamagedArchive, match=r"CRC mismatch in 'a/b\.dat'"):
        collect(30, work)


def test_an_os_error_keeps_its_errno_so_a_full_disk_is_told_apart() -> None:
    def work(i: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "f.dat")

    with pytest.raises(OSError) as caught:
        collect(4, work)

    assert caught.value.errno == errno.ENOSPC and caught.value.filename == "f.dat"


def test_an_exception_that_cannot_be_pickled_still_arrives_as_text() -> None:
    class Local(Exception):  # defined here: not importable, so not picklable
        pass

    def work(i: int) -> int:
        raise Local("odd")

    with pytest.raises(RunArchiveError, match="Local: odd"):
        collect(4, work)


def test_a_child_killed_mid_task_fails_the_run_and_the_other_is_stopped() -> None:
    started = time.monotonic()

    def work(i: int) -> int:
        if i == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.05)
        return i

    with pytest.raises(WorkerDied, match="killed by SIGKILL"):
        collect(200, work)  # 200 x 50 ms per child would take 5 s: the other one was stopped

    assert time.monotonic() - started < 3


def test_a_child_that_exits_without_a_word_fails_the_run() -> None:
    def work(i: int) -> int:
        os._exit(0)

    with pytest.raises(WorkerDied, match="exited with status 0"):
        collect(4, work)


def test_an_exception_of_the_callback_here_stops_and_reaps_every_child() -> None:
    def done(index: int, result: int) -> None:
        raise KeyError("listener failed")

    with pytest.raises(KeyError, match="listener failed"):
        run_tasks(100, lambda i: time.sleep(0.02) or i, done, workers=2)


def test_a_result_that_is_no_unsigned_32_bit_int_fails_the_run() -> None:
    with pytest.raises(struct.error, match=r"argument out of range"):
        collect(4, lambda i: -1)


def test_children_keep_only_the_descriptors_they_are_given(tmp_path: Path) -> None:
    kept = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    other_r, other_w = os.pipe()
    try:

        def work(i: int) -> int:
            time.sleep(0.005)
            mine = {int(n) for n in os.listdir("/proc/self/fd")}
            # 0-2, the kept folder, the task pipe, the result pipe, and listdir's own handle
            seen = (kept in mine) | (other_r in mine) << 1 | (other_w in mine) << 2
            return seen | len(mine) << 3

        results = set(collect(10, work, keep=[kept]).values())
    finally:
        for fd in (kept, other_r, other_w):
            os.close(fd)

    assert {r & 0b111 for r in results} == {1}
    assert {r >> 3 for r in results} == {7}


def test_a_signal_handler_of_the_caller_does_not_run_in_a_child(tmp_path: Path) -> None:
    marker = tmp_path / "handled"
    previous = signal.signal(signal.SIGUSR1, lambda *_: marker.write_text("parent code ran"))
    try:

        def work(i: int) -> int:
            os.kill(os.getpid(), signal.SIGUSR1)  # default action: the child dies
            time.sleep(0.1)
            return i

        with pytest.raises(WorkerDied, match="SIGUSR1"):
            collect(4, work)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not marker.exists()


PARENT = textwrap.dedent(
    """
    import os, signal, sys, time
    from runarchive.core.workers import run_tasks
    pids = set()
    def work(i):
        time.sleep(0.02)
        return os.getpid()
    def done(i, pid):
        pids.add(pid)
        if len(pids) == 2:
            print(*sorted(pids), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    run_tasks(10_000, work, done, workers=2)
    """
)


def test_children_die_with_their_parent() -> None:
    assert pids_outliving_a_killed_parent(PARENT) == []
