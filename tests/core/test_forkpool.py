"""The forked worker pool on its own: order, errors, deaths both ways, what a child keeps.

The child's life is ``forkchild``'s, shared with the restore's ``workers`` (whose tests cover
the error transport in full); these tests hold it for this pool's dispatch.
"""

from __future__ import annotations

import errno
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from runarchive.core import WorkerFailed
from runarchive.core.forkchild import WorkerDied
from runarchive.core.forkpool import PIPE_BYTES, ForkPool
from tests.support.processes import alive, children, pids_outliving_a_killed_parent


def echo(task: int) -> list[bytes]:
    # Uneven work and results bigger than a pipe: children finish out of step.
    time.sleep(0.002 * (task % 5))
    return [b"%d:" % task, bytes([task % 251]) * (task * 997 % (3 * PIPE_BYTES))]


def test_results_come_in_task_order_whatever_child_built_them() -> None:
    tasks = list(range(40))
    with ForkPool(tasks, echo, 3) as pool:
        got = [bytes(pool.next()) for _ in tasks]
        pool.finish()
    assert got == [b"".join(echo(t)) for t in tasks]
    assert children() == []


def fail_at(task: int) -> list[bytes]:
    if task == 5:
        raise OSError(errno.EACCES, "Permission denied", f"wepp/secret-{task}.dat")
    if task == 7:
        raise ValueError("bad \0 value")
    return [b"ok"]


def test_an_error_in_a_child_is_raised_by_the_parent_at_its_task() -> None:
    with ForkPool(list(range(10)), fail_at, 2) as pool:
        assert [bytes(pool.next()) for _ in range(5)] == [b"ok"] * 5
        with pytest.raises(PermissionError) as caught:
            pool.next()
    assert (caught.value.errno, caught.value.filename) == (errno.EACCES, "wepp/secret-5.dat")
    with ForkPool(list(range(6, 10)), fail_at, 2) as pool:
        assert bytes(pool.next()) == b"ok"
        with pytest.raises(ValueError, match=r"^bad \x00 value$"):  # its own type, as in a thread
            pool.next()
    assert children() == []


def die_at(task: int) -> list[bytes]:
    if task == 3:
        os._exit(7)
    return [b"ok"]


def test_a_child_that_dies_fails_the_pool_and_says_how() -> None:
    with ForkPool(list(range(8)), die_at, 2) as pool:
        assert [bytes(pool.next()) for _ in range(3)] == [b"ok"] * 3
        with pytest.raises(WorkerDied, match=r"\(\d+\) exited with status 7"):
            pool.next()
    assert children() == []


def descriptors(task: int) -> list[bytes]:
    return [" ".join(sorted(os.listdir("/proc/self/fd"), key=int)).encode()]


def test_a_child_keeps_only_the_descriptors_it_is_given(tmp_path: Path) -> None:
    kept = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    other = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with ForkPool([0, 1], descriptors, 2, keep=[kept]) as pool:
            seen = [bytes(pool.next()).decode().split() for _ in range(2)]
            pool.finish()
    finally:
        os.close(kept)
        os.close(other)
    for fds in seen:
        # stdin/out/err, the kept one, its own pipe (and listdir's own descriptor).
        assert str(kept) in fds and str(other) not in fds
        assert len(fds) <= 6, fds


def test_a_signal_handler_of_the_caller_does_not_run_in_a_child(tmp_path: Path) -> None:
    marker = tmp_path / "handled"
    previous = signal.signal(signal.SIGUSR1, lambda *_: marker.write_text("parent code ran"))

    def signalled(task: int) -> list[bytes]:
        os.kill(os.getpid(), signal.SIGUSR1)  # the default action: the child dies
        time.sleep(0.1)
        return [b"ok"]

    try:
        with (
            ForkPool([0, 1, 2], signalled, 2) as pool,
            pytest.raises(WorkerFailed, match="killed by SIGUSR1"),
        ):
            pool.next()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not marker.exists() and children() == []


PARENT = textwrap.dedent(
    """
    import os, signal, sys, time
    from runarchive.core.forkpool import ForkPool

    def stall(task):
        time.sleep(60)  # never writes: only the parent's death can end it early
        return [b""]

    with ForkPool([0, 1], stall, 2) as pool:
        print(" ".join(map(str, pool.pids)), flush=True)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_children_die_with_their_parent_even_while_they_work() -> None:
    assert pids_outliving_a_killed_parent(PARENT) == []


def test_leaving_early_kills_and_reaps_every_child() -> None:
    def stall(task: int) -> list[bytes]:
        time.sleep(60)
        return [b""]

    started = time.monotonic()
    with ForkPool([0, 1, 2], stall, 2) as pool:
        pids = list(pool.pids)
        assert sorted(children()) == sorted(pids)
    assert time.monotonic() - started < 10
    assert children() == [] and not any(alive(pid) for pid in pids)
