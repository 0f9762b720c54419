"""One mutating operation per run per host: an exclusive fcntl lock on ``.runarchive/lock``.

The OS drops the lock when the holder dies (even by SIGKILL), so a crash never leaves a run
stuck; the next operation then finds the journal and recovers. The lock file is opened by
handle beneath the run's real ``archives/.runarchive/`` folder with ``O_NOFOLLOW``: a planted link
cannot make us create or lock a file elsewhere, and a planted non-file is refused.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Busy, UnsafeRun
from .rundir import Folder, RunDir

LOCK_NAME = "lock"


@contextmanager
def run_lock(run: RunDir) -> Iterator[Folder]:
    """Hold the run's exclusive lock, or raise Busy at once; yield the ``.runarchive`` folder."""
    work = run.ensure_work()
    try:
        try:
            fd = work.open_file(LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UnsafeRun(
                f"{work.label}/{LOCK_NAME} cannot be opened ({exc.strerror}): it is not the "
                "lock file runarchive made. Remove it and retry."
            ) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeRun(f"{work.label}/{LOCK_NAME} is not a regular file. Remove it.")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(
                    f"Run {run.runid} is busy: another archive, restore, delete or recover is "
                    "running. Wait for it to finish and retry."
                ) from None
            yield work
        finally:
            os.close(fd)
    finally:
        work.close()
