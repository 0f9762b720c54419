"""Numbered tasks run by forked worker processes, each with its own interpreter lock.

Why processes: a restore of many small files makes about ten short system calls per file,
and every one releases and retakes the GIL. With extraction threads on two cores each of
those was a futex hand-off between threads (45 futex calls per file measured on the 30,000
small-file mix, most of the process's system time on tmpfs). A forked child has its own
interpreter lock and already holds the whole plan in its (copy-on-write) memory, so a task
is a 4-byte index on a pipe and its result 9 bytes back.

A child's life (what it keeps, how it dies with its parent, how its failure travels, how it
is reaped, and why none of it is ``multiprocessing``) is ``forkchild``'s, shared with
create's ``forkpool``. Above all a child keeps only the descriptors it is given, never the
run's lock: the children of a killed restore take some milliseconds to die, and the next
operation must find the run free at once (it then waits on the stage's own lock,
``journal.wait_for_writers``, which the children do hold). What is this pool's own is the
dispatch: children pull the next task index from one pipe when they are free, so results
come in completion order, and the first failure stops everything. An exception in a task is
re-raised here with its type, a child that dies raises ``WorkerDied``, and any exception in
the parent's own callback stops them too. Every child is then killed and reaped before the
error propagates, so when ``run_tasks`` returns or raises no child of it is alive, none is a
zombie and no pipe of it is open.

For one worker or one task, or where forking does not work (``forkchild.forking_works``),
the tasks run in the calling thread with the same callbacks.
"""

from __future__ import annotations

import functools
import os
import selectors
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import forkchild
from .errors import RunArchiveError
from .forkchild import WorkerDied, forking_works

_TASK = struct.Struct("<I")
_RESULT = struct.Struct("<cII")  # b"R", task index, result
_ERROR = struct.Struct("<cI")  # b"E", length of the pickled exception that follows
_DONE = b"D"
_PIPE_BUF = 4096  # writes up to this size are atomic: a task index is never split
MAX_RESULT = (1 << 32) - 1


__all__ = ["MAX_RESULT", "WorkerDied", "forking_works", "run_tasks"]


def run_tasks(
    count: int,
    work: Callable[[int], int],
    done: Callable[[int, int], None],
    *,
    workers: int,
    keep: Iterable[int] = (),
    start: Callable[[], None] | None = None,
) -> None:
    """Run ``work(i)`` for every ``i`` in ``range(count)``; call ``done(i, result)`` here.

    With ``workers`` > 1 (and more than one task) the tasks go to that many forked children,
    each taking the next index when it is free, so ``done`` sees completion order; a child
    keeps open only the descriptors in ``keep`` (and stdin, stdout, stderr) and calls
    ``start`` once before its first task. Otherwise they run here, in order, after ``start``.
    A result is an int in ``0..MAX_RESULT``. See the module docstring for failures.
    """
    if workers < 2 or count < 2 or not forking_works():
        if start is not None:
            start()
        for index in range(count):
            done(index, work(index))
        return
    _Pool(count, work, done, min(workers, count), frozenset(keep), start).run()


@dataclass(slots=True)
class _Child:
    pid: int
    out: int  # read end of its result pipe
    buffer: bytearray = field(default_factory=bytearray)
    finished: bool = False  # sent its "done" record
    reaped: bool = False


