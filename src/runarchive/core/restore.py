"""Restoring an archive: check everything, stage, verify, swap atomically, clean up.

Order of work (see ``journal`` for the crash semantics of each step):

1. Under the run lock, finish any earlier interrupted restore.
2. ``plan_restore`` checks names, links, limits, overlaps and the manifest; a refusal here
   leaves the run and the disk untouched.
3. Extract into ``.runarchive/stage-<id>/`` on the run's filesystem, checking CRC, size and
   sha256 of every file as it streams (in parallel threads); syncfs the stage.
4. Journal ``swapping``; rename old top-level entries out and staged ones in; fsync.
5. Journal ``swapped``; delete the old tree. Deleting last keeps it off the extract path,
   where on some filesystems freshly freed inodes make file creation much slower.

Modes are applied without setuid, setgid or sticky bits; mtimes are restored to the
nanosecond from the manifest (folders last, deepest first, so children don't disturb them).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import stat
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DamagedArchive, NoSpace, NotFound, RunArchiveError
from .fsutil import (
    is_no_space,
    remove_tree,
    require_space,
    spread_subfolders,
    start_writeback,
    sync_filesystem,
)
from .journal import (
    STAGING,
    SWAPPING,
    clear_journal,
    finish,
    recover_locked,
    roll_forward,
    scratch_dir,
    stage_dir,
    top_level_names,
    write_journal,
)
from .limits import Limits
from .manifest import DIR, FILE, SYMLINK
from .names import archive_path, require_run
from .progress import Phase, ProgressCallback, ProgressEvent, ignore_progress
from .reader import ArchiveReader
from .runlock import run_lock
from .safety import PlanItem, RestorePlan, plan_restore

BATCH_BYTES = 1 << 20
BATCH_FILES = 32
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a finished restore put in place."""

    name: str
    files: int
    entries: int
    bytes_total: int
    had_manifest: bool
    warnings: list[str] = field(default_factory=list)
    reused: int = 0


def restore_archive(
    run_dir: Path,
    name: str,
    *,
    progress: ProgressCallback | None = None,
    limits: Limits | None = None,
    allow_external_links: bool = False,
    threads: int = 4,
    defer_delete: bool = False,
) -> RestoreResult:
    """Replace the run's content (all but ``archives/``) with archive ``name``.

    ``threads`` extract in parallel (file creation, not CPU, is the usual bottleneck).
    With ``defer_delete`` the replaced tree is parked in ``.runarchive/trash-<id>`` and the
    caller runs ``purge_trash`` after reporting success.
    """
    report = progress or ignore_progress
    run = require_run(run_dir)
    path = archive_path(run, name)
    if not path.is_file():
        raise NotFound(f"Archive not found: {name}. See `runarchive list` for the names.")
    lim = limits or Limits.from_env()
    with run_lock(run), ArchiveReader(path, lim) as reader:
        recover_locked(run)
        plan = plan_restore(reader, lim, allow_external_links)
        require_space(run, plan.total_bytes + (16 << 20), "restore the archive")
        jid = secrets.token_hex(6)
        state: dict[str, object] = {"id": jid, "archive": name, "state": STAGING}
        write_journal(run, state)
        stage = stage_dir(run, jid)
        try:
            extractor = _Extractor(reader, plan, run, stage, scratch_dir(run, jid), report)
            extractor.build(threads)
            sync_filesystem(stage)
        except BaseException as exc:
            remove_tree(stage)
            remove_tree(scratch_dir(run, jid))
            clear_journal(run)
            if isinstance(exc, OSError) and is_no_space(exc):
                raise NoSpace(
                    f"Ran out of disk space while restoring ({exc.strerror}); the run is "
                    "unchanged. Free some space and retry."
                ) from exc
            raise
        state.update(
            state=SWAPPING, old=top_level_names(run), new=sorted(os.listdir(stage)),
            modes=extractor.deferred_modes,
        )  # fmt: skip
        write_journal(run, state)
        total, size = len(plan.items), plan.total_bytes
        report(ProgressEvent("restore", Phase.SWAP, total, total, size, size))
        try:
            roll_forward(run, state)
        except OSError as exc:
            raise RunArchiveError(
                f"Restore of {name} stopped during the swap ({exc}). The journal holds the "
                f"rest: fix the cause, then run `runarchive recover {run}` to finish it."
            ) from exc
        report(ProgressEvent("restore", Phase.CLEANUP, total, total, size, size))
        finish(run, state, defer_delete=defer_delete)
    report(ProgressEvent("restore", Phase.DONE, total, total, size, size))
    return RestoreResult(
        name, plan.files, total, size, plan.had_manifest, plan.warnings, extractor.reused
    )


