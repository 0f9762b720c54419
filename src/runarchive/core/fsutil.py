"""Durable file-system primitives: fsync of files and folders, atomic writes, free space."""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
from functools import cache
from typing import TYPE_CHECKING

from .errors import NoSpace

if TYPE_CHECKING:
    import ctypes


@cache
def _libc() -> ctypes.CDLL:
    """Return the C library, loaded on first use.

    Loaded lazily because most commands (``list``, ``verify``, ``--help``) never sync, and
    by the process's own symbols (``CDLL(None)``, where CPython's libc already is) rather
    than ``ctypes.util.find_library``, whose import pulls in ``subprocess`` and ``shutil``.
    """
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def sync_filesystem(dir_fd: int) -> None:
    """Flush every dirty page of the filesystem holding the open folder ``dir_fd``.

    One syncfs is far cheaper than an fsync per file when thousands were just written, and
    than starting each file's writeback as it is written (``sync_file_range``, measured on
    the 30,000-file restore: the extracting processes then paid for submitting 30,000 small
    writes; one syncfs lets the kernel submit them merged).
    """
    libc = _libc()
    if getattr(libc, "syncfs", None) is None or libc.syncfs(dir_fd) != 0:
        os.sync()


_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def spread_subfolders(dir_fd: int, spread: bool = True) -> bool:
    """Ask the filesystem to place the folder's subfolders away from it; True if it took.

    ext4 without a journal will not reuse an inode freed in the last minute and reads
    inode-table blocks to find one that is not, so creating thousands of files right after
    thousands were deleted nearby (a run emptied, then restored) spends a third of its CPU
    there. The "top of a hierarchy" flag (``chattr +T``) makes ext4's allocator put the
    subfolders — and so the files created in them — in other block groups. Best effort:
    other filesystems refuse the flag and nothing changes. ``spread=False`` clears it.
    """
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(dir_fd, _FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | _FS_TOPDIR_FL if spread else flags[0] & ~_FS_TOPDIR_FL
        fcntl.ioctl(dir_fd, _FS_IOC_SETFLAGS, flags)
        return True
    except OSError:
        return False


def atomic_write_bytes(dir_fd: int, name: str, data: bytes) -> None:
    """Replace file ``name`` in the open folder ``dir_fd`` so a crash leaves old or new content.

    The temp file is created with ``O_EXCL|O_NOFOLLOW`` in the same folder: a planted file or
    link of that name makes the write fail instead of writing through it.
    """
    tmp = f".{name}.tmp-{os.getpid()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def require_space(dir_fd: int, needed: int, what: str, *, reserve: int = 0) -> None:
    """Raise NoSpace unless the disk of ``dir_fd`` holds ``needed`` bytes beyond ``reserve``."""
    st = os.fstatvfs(dir_fd)
    free = st.f_bavail * st.f_frsize
    if free - reserve < needed:
        kept = f" (keeping {human_bytes(reserve)} in reserve)" if reserve else ""
        raise NoSpace(
            f"Not enough disk space to {what}: about {human_bytes(needed)} needed{kept}, "
            f"{human_bytes(free)} free. Free some space and retry."
        )


def is_no_space(exc: OSError) -> bool:
    """Tell whether an OSError means the disk or a file-size limit is full."""
    return exc.errno in {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def human_bytes(n: int) -> str:
    """Format a byte count the way people read it (1.5 MiB)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
