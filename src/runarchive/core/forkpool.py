"""Forked worker processes building a fixed list of tasks in parallel, results read in order.

``create`` uses it for a run's small files. Per small file the work is ~5 system calls, a
sha256 and a deflate of a few KiB and the headers around them, and most of it holds the
interpreter lock, so threads do not run it in parallel (two threads: 1.94 s against one's
2.27 s on 30,000 files); processes do, each under its own lock.

A child's life (what it keeps, how it dies with its parent, how its failure travels, how it
is reaped, and why none of it is ``multiprocessing``) is ``forkchild``'s, shared with the
restore's ``workers``. What is this pool's own is the dispatch:

* the children are forked once, after the caller opened what they read (the run and the files
  cache), and see the task list without its being sent;
* child ``i`` of ``n`` builds tasks ``i``, ``i + n``, … in order and writes each result to its
  own pipe, so the parent reads task ``k`` from child ``k % n`` and gets results in task order
  with no reordering buffer; a full pipe blocks the child (memory stays bounded: a pipe's
  buffer and one task per child, whatever the number of tasks);
* every message is framed (kind, length) and each child ends with a "done" message: a child
  that dies shows as end-of-file before it (``WorkerDied``); an exception in a child is raised
  by the parent, with its type, when it reaches that task.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Generic, TypeVar

from . import forkchild
from .errors import WorkerFailed

T = TypeVar("T")

# A result, the error of a task, or the end of a child's tasks; then the payload's length.
_HEAD = struct.Struct("<BQ")
_RESULT, _ERROR, _DONE = 0, 1, 2
# A pipe this big holds ~a dozen results of small files: a child may run that far ahead of
# the parent before it blocks (Linux's default for unprivileged users is its ceiling).
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

Buffer = bytes | bytearray | memoryview


class ForkPool(Generic[T]):
    """``processes`` children building ``tasks`` with ``work``; ``next()`` gives results in order.

    ``work(task)`` returns the result as buffers (written back to back); ``next()`` returns
    them joined, as one ``memoryview``. ``keep`` lists the descriptors the children use (the
    rest are closed in them). Use as a context manager: leaving it kills and reaps the
    children, whether or not every result was read.
    """

    def __init__(
        self,
        tasks: Sequence[T],
        work: Callable[[T], Sequence[Buffer]],
        processes: int,
        keep: Iterable[int] = (),
    ) -> None:
        if processes < 1:
            raise ValueError("at least one process")
        self.tasks, self.work = tasks, work
        self.processes = min(processes, max(1, len(tasks)))
        self.keep = frozenset(keep)
        self.pids: list[int] = []
        self.pipes: list[int] = []
        self.next_task = 0
        self.finished = False

    def __enter__(self) -> ForkPool[T]:
        prctl = forkchild.prepare()
        try:
            for index in range(self.processes):
                read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
                self.pipes.append(read_fd)
                try:
                    with contextlib.suppress(OSError):
                        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, PIPE_BYTES)
                    body = functools.partial(self._child, index, write_fd)
                    self.pids.append(forkchild.spawn(body, self.keep | {write_fd}, prctl))
                finally:
                    os.close(write_fd)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the child ---------------------------------------------------------------------

    def _child(self, index: int, out: int) -> None:
        tasks, work, step = self.tasks, self.work, self.processes
        try:
            for task_index in range(index, len(tasks), step):
                try:
                    parts = work(tasks[task_index])
                except Exception as exc:  # sent to the parent, raised there in task order
                    _send(out, _ERROR, [forkchild.encode_error(exc)])
                    return
                _send(out, _RESULT, parts)
            _send(out, _DONE, [])
        except BrokenPipeError:
            return  # the parent stopped reading: it is leaving, and kills us anyway

    # --- the parent --------------------------------------------------------------------

    def next(self) -> memoryview:
        """Return the next task's result (blocking until its child sent it)."""
        if self.next_task >= len(self.tasks):
            raise IndexError("every result was read")
        child = self.next_task % self.processes
        kind, payload = self._receive(child)
        if kind == _ERROR:
            raise forkchild.decode_error(bytes(payload))
        if kind != _RESULT:
            raise WorkerFailed(f"Archive worker {self.pids[child]} sent a message out of order.")
        self.next_task += 1
        return payload

    def finish(self) -> None:
        """After the last result: check that every child ended its work, then reap them."""
        if self.next_task != len(self.tasks):
            raise RuntimeError("results left unread")
        for child in range(len(self.pids)):
            kind, _ = self._receive(child)
            if kind != _DONE:
                raise WorkerFailed(f"Archive worker {self.pids[child]} sent more than asked.")
        self.finished = True
        self.close()

    def _receive(self, child: int) -> tuple[int, memoryview]:
        fd = self.pipes[child]
        head = _read_exact(fd, _HEAD.size)
        if head is None:
            raise self._lost(child)
        kind, length = _HEAD.unpack(head)
        payload = _read_exact(fd, length) if length else memoryview(b"")
        if payload is None:
            raise self._lost(child)
        return kind, payload

    def _lost(self, child: int) -> WorkerFailed:
        pid = self.pids[child]
        status = forkchild.reap(pid)  # its pipe is closed: it is exiting, if not gone
        self.pids[child] = -1  # reaped
        return forkchild.died(pid, status)

    def close(self) -> None:
        """Kill (unless they finished) and reap every child; close the pipes (safe to repeat)."""
        for fd in self.pipes:
            os.close(fd)
        self.pipes = []
        pids = [pid for pid in self.pids if pid >= 0]
        if self.finished:
            for pid in pids:
                forkchild.reap(pid)
        else:
            forkchild.kill_and_reap(pids)
        self.pids = []


def _send(fd: int, kind: int, parts: Sequence[Buffer]) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    pending = [memoryview(_HEAD.pack(kind, sum(len(v) for v in views))), *views]
    while pending:
        written = os.writev(fd, pending)
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if written:
            pending[0] = pending[0][written:]


def _read_exact(fd: int, size: int) -> memoryview | None:
    """Read exactly ``size`` bytes from ``fd``; None at an end of file before that."""
    buf = memoryview(bytearray(size))
    got = 0
    while got < size:
        n = os.readv(fd, [buf[got:]])
        if n == 0:
            return None
        got += n
    return buf