class _Pool:
    def __init__(self, count: int, work: Callable[[int], int], done: Callable[[int, int], None],
                 workers: int, keep: frozenset[int],
                 start: Callable[[], None] | None) -> None:  # fmt: skip
        self.count, self.work, self.done, self.workers = count, work, done, workers
        self.keep, self.start = keep, start
        self.children: dict[int, _Child] = {}  # by result pipe
        self.failure: BaseException | None = None
        self.tasks_w = -1

    def run(self) -> None:
        prctl = forkchild.prepare()
        tasks_r, self.tasks_w = os.pipe()
        try:
            for _ in range(self.workers):
                out_r, out_w = os.pipe()
                try:
                    body = functools.partial(self._child, tasks_r, out_w)
                    pid = forkchild.spawn(body, self.keep | {tasks_r, out_w}, prctl)
                except BaseException:
                    os.close(out_r)
                    raise
                finally:
                    os.close(out_w)
                self.children[out_r] = _Child(pid, out_r)
            os.close(tasks_r)
            tasks_r = -1
            self._serve()
        finally:
            if tasks_r >= 0:
                os.close(tasks_r)
            self._close_tasks()
            self._stop_all()
        if self.failure is not None:
            raise self.failure

    def _close_tasks(self) -> None:
        if self.tasks_w >= 0:
            os.close(self.tasks_w)
            self.tasks_w = -1

    def _serve(self) -> None:
        """Feed task indices and read results until every child finished, or one failed."""
        pending = memoryview(struct.pack(f"<{self.count}I", *range(self.count)))
        os.set_blocking(self.tasks_w, False)
        with selectors.DefaultSelector() as sel:
            sel.register(self.tasks_w, selectors.EVENT_WRITE)
            for out in self.children:
                sel.register(out, selectors.EVENT_READ)
            live = len(self.children)
            while live and self.failure is None:
                for key, _ in sel.select():
                    if key.fd == self.tasks_w:
                        try:
                            sent = os.write(self.tasks_w, pending[:_PIPE_BUF])
                        except BlockingIOError:
                            continue
                        pending = pending[sent:]
                        if not pending:  # the children read EOF once they drained the pipe
                            sel.unregister(self.tasks_w)
                            self._close_tasks()
                        continue
                    child = self.children[key.fd]
                    data = os.read(child.out, 1 << 16)
                    if data:
                        child.buffer += data
                        self._records(child)
                    else:
                        sel.unregister(child.out)
                        self._ended(child)
                        live -= 1
                    if self.failure is not None:
                        break

    def _records(self, child: _Child) -> None:
        buf = child.buffer
        while buf and self.failure is None:
            kind = buf[:1]
            if kind == b"R":
                if len(buf) < _RESULT.size:
                    return
                _, index, result = _RESULT.unpack_from(buf)
                del buf[: _RESULT.size]
                self.done(index, result)
            elif kind == b"E":
                if len(buf) < _ERROR.size:
                    return
                _, size = _ERROR.unpack_from(buf)
                if len(buf) < _ERROR.size + size:
                    return
                self.failure = forkchild.decode_error(bytes(buf[_ERROR.size : _ERROR.size + size]))
                return
            elif kind == _DONE:
                del buf[:1]
                child.finished = True
            else:
                self.failure = RunArchiveError("A worker process sent an unreadable record.")
                return

    def _ended(self, child: _Child) -> None:
        """The child closed its pipe (it exits): reap it and tell a death from an end."""
        status = forkchild.reap(child.pid)
        child.reaped = True
        if self.failure is None and not (child.finished and status in (0, None)):
            self.failure = forkchild.died(child.pid, status)

    def _stop_all(self) -> None:
        """Kill every child not reaped yet, reap it and close every pipe."""
        forkchild.kill_and_reap(c.pid for c in self.children.values() if not c.reaped)
        for child in self.children.values():
            os.close(child.out)
        self.children.clear()

    def _child(self, tasks: int, out: int) -> None:
        try:
            if self.start is not None:
                self.start()
            while raw := os.read(tasks, _TASK.size):
                (index,) = _TASK.unpack(raw)
                result = self.work(index)
                _write_all(out, _RESULT.pack(b"R", index, result))
            _write_all(out, _DONE)
        except BaseException as exc:  # every failure goes to the parent; the child exits 1
            payload = forkchild.encode_error(exc)
            _write_all(out, _ERROR.pack(b"E", len(payload)) + payload)
            raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
