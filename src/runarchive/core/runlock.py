"""One mutating operation per run per host: an exclusive fcntl lock on ``.runarchive/lock``.

The OS drops the lock when the holder dies (even by SIGKILL), so a crash never leaves a run
stuck; the next operation then finds the journal and recovers.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import Busy
from .names import WORK_DIR


def work_dir(run_dir: Path) -> Path:
    """Return (creating it) the run's private working folder."""
    path = run_dir / WORK_DIR
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's exclusive lock, or raise Busy at once if another process has it."""
    fd = os.open(work_dir(run_dir) / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                f"Run {run_dir.name} is busy: another archive, restore, delete or recover is "
                "running. Wait for it to finish and retry."
            ) from None
        yield
    finally:
        os.close(fd)
