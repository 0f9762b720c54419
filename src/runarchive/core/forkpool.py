"""Forked worker processes: a fixed list of tasks built in parallel, results read in order.

``create`` uses it for a run's small files. Per small file the work is ~5 system calls, a
sha256 and a deflate of a few KiB and the headers around them, and most of it holds the
interpreter lock, so threads do not run it in parallel (two threads: 1.94 s against one's
2.27 s on 30,000 files); processes do, each under its own lock.

Why by hand rather than ``multiprocessing`` or ``ProcessPoolExecutor``: those pickle every
task and every result through queues fed by helper threads, with no bound on results
waiting to be taken (memory) and children that outlive a parent killed with ``kill -9``
while still holding its descriptors (the run's lock among them). What this needs is smaller
and stricter:

* the children are ``fork``-ed once, after the caller opened what they read (the run and the
  files cache): they use those very descriptors, so the checks made by handle hold, and they
  see the task list without it being sent;
* child ``i`` of ``n`` builds tasks ``i``, ``i + n``, … in order and writes each result to
  its own pipe, so the parent reads task ``k`` from child ``k % n`` and gets results in task
  order with no reordering buffer; a full pipe blocks the child (memory stays bounded: a
  pipe's buffer and one task per child, whatever the number of tasks);
* every message is framed (kind, length) and each child ends with a "done" message: a child
  that dies (killed, crashed) shows as end-of-file before it, and the parent raises
  ``WorkerFailed``; an exception in a child is sent as a message and raised by the parent
  when it reaches that task (an ``OSError`` as the same ``OSError``);
* a child dies with its parent (``PR_SET_PDEATHSIG``, checked against a parent that died
  before the call), keeps only the descriptors it needs (the parent's buffered archive file,
  its lock and its sockets are closed in the child), ignores SIGINT (the parent reports an
  interrupt), and always leaves through ``os._exit`` (never the parent's cleanup, never a
  flush of the parent's buffers);
* the parent kills (SIGKILL: our own unreaped child, its pid cannot be reused) and reaps every
  child on any way out, so nothing is left behind: no process, no zombie, no descriptor.

Children run only our code, isal, hashlib and system calls. Fork copies just the calling
thread: anything another thread of the parent held (a logging lock, a socket) is never
touched in a child; the C library, ctypes' function and OpenSSL's sha256 are loaded in the
parent before the fork (``prepare_fork``) so a child never loads anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import hashlib
import os
import signal
import struct
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Generic, TypeVar

from .errors import WorkerFailed
from .fsutil import _libc

T = TypeVar("T")

# A result, the error of a task, or the end of a child's tasks; then the payload's length.
_HEAD = struct.Struct("<BQ")
_RESULT, _ERROR, _DONE = 0, 1, 2
_PR_SET_PDEATHSIG = 1
# A pipe this big holds ~a dozen results of small files: a child may run that far ahead of
# the parent before it blocks (Linux's default for unprivileged users is its ceiling).
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

Buffer = bytes | bytearray | memoryview


def load_prctl() -> Callable[..., int]:
    """Return libc's ``prctl`` with its five arguments typed (shared: ctypes keeps one object)."""
    fn = _libc().prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


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
        prctl = load_prctl()  # loaded here: a child must not load a library (see the module)
        hashlib.sha256(b"")  # OpenSSL's sha256 fetched once, before the fork
        parent = os.getpid()
        try:
            for index in range(self.processes):
                read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
                self.pipes.append(read_fd)
                try:
                    with contextlib.suppress(OSError):
                        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, PIPE_BYTES)
                    pid = os.fork()
                    if pid == 0:  # the child: never returns
                        code = 1
                        try:
                            self._child(index, write_fd, parent, prctl)
                            code = 0
                        finally:
                            os._exit(code)
                finally:
                    if os.getpid() == parent:
                        os.close(write_fd)
                self.pids.append(pid)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the child ---------------------------------------------------------------------

    def _child(self, index: int, out: int, parent: int, prctl: Callable[..., int]) -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call above
            return
        with contextlib.suppress(ValueError):  # only the main thread may (the forking one is)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        gc.disable()  # a collection would touch, and so copy, every page of the parent's heap
        _close_all_but(self.keep | {0, 1, 2, out})
        tasks, work, step = self.tasks, self.work, self.processes
        try:
            for task_index in range(index, len(tasks), step):
                try:
                    parts = work(tasks[task_index])
                except Exception as exc:  # sent to the parent, raised there in task order
                    _send(out, _ERROR, [_encode_error(exc)])
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
            raise _decode_error(payload, self.pids[child])
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
        how = "ended"
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(pid, 0)
            self.pids[child] = -1  # reaped
            if os.WIFSIGNALED(status):
                how = f"was killed by signal {os.WTERMSIG(status)}"
            elif os.WIFEXITED(status):
                how = f"exited with status {os.WEXITSTATUS(status)}"
        return WorkerFailed(
            f"An archive worker process ({pid}) {how} before its work was done; "
            "nothing was kept. Retry; if it happens again, check the system log (memory?)."
        )

    def close(self) -> None:
        """Kill (unless they finished) and reap every child; close the pipes (safe to repeat)."""
        for fd in self.pipes:
            os.close(fd)
        self.pipes = []
        for pid in self.pids:
            if pid < 0:
                continue
            if not self.finished:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # ours and unreaped: the pid is still its
            with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored: reaped already
                os.waitpid(pid, 0)
        self.pids = []


def _close_all_but(keep: frozenset[int]) -> None:
    """Close every descriptor of this process but ``keep``.

    By the list of open ones (``/proc/self/fd``), not ``os.closerange`` up to the limit: the
    limit may be a million, and a kernel without ``close_range`` makes that a million calls.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed already
                os.close(fd)


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


def _encode_error(exc: Exception) -> bytes:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = os.fsdecode(exc.filename or "")
        text = "\0".join(("os", str(exc.errno), exc.strerror or "", name))
    else:
        text = "\0".join(("other", type(exc).__name__, str(exc)))
    return text.encode("utf-8", "surrogateescape")


def _decode_error(payload: memoryview, pid: int) -> Exception:
    fields = bytes(payload).decode("utf-8", "surrogateescape").split("\0")
    if fields[0] == "os":
        return OSError(int(fields[1]), fields[2], fields[3] or None)
    message = "\0".join(fields[2:])  # the message may hold the separator
    return WorkerFailed(f"An archive worker process ({pid}) failed: {fields[1]}: {message}")
