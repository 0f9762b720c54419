"""The run's archive catalogue: list (fast, cached) and delete.

Delete refuses a pinned archive (``Pinned``: "Archive <name> is pinned"), checked under the
run lock so no pin can land between the check and the unlink; list rows say ``pinned``.

Listing reads only each archive's end records and central directory, never entry data, and
caches the result per archive by (name, inode, mtime, size): a run with hundreds of archives
lists in milliseconds after the first call. The cache is kept per run and bounded per run and
in total (least recently listed run evicted first), so one run with tens of thousands of
archives cannot flush the others'.

Every archive is opened through the run's handle (``rundir``): ``archives/`` must be a real
folder, each archive is opened with ``O_NOFOLLOW`` and described from the *opened* file, and
reading its central directory is bounded by the file's size and the entry limit, so a planted
file can make one row say ``readable: false`` but never make list fail or swell.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import Busy, InvalidArchive, NotFound, Pinned, UnsafeRun
from .journal import needs_recovery, recover_locked
from .limits import Limits
from .names import (
    MANIFEST_NAME,
    archive_created,
    archive_sort_key,
    is_archive_name,
    validate_archive_name,
)
from .pins import read_pins
from .rundir import Folder, RunDir, open_run
from .runlock import run_lock
from .zipformat import read_directory

if TYPE_CHECKING:
    import logging


def _log() -> logging.Logger:
    """Return this module's logger; ``logging`` is imported only to warn (start-up: ``list``
    and ``archive`` load nothing they do not use)."""
    import logging

    return logging.getLogger(__name__)


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
    links: int = 0  # symlink entries: tools other than ours may restore them badly
    pinned: bool = False  # from the run's pins (``pins``), never cached with the rest


# One cache per run (by the archives folder's device and inode), least recently listed run
# evicted first; each run's cache holds only its current archives, at most RUN_CACHE_MAX of
# them, so one run with tens of thousands of archives never evicts the others'.
_RunKey = tuple[int, int]
_EntryKey = tuple[str, int, int, int]
_cache: OrderedDict[_RunKey, dict[_EntryKey, ArchiveInfo]] = OrderedDict()
_cache_lock = threading.Lock()
RUN_CACHE_MAX = 20_000
CACHE_MAX = 100_000


def _run_cache(key: _RunKey) -> dict[_EntryKey, ArchiveInfo]:
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
        return dict(found or {})


def _keep(key: _RunKey, entries: dict[_EntryKey, ArchiveInfo]) -> None:
    with _cache_lock:
        _cache[key] = entries
        _cache.move_to_end(key)
        total = sum(len(v) for v in _cache.values())
        while total > CACHE_MAX and len(_cache) > 1:
            _, dropped = _cache.popitem(last=False)
            total -= len(dropped)


def _describe(archives: Folder, name: str, st: os.stat_result, limits: Limits) -> ArchiveInfo:
    """Read one archive's central directory from the file that was listed (same inode)."""
    created = archive_created(name, st.st_mtime)
    if not stat.S_ISREG(st.st_mode):
        return ArchiveInfo(name, "", st.st_size, created, 0, 0, False, "not a regular file")
    try:
        fd = archives.open_file(name)
    except OSError as exc:
        return ArchiveInfo(name, "", st.st_size, created, 0, 0, False, exc.strerror)
    try:
        opened = os.fstat(fd)
        if not os.path.samestat(opened, st):
            return ArchiveInfo(name, "", st.st_size, created, 0, 0, False, "changed while listed")
        directory = read_directory(fd, opened.st_size, limits.max_entries)
    except (InvalidArchive, OSError) as exc:
        return ArchiveInfo(name, "", st.st_size, created, 0, 0, False, str(exc))
    finally:
        os.close(fd)
    content = [e for e in directory.entries if e.name != MANIFEST_NAME]
    files = sum(1 for e in content if e.kind == "file")
    links = sum(1 for e in content if e.kind == "symlink")
    comment = directory.comment.decode("utf-8", errors="replace")
    return ArchiveInfo(name, comment, st.st_size, created, files, len(content), True, links=links)


def list_archives(run_dir: Path, limits: Limits | None = None) -> list[ArchiveInfo]:
    """Return the run's archives, newest first.

    A pending journal is recovered first when the run is free; a journal that fails
    validation is left for the mutating operations to report (list still answers).
    """
    lim = limits or Limits.from_env()
    with open_run(run_dir) as run:
        if needs_recovery(run):
            _try_recover(run)
        archives = run.archives()
        if archives is None:
            return []
        with archives:
            pins = _pins_or_none(run)
            found = scan_archives(archives)
            here = os.fstat(archives.fd)
            run_key = (here.st_dev, here.st_ino)
            known = _run_cache(run_key)
            kept: dict[_EntryKey, ArchiveInfo] = {}
            rows = []
            for name, st in found:
                key = (name, st.st_ino, st.st_mtime_ns, st.st_size)
                info = known.get(key) or _describe(archives, name, st, lim)
                if len(kept) < RUN_CACHE_MAX:
                    kept[key] = info
                rows.append(replace(info, pinned=True) if name in pins else info)
            _keep(run_key, kept)
            return rows


def scan_archives(archives: Folder) -> list[tuple[str, os.stat_result]]:
    """Return the listable archives of an open ``archives/`` folder with their lstat, newest
    first (by ``names.archive_sort_key``)."""
    found: list[tuple[tuple[str, int, str], str, os.stat_result]] = []
    for entry in archives.scandir():
        if not is_archive_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted while listing
        found.append((archive_sort_key(entry.name, st.st_mtime), entry.name, st))
    found.sort(key=lambda item: item[0], reverse=True)
    return [(name, st) for _, name, st in found]


def _pins_or_none(run: RunDir) -> frozenset[str]:
    """The run's pins for the list; a pins file that fails validation lists none (list still
    answers; delete and prune refuse with the reason)."""
    try:
        return read_pins(run)
    except UnsafeRun as exc:
        _log().warning("run %s: %s", run.runid, exc)
        return frozenset()


def _try_recover(run: RunDir) -> None:
    try:
        with run_lock(run) as work:
            recover_locked(run, work)
    except Busy:
        pass
    except UnsafeRun as exc:
        _log().warning("run %s: %s", run.runid, exc)


def delete_archive(run_dir: Path, name: str) -> int:
    """Delete one archive of the run by its validated name; return the bytes it held."""
    validate_archive_name(name)
    with open_run(run_dir) as run, run_lock(run) as work:
        run.require_writable()
        recover_locked(run, work)
        if name in read_pins(run):
            raise Pinned(name)
        from .reader import open_archive_fd  # here: a list reads central directories only

        fd, st = open_archive_fd(run, name)
        os.close(fd)
        archives = run.archives()
        if archives is None:
            raise NotFound(f"Archive not found: {name}.")
        with archives:
            # Unlink only the file that was checked: if the name now points elsewhere, stop.
            if not os.path.samestat(archives.lstat(name), st):
                raise NotFound(f"Archive {name} changed while being deleted; nothing was removed.")
            archives.unlink(name)
            archives.fsync()
    return int(st.st_size)
