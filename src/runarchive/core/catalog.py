"""The run's archive catalogue: list (fast, cached) and delete.

Listing reads only each archive's end records and central directory, never entry data, and
caches the result per archive by (name, mtime, size): a run with hundreds of archives lists
in milliseconds after the first call.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import Busy, InvalidArchive, NotFound
from .fsutil import fsync_dir
from .journal import needs_recovery, recover_locked, recover_run
from .manifest import MANIFEST_NAME
from .names import (
    archive_created,
    archive_path,
    archive_sort_key,
    archives_dir,
    is_archive_name,
    require_run,
)
from .runlock import run_lock
from .zipformat import read_directory


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    """One archive as ``list`` shows it."""

    name: str
    comment: str
    size: int
    created: datetime
    files: int
    entries: int
    readable: bool
    error: str | None = None


_cache: dict[tuple[str, int, int], ArchiveInfo] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 20_000


def describe_archive(path: Path) -> ArchiveInfo:
    """Read an archive's central directory (cached by path, mtime and size)."""
    return _describe(str(path), os.stat(path, follow_symlinks=False))


def _describe(path: str, st: os.stat_result) -> ArchiveInfo:
    key = (path, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    info = _read_info(Path(path), st)
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key] = info
    return info


def _read_info(path: Path, st: os.stat_result) -> ArchiveInfo:
    created = archive_created(path.name)
    if not stat.S_ISREG(st.st_mode):
        return ArchiveInfo(path.name, "", st.st_size, created, 0, 0, False, "not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            directory = read_directory(fd, st.st_size)
        finally:
            os.close(fd)
    except (InvalidArchive, OSError) as exc:
        return ArchiveInfo(path.name, "", st.st_size, created, 0, 0, False, str(exc))
    content = [e for e in directory.entries if e.name != MANIFEST_NAME]
    files = sum(1 for e in content if e.kind == "file")
    comment = directory.comment.decode("utf-8", errors="replace")
    return ArchiveInfo(path.name, comment, st.st_size, created, files, len(content), True)


def list_archives(run_dir: Path) -> list[ArchiveInfo]:
    """Return the run's archives, newest first."""
    run = require_run(run_dir)
    if needs_recovery(run):
        with contextlib.suppress(Busy):
            recover_run(run)
    folder = str(archives_dir(run))
    # One scandir and one lstat per archive, plain strings: the list is polled, and with
    # hundreds of archives pathlib and a listdir-then-stat pass were most of its cost.
    found: list[tuple[tuple[str, int], str, os.stat_result]] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not is_archive_name(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while listing
                found.append((archive_sort_key(entry.name), entry.path, st))
    except FileNotFoundError:
        return []
    found.sort(key=lambda item: item[0], reverse=True)
    return [_describe(path, st) for _, path, st in found]


def delete_archive(run_dir: Path, name: str) -> None:
    """Delete one archive of the run by its validated name."""
    run = require_run(run_dir)
    path = archive_path(run, name)
    with run_lock(run):
        recover_locked(run)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            raise NotFound(f"Archive not found: {name}.") from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"{name} is not an archive file.")
        path.unlink()
        fsync_dir(path.parent)
