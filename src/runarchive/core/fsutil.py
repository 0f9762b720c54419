"""Durable file-system primitives: fsync of files and folders, atomic writes, free space."""

from __future__ import annotations

import array
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import stat
import sys
from pathlib import Path

from .errors import NoSpace

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` (renames, creations) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path``.

    One syncfs is far cheaper than an fsync per file when thousands were just written.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if getattr(_libc, "syncfs", None) is None or _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting.

    The later syncfs then finds most data already on its way to disk.
    """
    fn = getattr(_libc, "sync_file_range", None)
    if fn is not None:
        fn(fd, ctypes.c_int64(0), ctypes.c_int64(0), _SYNC_FILE_RANGE_WRITE)


_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def spread_subfolders(path: Path) -> bool:
    """Ask the filesystem to place ``path``'s subfolders away from it; True if it took the hint.

    ext4 without a journal will not reuse an inode freed in the last minute and reads
    inode-table blocks to find one that is not, so creating thousands of files right after
    thousands were deleted nearby (a run emptied, then restored) spends a third of its CPU
    there. The "top of a hierarchy" flag (``chattr +T``) makes ext4's allocator put the
    subfolders — and so the files created in them — in other block groups. Best effort:
    other filesystems refuse the flag and nothing changes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        flags[0] |= _FS_TOPDIR_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def free_bytes(path: Path) -> int:
    """Return the bytes available to this user on the filesystem holding ``path``."""
    return shutil.disk_usage(path).free


def require_space(path: Path, needed: int, what: str) -> None:
    """Raise NoSpace when the filesystem of ``path`` clearly cannot hold ``needed`` bytes."""
    free = free_bytes(path)
    if free < needed:
        raise NoSpace(
            f"Not enough disk space to {what}: about {human_bytes(needed)} needed, "
            f"{human_bytes(free)} free on {path}. Free some space and retry."
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


def remove_tree(path: Path) -> None:
    """Delete a folder tree, making read-only folders writable on the way.

    Only folders are ever chmod-ed: a file may share its inode (hard link) with a restored
    file, and unlinking needs write permission on the folder alone.
    """
    if not path.exists() and not path.is_symlink():
        return

    def retry(func: object, p: str, exc_info: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
        try:
            is_dir = stat.S_ISDIR(os.lstat(p).st_mode)
        except FileNotFoundError:
            return
        if is_dir:
            with contextlib.suppress(OSError):
                os.chmod(p, 0o700)
            remove_tree(Path(p))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)
