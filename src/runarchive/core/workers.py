"""Numbered tasks run by forked worker processes, each with its own interpreter lock.

Why processes: a restore of many small files makes about ten short system calls per file,
and every one releases and retakes the GIL. With extraction threads on two cores each of
those was a futex hand-off between threads (45 futex calls per file measured on the 30,000
small-file mix, most of the process's system time on tmpfs). A forked child has its own
interpreter lock and already holds the whole plan in its (copy-on-write) memory, so a task
is a 4-byte index on a pipe and its result 9 bytes back.

Why by hand, not ``multiprocessing`` or ``concurrent.futures.ProcessPoolExecutor``: a child
must keep open only the descriptors it is given. Above all not the run's lock: the children
of a killed restore take some milliseconds to die, and the next operation must find the run
free at once (it then waits on the stage's own lock, ``journal.wait_for_writers``, which the
children do hold); nor a caller's sockets or files. Those pools close nothing they inherit,
pickle every call and result through helper threads in the parent (threads that would
contend for the parent's GIL again) and do not make children die with their parent.

Rules kept here:

* A child dies with its parent (``PR_SET_PDEATHSIG``, checked against a parent already gone
  before it was set), ignores SIGINT (the parent stops it), has every Python-level signal
  handler reset (the caller's would run in the child) and no signal wake-up descriptor.
* A child never returns into the caller's frames: it leaves by ``os._exit``, so no
  ``finally`` of the caller, no ``atexit`` hook and no buffered output runs twice. Its cyclic
  garbage collector is frozen over the inherited heap (``gc.freeze``): a collection would
  touch every inherited object (copying its page) and could finalize the caller's objects.
* The first failure stops everything: an exception in a task is re-raised in the parent with
  its type (``pickle``; a ``RunArchiveError`` with its text if it cannot be pickled), a child
  that dies (killed, out of memory) raises ``WorkerDied``; any exception in the parent's own
  callback too. Every child is then killed and reaped before the error propagates, so when
  ``run_tasks`` returns or raises no child of it is alive, none is a zombie and no pipe of
  it is open.

Linux only (``prctl``); elsewhere, and for one worker or one task, the tasks run in the
calling thread with the same callbacks.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import selectors
import signal
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from .errors import RunArchiveError, WorkerFailed
from .forkpool import load_prctl
from .fsutil import _libc

_TASK = struct.Struct("<I")
_RESULT = struct.Struct("<cII")  # b"R", task index, result
_ERROR = struct.Struct("<cI")  # b"E", length of the pickled exception that follows
_DONE = b"D"
_PR_SET_PDEATHSIG = 1
_PIPE_BUF = 4096  # writes up to this size are atomic: a task index is never split
MAX_RESULT = (1 << 32) - 1


class WorkerDied(WorkerFailed):
    """A worker process ended without finishing its tasks (killed, or out of memory).

    A ``WorkerFailed`` (code ``worker_failed``), as a create's dead worker is: one code for
    the CLI and the API whichever pool lost its child.
    """


def forking_works() -> bool:
    """Tell whether tasks can go to forked children here (Linux, with ``prctl``)."""
    return sys.platform == "linux" and hasattr(_libc(), "prctl")


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
        prctl = load_prctl()  # looked up here: the child must not load anything
        tasks_r, self.tasks_w = os.pipe()
        parent = os.getpid()
        try:
            for _ in range(self.workers):
                out_r, out_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    self._child(prctl, parent, tasks_r, out_w)  # never returns
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
                self.failure = _unpickled(bytes(buf[_ERROR.size : _ERROR.size + size]))
                return
            elif kind == _DONE:
                del buf[:1]
                child.finished = True
            else:
                self.failure = RunArchiveError("A worker process sent an unreadable record.")
                return

    def _ended(self, child: _Child) -> None:
        """The child closed its pipe (it exits): reap it and tell a death from an end."""
        status = _reap(child)
        if self.failure is None and not (child.finished and status in (0, None)):
            how = "ended" if status is None else _how_it_ended(status)
            self.failure = WorkerDied(f"A worker process {how} before its work was done.")

    def _stop_all(self) -> None:
        """Kill every child not reaped yet, reap it and close every pipe."""
        for child in self.children.values():
            if not child.reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
        for child in self.children.values():
            if not child.reaped:
                _reap(child)
            os.close(child.out)
        self.children.clear()

    def _child(self, prctl: Callable[..., int], parent: int, tasks: int,
               out: int) -> NoReturn:  # fmt: skip
        code = 1
        try:
            if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
                os._exit(1)  # could not tie our life to the parent's, or it is already gone
            _quiet_signals()
            _close_all_but(self.keep | {0, 1, 2, tasks, out})
            gc.freeze()
            if self.start is not None:
                self.start()
            while raw := os.read(tasks, _TASK.size):
                (index,) = _TASK.unpack(raw)
                result = self.work(index)
                _write_all(out, _RESULT.pack(b"R", index, result))
            _write_all(out, _DONE)
            code = 0
        except BaseException as exc:  # every failure goes to the parent
            with contextlib.suppress(BaseException):
                payload = _pickled(exc)
                _write_all(out, _ERROR.pack(b"E", len(payload)) + payload)
        finally:
            os._exit(code)


def _quiet_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _close_all_but(keep: frozenset[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pickled(exc: BaseException) -> bytes:
    try:
        return pickle.dumps(exc)
    except Exception:  # one that cannot travel travels as text
        return pickle.dumps(RunArchiveError(f"{type(exc).__name__}: {exc}"))


def _unpickled(payload: bytes) -> BaseException:
    try:
        exc = pickle.loads(payload)  # written by our own child
    except Exception as error:
        return RunArchiveError(f"A worker process failed and its error was unreadable: {error}")
    return exc if isinstance(exc, BaseException) else RunArchiveError(repr(exc))


def _reap(child: _Child) -> int | None:
    """Wait for ``child``; return its wait status (None if a SIGCHLD handler of the caller's
    reaped it first)."""
    child.reaped = True
    try:
        return os.waitpid(child.pid, 0)[1]
    except ChildProcessError:
        return None


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(sig).name}"
        return f"was killed by signal {sig}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