class _Extractor:
    """Builds the stage: folders, then files (in parallel), then links, then folder times.

    Files are created in per-thread scratch folders and renamed into the stage: inode
    creation is slow on some filesystems and serializes per directory, so spreading it over
    folders lets threads overlap. A file the run already holds with the same size, mode,
    mtime and sha256 is hard-linked instead of extracted: its bytes are proven equal to the
    archive's, and a link costs a fraction of a create.
    """

    def __init__(self, reader: ArchiveReader, plan: RestorePlan, run: Path, stage: Path,
                 scratch: Path, report: ProgressCallback) -> None:  # fmt: skip
        self.reader, self.plan, self.run, self.stage = reader, plan, run, stage
        self.scratch, self.report = scratch, report
        self.stage_path, self.run_path = str(stage), str(run)
        self.names = itertools.count()
        self.local = threading.local()
        self.safe_parents: dict[str, bool] = {}
        self.reused = 0
        self.deferred_modes: dict[str, int] = {}

    def build(self, threads: int) -> None:
        plan, stage = self.plan, self.stage
        stage.mkdir(mode=0o700)
        self.scratch.mkdir(mode=0o700)
        spread_subfolders(self.scratch)  # per-thread folders in fresh block groups
        dirs = [i for i in plan.items if i.type == DIR]
        files = [i for i in plan.items if i.type == FILE]
        links = [i for i in plan.items if i.type == SYMLINK]
        made: set[str] = set()
        for item in [*dirs, *files, *links]:
            parent = item.path.rpartition("/")[0] if item.type != DIR else item.path
            if parent and parent not in made:
                os.makedirs(stage / parent, mode=0o700, exist_ok=True)
                made.add(parent)
        for item in files:
            self._parent_is_safe(item.path.rpartition("/")[0])
        self._files(files, threads)
        for item in links:
            assert item.target is not None  # read and checked by plan_restore
            os.symlink(item.target, stage / item.path)
            os.utime(stage / item.path, ns=(item.mtime_ns, item.mtime_ns), follow_symlinks=False)
        for item in sorted(dirs, key=lambda i: i.path.count("/"), reverse=True):
            mode = item.mode
            if "/" not in item.path and not mode & stat.S_IWUSR:
                # Moving a folder into the run needs its write bit; the swap sets the rest.
                self.deferred_modes[item.path] = mode
                mode |= stat.S_IWUSR
            os.chmod(stage / item.path, mode)
            os.utime(stage / item.path, ns=(item.mtime_ns, item.mtime_ns))
        for parent in made - {i.path for i in dirs}:
            os.chmod(stage / parent, 0o755)
        remove_tree(self.scratch)

    def _files(self, files: list[PlanItem], threads: int) -> None:
        """Place every file with ``threads`` threads, small files travelling in batches.

        One task per file cost a future and a queue hand-off each, under the GIL the
        extracting threads need too; a batch of up to ``BATCH_BYTES`` or ``BATCH_FILES``
        pays them once. Progress is still reported file by file, as batches complete.
        """
        done_files = done_bytes = 0
        total_bytes = self.plan.total_bytes
        with ThreadPoolExecutor(threads, thread_name_prefix="runarchive-extract") as pool:
            futures = {pool.submit(self._place_all, batch): batch for batch in _batches(files)}
            try:
                for fut in as_completed(futures):
                    self.reused += fut.result()
                    batch = futures[fut]
                    for item in batch:  # one event per file, as every listener expects
                        done_files += 1
                        done_bytes += item.entry.usize
                        self.report(ProgressEvent("restore", Phase.EXTRACT, done_files,
                                                  len(files), done_bytes, total_bytes,
                                                  item.path))  # fmt: skip
            finally:
                for fut in futures:
                    fut.cancel()

    def _place_all(self, batch: list[PlanItem]) -> int:
        return sum(self._place(item) for item in batch)

    def _parent_is_safe(self, parent: str) -> bool:
        """Tell whether the run's folder ``parent`` is a real folder inside the run."""
        known = self.safe_parents.get(parent)
        if known is None:
            real = os.path.realpath(self.run / parent) if parent else str(self.run)
            expected = str(self.run / parent) if parent else str(self.run)
            known = real == expected and os.path.isdir(real)
            self.safe_parents[parent] = known
        return known

    def _reusable(self, item: PlanItem) -> bool:
        if item.sha256 is None or not self.safe_parents.get(item.path.rpartition("/")[0]):
            return False
        try:
            fd = os.open(f"{self.run_path}/{item.path}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) and st.st_size == item.entry.usize
                    and stat.S_IMODE(st.st_mode) == item.mode
                    and st.st_mtime_ns == item.mtime_ns):  # fmt: skip
                return False
            sha = hashlib.sha256()
            while block := os.read(fd, 1 << 20):
                sha.update(block)
            return sha.hexdigest() == item.sha256
        finally:
            os.close(fd)

    def _place(self, item: PlanItem) -> int:
        """Put one file into the stage; return 1 if it was reused from the run."""
        # Plain strings: pathlib's joins cost more GIL time than the syscalls they feed.
        dest = f"{self.stage_path}/{item.path}"
        if self._reusable(item):
            try:
                os.link(f"{self.run_path}/{item.path}", dest, follow_symlinks=False)
                return 1
            except OSError:
                pass  # another filesystem (EXDEV) or link limit: extract instead
        folder: str | None = getattr(self.local, "folder", None)
        if folder is None:
            folder = f"{self.scratch}/{next(self.names)}"
            os.mkdir(folder)
            self.local.folder = folder
        tmp = f"{folder}/{next(self.names)}"
        _write_file(self.reader, item, tmp)
        os.rename(tmp, dest)
        return 0


def _write_file(reader: ArchiveReader, item: PlanItem, dest: str) -> None:
    fd = os.open(dest, _O_NEW, 0o600)
    try:
        sha = hashlib.sha256()
        for piece in reader.stream(item.entry):
            sha.update(piece)
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
        if item.sha256 is not None and sha.hexdigest() != item.sha256:
            raise DamagedArchive(f"sha256 mismatch in {item.path!r}: the archive is damaged.")
        os.fchmod(fd, item.mode)
        os.utime(fd, ns=(item.mtime_ns, item.mtime_ns))
        start_writeback(fd)
    finally:
        os.close(fd)


def _batches(files: list[PlanItem]) -> list[list[PlanItem]]:
    """Group files in archive order; a batch closes at BATCH_BYTES or BATCH_FILES."""
    batches: list[list[PlanItem]] = []
    batch: list[PlanItem] = []
    size = 0
    for item in files:
        batch.append(item)
        size += item.entry.usize
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)
    return batches
