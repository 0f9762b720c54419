"""Small state files of ours in a run's ``archives/.runarchive/`` (pins, the retention policy).

They live in the run, so whoever can write into the run can write them: each is read back as
strictly as an upload. A state file must be a regular file (opened by handle, no link in any
component), at most ``MAX_STATE_BYTES``, UTF-8 JSON in exactly the canonical form we write
(sorted keys, no spaces, one final newline; so no duplicate key, no NaN, no second spelling of
the same value). Anything else raises ``UnsafeRun`` naming the file, and nothing is changed.

Writes are atomic (``fsutil.atomic_write_bytes``: temp file, fsync, rename, fsync the folder)
and made under the run lock, so a crash leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from typing import Any

from .errors import UnsafeRun
from .fsutil import atomic_write_bytes
from .rundir import Folder

MAX_STATE_BYTES = 1 << 20


def encode_state(value: Any) -> bytes:
    """Return the one spelling of ``value`` a state file may hold."""
    return (
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    ).encode()


def _bad(work: Folder, name: str, why: str) -> UnsafeRun:
    return UnsafeRun(
        f"{work.label}/{name} is not a file runarchive wrote ({why}). Remove it (nothing was "
        "changed) and set it again."
    )


def read_small_file(
    work: Folder, name: str, limit: int, what: str, bad: Callable[[str], UnsafeRun]
) -> bytes | None:
    """Return the bytes of our file ``name`` in ``work`` (None when absent), or raise ``bad``.

    The one reading rule of every file we keep under a run (state files, the restore journal,
    the undo record): opened by handle with no link in any component, then checked and read on
    that same descriptor — a regular file of at most ``limit`` bytes (``what`` names it in the
    refusal: "larger than any <what> we write").
    """
    try:
        fd = work.open_file(name)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise bad(f"it cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise bad("it is not a regular file")
        if st.st_size > limit:
            raise bad(f"it is larger than any {what} we write")
        # One byte more than fstat said: a file that grew since is caught by the caller's parse.
        return os.pread(fd, min(st.st_size, limit) + 1, 0)
    finally:
        os.close(fd)


def load_json(data: bytes, bad: Callable[[str], UnsafeRun]) -> Any:
    """Return the JSON value of ``data`` (strict UTF-8), or raise ``bad("not JSON")``."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad("not JSON") from None


def read_state(work: Folder | None, name: str) -> Any | None:
    """Return the parsed content of state file ``name`` in ``work`` (None when absent)."""
    if work is None:
        return None

    def bad(why: str) -> UnsafeRun:
        return _bad(work, name, why)

    data = read_small_file(work, name, MAX_STATE_BYTES, "state file", bad)
    if data is None:
        return None
    value = load_json(data, bad)
    if encode_state(value) != data:
        raise bad("not in the form runarchive writes")
    return value


def write_state(work: Folder, name: str, value: Any) -> None:
    """Replace state file ``name`` atomically with ``value`` (caller holds the run lock)."""
    # A temp file of ours left by a killed writer of this pid (the lock proves it is dead).
    stale = f".{name}.tmp-{os.getpid()}"
    if work.is_file(stale):
        work.unlink(stale)
    atomic_write_bytes(work.fd, name, encode_state(value))


def remove_state(work: Folder, name: str) -> None:
    """Remove state file ``name`` (durably; absent is fine)."""
    with contextlib.suppress(FileNotFoundError):
        work.unlink(name)
    work.fsync()
