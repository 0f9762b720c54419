"""One forked worker process's life, shared by both pools: start, failure transport, death, reaping.

Two pools hand work to forked children, each in its own way of dispatching:

* ``forkpool`` (create's small files): a fixed task list, child ``i`` of ``n`` builds tasks
  ``i``, ``i + n``, … and the parent reads results back in task order;
* ``workers`` (restore's extraction): children pull task indices from one pipe and send
  results in completion order.

What a child is, how its failure travels and how its end is told and cleaned up are the same
for both, so they live here once.

Why by hand, not ``multiprocessing`` or ``concurrent.futures.ProcessPoolExecutor``: those
pickle every task and result through queues fed by helper threads in the parent (threads
that contend for its interpreter lock, with no bound on results waiting), close no
descriptor a child inherits (the run's lock among them: the children of a killed restore
would hold it for milliseconds after, and a caller's sockets too), and leave children alive
after a parent killed with ``kill -9``. The rules kept here:

* A child is ``fork``-ed after the caller opened what it reads, so it uses those very
  descriptors (checks made by handle hold) and sees its tasks without their being sent.
* It dies with its parent (``PR_SET_PDEATHSIG``, checked against a parent already gone before
  it was set), has every Python-level signal handler of the caller reset (they would run the
  caller's code in the child), no signal wake-up descriptor, and ignores SIGINT (the parent
  reports an interrupt and stops it).
* It keeps only the descriptors it is given and stdin, stdout, stderr: never the run's lock,
  a buffered archive file of the parent's or a socket.
* Its cyclic garbage collector is frozen over the inherited heap (``gc.freeze``): a collection
  would touch, and so copy, every inherited page and could finalize the caller's objects.
* It never returns into the caller's frames: it leaves through ``os._exit`` (no ``finally`` of
  the caller, no ``atexit`` hook, no flush of the parent's buffers), status 0 only when its
  body returned.
* A failure travels pickled, so the parent raises it with its type and words (an ``OSError``
  with its errno and file name); one that cannot be pickled travels as a ``RunArchiveError``
  with its text. A child that ends before its work is done is a ``WorkerDied``, which says how.
* The parent kills (SIGKILL: our own unreaped child, its pid cannot be reused) and reaps every
  child on any way out: no process, zombie or descriptor is left behind.

Fork copies only the calling thread: anything another thread of the parent held (a logging
lock, a socket) is never touched in a child. libc's ``prctl`` (through ctypes) and OpenSSL's
sha256 are loaded by ``prepare`` in the parent, so a child never loads a library. Linux only
(``prctl``): ``forking_works`` tells; elsewhere the pools' callers use threads or run here.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterable

from .errors import RunArchiveError, WorkerFailed
from .fsutil import _libc

_PR_SET_PDEATHSIG = 1


class WorkerDied(WorkerFailed):
    """A worker process ended before its work was done (killed, out of memory, exited).

    A ``WorkerFailed`` (code ``worker_failed``): one code for the CLI and the API whichever
    pool lost its child.
    """


def forking_works() -> bool:
    """Tell whether work can go to forked children here (Linux, with ``prctl``)."""
    return sys.platform == "linux" and hasattr(_libc(), "prctl")


def prepare() -> Callable[..., int]:
    """Load in the parent what a child would otherwise load; return libc's ``prctl``.

    ``prctl`` is typed with its five arguments once for every pool: ctypes keeps one function
    object per process, so two typings would clash.
    """
    prctl = _libc().prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    hashlib.sha256(b"")  # OpenSSL's sha256 fetched once, before any fork
    return prctl


def spawn(body: Callable[[], None], keep: Iterable[int], prctl: Callable[..., int]) -> int:
    """Fork a child that runs ``body`` keeping only ``keep`` open; return its pid.

    In the child this never returns: it exits with 0 if ``body`` returned, 1 otherwise (a body
    sends its own failures to the parent first; see ``encode_error``).
    """
    parent = os.getpid()
    keep = frozenset(keep) | {0, 1, 2}
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0 and os.getppid() == parent:
            _quiet_signals()
            _close_all_but(keep)
            gc.freeze()
            body()
            code = 0
    finally:
        os._exit(code)


def encode_error(exc: BaseException) -> bytes:
    """``exc`` as bytes for the parent (``decode_error``); one that cannot travel, as text."""
    try:
        return pickle.dumps(exc)
    except Exception:
        return pickle.dumps(RunArchiveError(f"{type(exc).__name__}: {exc}"))


def decode_error(payload: bytes) -> BaseException:
    """The exception a child sent with ``encode_error``."""
    try:
        exc = pickle.loads(payload)  # written by our own child, through our own pipe
    except Exception as error:
        return RunArchiveError(f"A worker process failed and its error was unreadable: {error}")
    return exc if isinstance(exc, BaseException) else RunArchiveError(repr(exc))


def reap(pid: int) -> int | None:
    """Wait for child ``pid``; its wait status (None if a SIGCHLD handler reaped it first)."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def kill_and_reap(pids: Iterable[int]) -> None:
    """SIGKILL every child in ``pids`` (ours and unreaped, so the pids are still theirs), then
    reap them all."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        reap(pid)


def died(pid: int, status: int | None) -> WorkerDied:
    """The error for child ``pid`` that ended (wait ``status``) before its work was done."""
    return WorkerDied(
        f"A worker process ({pid}) {_how_it_ended(status)} before its work was done; nothing "
        "was kept. Retry; if it happens again, check the system log (memory?)."
    )


def _how_it_ended(status: int | None) -> str:
    if status is None:
        return "ended"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(sig).name}"
        return f"was killed by signal {sig}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _quiet_signals() -> None:
    # After a fork the calling thread is the child's main thread, so these calls are allowed;
    # a signal Python cannot handle is left as it is.
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


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
