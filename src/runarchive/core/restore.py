"""Restoring an archive: check everything, stage, verify, swap atomically, clean up.

Order of work (see ``journal`` for the crash semantics of each step):

1. Under the run lock, finish any earlier interrupted restore.
2. ``plan_restore`` checks names, links, limits, overlaps and the manifest; a refusal here
   leaves the run and the disk untouched.
3. Extract into ``.runarchive/stage-<id>/`` on the run's filesystem, checking CRC, size and
   sha256 of every file as it streams (in parallel worker processes, ``workers``); syncfs
   the stage. Then call ``before_swap``, the caller's last chance to stop (a canceled job
   raises there): any error up to here removes the stage and leaves the run as it was.
4. Journal ``swapping``; rename old top-level entries out and staged ones in; fsync.
5. Journal ``swapped``; delete the old tree. Deleting last keeps it off the extract path,
   where on some filesystems freshly freed inodes make file creation much slower.

Modes are applied without setuid, setgid or sticky bits; mtimes are restored to the
nanosecond from the manifest (folders last, deepest first, so children don't disturb them).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from isal import isal_zlib

from .compare import Change, Diff, diff_against_run
from .errors import Busy, DamagedArchive, NoSpace, NothingToUndo, RunArchiveError
from .fsutil import (
    is_no_space,
    require_space,
    spread_subfolders,
    sync_filesystem,
)
from .inside import open_contents
from .journal import (
    STAGING,
    SWAPPING,
    UNDO,
    Journal,
    Layout,
    clear_journal,
    exists_beneath,
    finish,
    old_modes,
    parent_times,
    recover_locked,
    roll_forward,
    run_layout,
    top_level_names,
    write_journal,
)
from .limits import Limits
from .linkmode import LinkMode
from .manifest import DIR, FILE, SYMLINK
from .names import ArchiveRef
from .partial import RestorePaths, parse_restore_paths, select_paths
from .progress import Phase, ProgressCallback, ProgressEvent, ignore_progress
from .reader import READ_BLOCK, ArchiveReader, open_archive
from .rundir import Folder, RunDir, RunRef, open_beneath, open_run
from .runlock import run_lock
from .safety import PlanItem, RestorePlan, plan_restore
from .undo import current_undo, tree_nodb_files, undo_ttl
from .workers import run_tasks

BATCH_BYTES = 1 << 20
BATCH_FILES = 32
SPAN_BYTES = 2 << 20  # the most a batch's one read of its entries' data may take
# Fewer files and bytes than these are placed in the calling process (see ``_Extractor``).
FORK_MIN_FILES = 256
FORK_MIN_BYTES = 8 << 20
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_O_DIR = os.O_RDONLY | os.O_DIRECTORY
# A run file opened by its single name beneath its folder's handle: never a link, and a fifo
# planted there cannot block the open.
_O_PEEK = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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
    # The ``.nodb`` state files now in the run (the restored ones): what a post-restore hook
    # needs, known from the plan without walking the run again.
    nodb_files: list[str] = field(default_factory=list)
    # A partial restore's paths as asked (folders with their "/"); empty for the whole archive.
    paths: list[str] = field(default_factory=list)


def restore_archive(
    run_dir: Path | RunRef,
    name: str | ArchiveRef,
    *,
    progress: ProgressCallback | None = None,
    limits: Limits | None = None,
    allow_external_links: bool = False,
    threads: int = 4,
    defer_delete: bool = False,
    before_swap: Callable[[], None] | None = None,
    reader: ArchiveReader | None = None,
    paths: RestorePaths | list[str] | None = None,
) -> RestoreResult:
    """Replace the run's content (all but ``archives/``) with archive ``name``.

    Up to ``threads`` worker processes (one per CPU at most) extract in parallel.
    With ``defer_delete`` the replaced tree is parked in ``archives/.runarchive/trash-<id>`` and the
    caller runs ``purge_trash`` after reporting success. ``before_swap`` is called once the
    stage is complete and synced, before the journal says swapping: if it raises, the restore
    stops there and the run is as it was; once it returned, the restore finishes. ``reader``
    is archive ``name`` already open (the caller read its central directory to know what to
    lock): it is used, not reopened, and stays the caller's to close. ``paths`` restores only
    those files and folders (``partial``); everything else in the run stays as it is.
    The replaced tree is kept for ``undo_restore`` (``undo``).
    """
    report = progress or ignore_progress
    lim = limits or Limits.from_env()
    chosen = parse_restore_paths(paths)  # refused before anything is opened
    undo_ttl()  # a bad RUNARCHIVE_UNDO_TTL is refused now, not after the swap
    with open_run(run_dir) as run, run_lock(run) as work:
        run.require_writable()
        recover_locked(run, work)
        opened = (
            contextlib.nullcontext(reader) if reader is not None else open_archive(run, name, lim)
        )
        with opened as reader:
            plan = plan_restore(reader, lim, allow_external_links)
            units: tuple[str, ...] | None = None
            if chosen is not None:
                selection = select_paths(plan, chosen, run, str(name))
                plan, units = selection.plan, selection.units
            needed = plan.total_bytes + (16 << 20)
            require_space(run.fd, needed, "restore the archive", reserve=lim.reserve_for(run.fd))
            extractor = _stage(run, work, reader, plan, report, threads, before_swap, units)
        journal, layout = extractor.journal, run_layout(run)
        # Regular files, as everywhere a count of files is shown (the list, the extract phase).
        total, size = plan.files, plan.total_bytes
        report(ProgressEvent("restore", Phase.SWAP, total, total, size, size))
        try:
            roll_forward(run, work, layout, journal)
        except OSError as exc:
            raise RunArchiveError(
                f"Restore of {name} stopped during the swap ({exc.strerror}). The journal holds "
                f"the rest: fix the cause, then run `runarchive recover` on run {run.runid}."
            ) from exc
        report(ProgressEvent("restore", Phase.CLEANUP, total, total, size, size))
        finish(work, layout, journal, defer_delete=defer_delete)
    report(ProgressEvent("restore", Phase.DONE, total, total, size, size))
    nodb = sorted(i.path for i in plan.items if i.type == FILE and i.path.endswith(".nodb"))
    asked = chosen.as_list() if chosen is not None else []
    return RestoreResult(str(name), plan.files, len(plan.items), size, plan.had_manifest,
                         plan.warnings, extractor.reused, nodb, asked)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Count:
    """Files (regular files and links) and their bytes, one line of a restore preview."""

    files: int = 0
    bytes: int = 0

    def as_json(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class RestorePreview:
    """What a restore of ``name`` (of ``paths`` only, when given) would do to the run.

    ``restores``: files the archive holds and the run lacks (bytes written); ``changes``:
    files on both sides that differ, or that are another kind on one side (bytes written);
    ``removes``: the run's files and links the archive lacks ("created since"; bytes freed);
    ``unchanged``: files and links proven the same. Folders are not counted.
    """

    name: str
    removes_files: int
    removes_bytes: int
    sample: list[str]  # up to ``sample`` of the paths removed
    restores: Count = Count()
    changes: Count = Count()
    unchanged: int = 0
    paths: list[str] | None = None  # a partial restore's paths as asked; None: the whole run

    @property
    def removes(self) -> Count:
        return Count(self.removes_files, self.removes_bytes)

    def as_json(self) -> dict[str, object]:
        """Return the preview as the API gives it."""
        return {
            "name": self.name,
            "paths": self.paths,
            "restores": self.restores.as_json(),
            "changes": self.changes.as_json(),
            "removes": self.removes.as_json(),
            "unchanged": self.unchanged,
            "sample": self.sample,
        }


def preview_restore(
    run_dir: Path | RunRef,
    name: str | ArchiveRef,
    *,
    paths: RestorePaths | list[str] | None = None,
    sample: int = 20,
    limits: Limits | None = None,
) -> RestorePreview:
    """Say what a restore of ``name`` (only ``paths``, if given) would restore, change and
    remove; nothing is changed and no lock is taken.

    The restore's own planning decides first, so a preview refuses what the restore would
    refuse, with its words: ``plan_restore`` (unsafe or damaged structure, limits) and, for
    ``paths``, ``select_paths`` (a path the archive lacks, a folder on the way that is not
    one). The counts are then the diff of the archive against the run (``compare``: one
    scan, the "unchanged" rule; links compared as links, since a restore writes them as
    the archive holds them), restricted to the chosen paths and what lies beneath them:
    exactly what the swap replaces.
    """
    chosen = parse_restore_paths(paths)
    lim = limits or Limits.from_env()
    with open_run(run_dir) as run, open_contents(run, str(name), lim) as contents:
        plan = _planned(contents.reader, lim)
        if chosen is not None:
            select_paths(plan, chosen, run, str(name))
        diff = diff_against_run(contents, run, links=LinkMode.STORE)
        leaves = [p for p, n in contents.nodes.items() if n.type in (FILE, SYMLINK)]
    if chosen is not None:
        leaves = [p for p in leaves if chosen.covers(p)]
    return _preview_of(diff, str(name), chosen, sample, leaves)


# The plans of archives previewed before (a dashboard asks again for each confirm), by the
# identity of the archive file and the limits: the plan is a pure function of the archive's
# bytes, a published archive never changes, and any write to the file (or a new file under
# its name) changes its ctime, which no user can set back (``inside``'s tree cache has the
# same key). A refusal is not kept. Only previews use it: a restore plans again, in its own
# process, under the run lock. Bounded in planned entries, least recently used first out.
_PlanKey = tuple[int, int, int, int, int, Limits]
_plans: OrderedDict[_PlanKey, RestorePlan] = OrderedDict()
_plans_lock = threading.Lock()
PLAN_CACHE_MAX_ITEMS = 250_000


def _planned(reader: ArchiveReader, limits: Limits) -> RestorePlan:
    """Return ``plan_restore`` of the open archive, kept for the next preview of that file."""
    st = os.fstat(reader.fd)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, limits)
    with _plans_lock:
        found = _plans.get(key)
        if found is not None:
            _plans.move_to_end(key)
            return found
    plan = plan_restore(reader, limits)
    if len(plan.items) <= PLAN_CACHE_MAX_ITEMS:
        with _plans_lock:
            _plans[key] = plan
            total = sum(len(p.items) for p in _plans.values())
            while total > PLAN_CACHE_MAX_ITEMS:
                total -= len(_plans.popitem(last=False)[1].items)
    return plan


def _preview_of(
    diff: Diff, name: str, chosen: RestorePaths | None, sample: int, leaves: list[str]
) -> RestorePreview:
    """Count a diff (from the archive to the run) as what a restore does, within ``chosen``."""

    def rows(bucket: tuple[Change, ...]) -> list[Change]:
        return list(bucket) if chosen is None else [c for c in bucket if chosen.covers(c.path)]

    def counted(changes: list[Change], kinds: tuple[str | None, ...]) -> Count:
        picked = [c for c in changes if c.type in kinds or c.type_a in kinds]
        return Count(
            len(picked), sum(c.size_a or 0 for c in picked if (c.type_a or c.type) == FILE)
        )

    kinds = (FILE, SYMLINK)
    restored = counted(rows(diff.removed), kinds)
    changed = counted(rows(diff.modified) + rows(diff.type_changed), kinds)
    gone = [c for c in rows(diff.added) if c.type in kinds]
    # The archive's files and links (within ``chosen``) that no row names are the unchanged.
    named = {c.path for c in rows(diff.removed) + rows(diff.modified) + rows(diff.type_changed)}
    unchanged = sum(1 for p in leaves if p not in named)
    return RestorePreview(
        name, len(gone), sum(c.size_b or 0 for c in gone if c.type == FILE),
        [c.path for c in gone[:sample]], restored, changed, unchanged,
        chosen.as_list() if chosen is not None else None,
    )  # fmt: skip


def _stage(run: RunDir, work: Folder, reader: ArchiveReader, plan: RestorePlan,
           report: ProgressCallback, threads: int,
           before_swap: Callable[[], None] | None = None,
           units: tuple[str, ...] | None = None) -> _Extractor:  # fmt: skip
    """Extract into a fresh stage and journal ``swapping``; on any failure leave no trace.

    ``units`` are a partial restore's swapped paths (None: every top-level name).
    """
    journal = Journal(secrets.token_hex(6), reader.name, STAGING, partial=units is not None)
    layout = run_layout(run)
    write_journal(work, journal)
    try:
        with run.make(layout.stage(journal.id)) as stage:
            # Held by the extraction workers too, so a recover after this process was killed
            # waits for them to be gone before removing what they write (``wait_for_writers``).
            # Not blocking: only someone racing into the run could hold a folder this new.
            try:
                fcntl.flock(stage.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(
                    f"Someone else holds the new {stage.label}; nothing was changed."
                ) from None
            with run.make(layout.scratch(journal.id)) as scratch:
                extractor = _Extractor(reader, plan, run, stage, scratch, report, journal, units)
                extractor.build(threads)
            run.remove_tree(layout.scratch(journal.id))
            sync_filesystem(stage.fd)
            journal.state = SWAPPING
            if units is None:
                journal.old, journal.new = top_level_names(run), sorted(stage.names())
            else:
                journal.old = [u for u in units if exists_beneath(run, u)]
                journal.new = list(units)
                journal.times = parent_times(run, journal.new)
            journal.modes = extractor.deferred_modes
            journal.old_modes = old_modes(run, journal.old)
            if before_swap is not None:
                before_swap()
    except BaseException as exc:
        run.remove_tree(layout.stage(journal.id))
        run.remove_tree(layout.scratch(journal.id))
        clear_journal(work)
        if isinstance(exc, OSError) and is_no_space(exc):
            raise NoSpace(
                f"Ran out of disk space while restoring ({exc.strerror}); the run is "
                "unchanged. Free some space and retry."
            ) from exc
        raise
    write_journal(work, journal)
    return extractor


class _Extractor:
    """Builds the stage: folders, then files (in parallel processes), then links, then times.

    Files are created in their stage folder. Where ext4 puts a file's inode follows its
    folder, so the stage's top-level folders are made under random names (then renamed) in
    a stage flagged "top of a hierarchy": each lands in a block group of its own choosing,
    not where the run's previous files (just deleted, perhaps) were. A stage folder where
    creates turn out slow (``_Local``) gets its further files from a per-process scratch
    folder, renamed in. Two workers take batches from the two halves of the archive, so
    they mostly create in different folders (creates serialize per folder). A file the run
    already holds with the same size, mode,
    mtime, sha256 and CRC-32 is hard-linked instead of extracted: its bytes are proven equal
    to both the manifest's and the central directory's, and a link costs a fraction of a
    create (no run: nothing is reused, as for a fork). Every path in the run and in the stage
    is reached through handles
    (``open_beneath``), so a link planted or swapped in mid-restore cannot redirect a read,
    a write or a link.

    Files go to forked worker processes (``workers``) in batches once there are enough of
    them; the children keep only the archive, the run, the stage, the scratch folder and
    ``hold`` open (never the run's lock) and die with this process. ``hold`` are further
    descriptors the children must keep while they live (a fork's stage lock).
    """

    def __init__(self, reader: ArchiveReader, plan: RestorePlan, run: RunDir | None, stage: Folder,
                 scratch: Folder, report: ProgressCallback, journal: Journal,
                 units: tuple[str, ...] | None = None,
                 hold: tuple[int, ...] = ()) -> None:  # fmt: skip
        self.reader, self.plan, self.run, self.stage = reader, plan, run, stage
        self.units, self.hold = units, hold
        self.scratch, self.report, self.journal = scratch, report, journal
        self.reused = 0
        self.deferred_modes: dict[str, int] = {}
        self.local = _Local()

    def build(self, threads: int) -> None:
        plan = self.plan
        spread_subfolders(self.scratch.fd)  # per-worker folders in fresh block groups
        dirs = [i for i in plan.items if i.type == DIR]
        files = [i for i in plan.items if i.type == FILE]
        links = [i for i in plan.items if i.type == SYMLINK]
        wanted = {i.path for i in dirs}
        for item in plan.items:
            parent = item.path.rpartition("/")[0]
            while parent and parent not in wanted:
                wanted.add(parent)
                parent = parent.rpartition("/")[0]
        implicit = wanted - {i.path for i in dirs}
        # The stage's top-level folders in fresh block groups too; the flag goes again (a
        # fork's stage becomes the new run's folder itself).
        spread = spread_subfolders(self.stage.fd)
        try:
            for path in sorted(wanted):  # parents sort before their children
                parent, _, base = path.rpartition("/")
                with self._folder(parent) as folder:
                    if parent:
                        os.mkdir(base, 0o700, dir_fd=folder.fd)
                    else:
                        _make_placed(folder, base)
        finally:
            if spread:
                spread_subfolders(self.stage.fd, spread=False)
        self._files(files, threads)
        for item in links:
            assert item.target is not None  # read and checked by plan_restore
            parent, _, base = item.path.rpartition("/")
            with self._folder(parent) as folder:
                os.symlink(item.target, base, dir_fd=folder.fd)
                os.utime(base, ns=(item.mtime_ns, item.mtime_ns), dir_fd=folder.fd,
                         follow_symlinks=False)  # fmt: skip
        modes: list[tuple[str, int, int | None]] = [(i.path, i.mode, i.mtime_ns) for i in dirs]
        modes += [(path, 0o755, None) for path in implicit]
        for path, mode, mtime_ns in sorted(modes, key=lambda m: m[0].count("/"), reverse=True):
            if self.units is not None and not _beneath_any(path, self.units):
                continue  # a folder only holding a partial restore's path: never swapped in
            moved = path in self.units if self.units is not None else "/" not in path
            if moved and not mode & stat.S_IWUSR:
                # Moving a folder into the run needs its write bit; the swap sets the rest.
                self.deferred_modes[path] = mode
                mode |= stat.S_IWUSR
            with self.stage.open(path) as folder:
                os.fchmod(folder.fd, mode)
                if mtime_ns is not None:
                    os.utime(folder.fd, ns=(mtime_ns, mtime_ns))

    def _folder(self, parent: str) -> Folder:
        """Open a folder of the stage (the stage itself for ``""``) as a new handle."""
        if not parent:
            return Folder(os.dup(self.stage.fd), "")
        return self.stage.open(parent)

    def _files(self, files: list[PlanItem], threads: int) -> None:
        """Place every file, small files travelling in batches, in up to ``threads`` processes.

        A batch of up to ``BATCH_BYTES`` or ``BATCH_FILES`` is one task. Few files (under
        ``FORK_MIN_FILES`` and ``FORK_MIN_BYTES``) are placed here: forking would cost more
        than it saves. Progress is still reported file by file, as batches complete.
        """
        total_bytes = self.plan.total_bytes
        size = sum(item.entry.usize for item in files)
        many = len(files) >= FORK_MIN_FILES or size >= FORK_MIN_BYTES
        workers = min(threads, _cpus()) if many else 1
        batches = _interleaved(_batches(files), workers)
        counted = [0, 0]  # files, bytes

        def place(index: int) -> int:
            return self._place_all(batches[index])

        def placed(index: int, reused: int) -> None:
            self.reused += reused
            for item in batches[index]:  # one event per file, as every listener expects
                counted[0] += 1
                counted[1] += item.entry.usize
                self.report(ProgressEvent("restore", Phase.EXTRACT, counted[0], len(files),
                                          counted[1], total_bytes, item.path))  # fmt: skip

        keep = (self.reader.fd, self.stage.fd, self.scratch.fd, *self.hold)
        if self.run is not None:
            keep += (self.run.fd,)
        try:
            run_tasks(len(batches), place, placed, workers=workers, keep=keep,
                      start=self._start)  # fmt: skip
        finally:
            self.local.close()  # what the in-process path opened; a child's died with it

    def _start(self) -> None:
        """Begin placing files in this process: nothing cached from another one."""
        self.local = _Local()

    def _place_all(self, batch: list[PlanItem]) -> int:
        try:
            data = self._read_batch(batch)
            return sum(self._place(item, data.get(id(item))) for item in batch)
        finally:
            self._drop_cached()
            self._drop_run_parent()

    def _read_batch(self, batch: list[PlanItem]) -> dict[int, memoryview]:
        """Read the compressed bytes of a batch of small entries with one ``pread``.

        Entries of a batch are neighbours in the archive, so their data spans little more
        than their sum: one read instead of one per entry. Anything else (a large entry, a
        batch spread out, a short read) is left to ``stream``'s own reads. Keyed by ``id``.
        """
        reader = self.reader
        spans = [(id(i), reader.data_offset(i.entry), i.entry.csize) for i in batch]
        first = min(start for _, start, _ in spans)
        last = max(start + size for _, start, size in spans)
        if last - first > SPAN_BYTES or any(size > READ_BLOCK for _, _, size in spans):
            return {}
        block = memoryview(reader.read_span(first, last - first))
        if len(block) != last - first:
            return {}
        return {key: block[start - first : start - first + size] for key, start, size in spans}

    def _parent_fd(self, parent: str) -> int:
        """Return a handle of the stage folder ``parent``, cached for runs of files."""
        cached = self.local.parent
        if cached is not None and cached[0] == parent:
            return cached[1]
        self._drop_cached()
        fd = os.dup(self.stage.fd) if not parent else open_beneath(self.stage.fd, parent, _O_DIR)
        self.local.parent = (parent, fd)
        return fd

    def _drop_cached(self) -> None:
        cached = self.local.parent
        if cached is not None:
            os.close(cached[1])
            self.local.parent = None

    def _run_parent_fd(self, parent: str) -> int | None:
        """Return a handle of the run's folder ``parent``, cached; None if absent.

        Files come in archive order, so siblings follow each other: their folder is opened
        once beneath the run (no link in any component) and each candidate by its one name
        with ``O_NOFOLLOW`` relative to it, instead of walking the whole path per file. In a
        run emptied before the restore, the folder's absence answers for all its files.
        """
        if self.run is None:
            return None  # a fork: no run holds a copy to reuse
        cached = self.local.run_parent
        if cached is not None and cached[0] == parent:
            return cached[1]
        self._drop_run_parent()
        try:
            fd: int | None = (
                os.dup(self.run.fd) if not parent else open_beneath(self.run.fd, parent, _O_DIR)
            )
        except (OSError, ValueError):
            fd = None
        self.local.run_parent = (parent, fd)
        return fd

    def _drop_run_parent(self) -> None:
        cached = self.local.run_parent
        if cached is not None and cached[1] is not None:
            os.close(cached[1])
        self.local.run_parent = None

    def _open_reusable(self, item: PlanItem) -> int | None:
        """Return an open handle of the run's copy of ``item`` if it is provably the same bytes.

        Same size, mode and mtime, and the same sha256 as the manifest *and* the same CRC-32
        and size as the central directory: then the archive's entry, if it is sound, holds
        these bytes, and if it is not, verify and restore agree that it must be extracted.
        """
        if item.sha256 is None:
            return None
        parent, _, base = item.path.rpartition("/")
        parent_fd = self._run_parent_fd(parent)
        if parent_fd is None:
            return None
        try:
            fd = os.open(base, _O_PEEK, dir_fd=parent_fd)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not (stat.S_ISREG(st.st_mode) and st.st_size == item.entry.usize
                    and stat.S_IMODE(st.st_mode) == item.mode
                    and st.st_mtime_ns == item.mtime_ns):  # fmt: skip
                os.close(fd)
                return None
            sha, crc, offset = hashlib.sha256(), 0, 0
            while block := os.pread(fd, 1 << 20, offset):
                sha.update(block)
                crc = isal_zlib.crc32(block, crc)
                offset += len(block)
        except OSError:
            os.close(fd)
            return None
        if offset == item.entry.usize and sha.hexdigest() == item.sha256 and crc == item.entry.crc:
            return fd
        os.close(fd)
        return None

    def _place(self, item: PlanItem, data: memoryview | None = None) -> int:
        """Put one file into the stage; return 1 if it was reused from the run.

        ``data``: its compressed bytes when ``_read_batch`` read them."""
        parent, _, base = item.path.rpartition("/")
        dest_fd = self._parent_fd(parent)
        source = self._open_reusable(item)
        if source is not None:
            try:
                # The very inode just hashed, linked by handle: no path is looked up again.
                os.link(f"/proc/self/fd/{source}", base, dst_dir_fd=dest_fd,
                        follow_symlinks=True)  # fmt: skip
                return 1
            except OSError:
                pass  # another filesystem (EXDEV) or link limit: extract instead
            finally:
                os.close(source)
        local = self.local
        if parent not in local.slow_dirs:
            times = local.dir_times.get(parent)
            if times is None:
                times = local.dir_times[parent] = _CreateTimes()
            started = time.thread_time_ns()
            fd = os.open(base, _O_NEW, 0o600, dir_fd=dest_fd)
            times.add(time.thread_time_ns() - started)
            if times.slow():
                local.slow_dirs.add(parent)  # the next ones come from a scratch folder
            _write_file(self.reader, item, fd, data)
            return 0
        folder = local.folder
        if folder is None or local.wants_new_folder():
            folder = local.new_folder(self.scratch)
        tmp = str(next(local.names))
        started = time.thread_time_ns()
        fd = os.open(tmp, _O_NEW, 0o600, dir_fd=folder.fd)
        local.times.add(time.thread_time_ns() - started)
        _write_file(self.reader, item, fd, data)
        os.rename(tmp, base, src_dir_fd=folder.fd, dst_dir_fd=dest_fd)
        return 0


# A create that costs more CPU than this (clean ext4 here: ~10 us) is scanning inodes freed
# in the last minutes (ext4 without a journal skips them one by one: 0.3-1 ms a file).
SLOW_CREATE_NS = 100_000
MAX_NEW_FOLDERS = 8


class _CreateTimes:
    """The CPU times of the latest creates in one folder: slow when most of them were."""

    __slots__ = ("creates", "slows")

    def __init__(self) -> None:
        self.creates = self.slows = 0

    def add(self, cpu_ns: int) -> None:
        self.creates += 1
        self.slows += cpu_ns > SLOW_CREATE_NS
        if self.creates >= 64:  # a sliding window: a group can fill up and the next be slow
            self.creates //= 2
            self.slows //= 2

    def slow(self) -> bool:
        return self.creates >= 8 and self.slows * 2 > self.creates


class _Local:
    """What one placing process (a worker, or the caller) caches and measures: handles of
    the folders of the file placed last, in the stage and in the run; how creates went in
    each stage folder; its own scratch folder.

    ext4 without a journal places a new inode in the first block group of its folder's
    group that has a free inode, skipping one by one those freed in the last minutes; in a
    group the emptied run's files just left, every create scans thousands. A stage folder
    where most creates were slow sends its further files through the scratch folder, which
    is left for a new one (a random name: ext4 places it elsewhere) when creates there are
    slow too, at most ``MAX_NEW_FOLDERS`` times. A folder left stays (empty) until the
    scratch is removed, so ext4's allocator, which prefers groups with fewer folders, keeps
    away from its group. Times are thread CPU time, not wall time: load does not count.
    """

    __slots__ = ("dir_times", "folder", "made", "names", "parent", "run_parent", "slow_dirs",
                 "times")  # fmt: skip

    def __init__(self) -> None:
        self.parent: tuple[str, int] | None = None
        self.run_parent: tuple[str, int | None] | None = None
        self.folder: Folder | None = None
        self.names = itertools.count()
        self.times = _CreateTimes()  # in the current scratch folder
        self.made = 0
        self.dir_times: dict[str, _CreateTimes] = {}
        self.slow_dirs: set[str] = set()

    def wants_new_folder(self) -> bool:
        return self.made <= MAX_NEW_FOLDERS and self.times.slow()

    def new_folder(self, scratch: Folder) -> Folder:
        if self.folder is not None:
            self.folder.close()
        self.folder = scratch.make(secrets.token_hex(8))
        self.made += 1
        self.times = _CreateTimes()
        return self.folder

    def close(self) -> None:
        if self.parent is not None:
            os.close(self.parent[1])
        if self.run_parent is not None and self.run_parent[1] is not None:
            os.close(self.run_parent[1])
        if self.folder is not None:
            self.folder.close()
        self.parent = self.run_parent = self.folder = None


def _cpus() -> int:
    """The CPUs this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _make_placed(stage: Folder, name: str) -> None:
    """Make the top-level stage folder ``name`` where ext4 chooses afresh.

    In a folder flagged "top of a hierarchy" ext4 starts the search for a new subfolder's
    block group at a hash of its name: the same names would go where the same names went
    last time. So the folder is made under a random name and renamed (it keeps its place).
    """
    while True:
        made = f".{secrets.token_hex(8)}"
        try:
            os.mkdir(made, 0o700, dir_fd=stage.fd)
            break
        except FileExistsError:
            continue
    os.rename(made, name, src_dir_fd=stage.fd, dst_dir_fd=stage.fd)


def _interleaved(batches: list[list[PlanItem]], workers: int) -> list[list[PlanItem]]:
    """Order batches so that ``workers`` processes taking the next one each start in their
    own part of the archive: ``[a0, b0, a1, b1, …]`` for halves ``a`` and ``b``."""
    if workers < 2:
        return batches
    size = -(-len(batches) // workers)
    parts = [batches[k * size : (k + 1) * size] for k in range(workers)]
    return [part[i] for i in range(size) for part in parts if i < len(part)]


def _beneath_any(path: str, units: tuple[str, ...]) -> bool:
    return any(path == u or path.startswith(u + "/") for u in units)


def _write_file(
    reader: ArchiveReader, item: PlanItem, fd: int, data: memoryview | None = None
) -> None:
    """Write ``item`` to the new file ``fd``, verified, with its mode and mtime; close it."""
    try:
        sha = hashlib.sha256()
        for piece in reader.stream(item.entry, data):
            sha.update(piece)
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
        if item.sha256 is not None and sha.hexdigest() != item.sha256:
            raise DamagedArchive(f"sha256 mismatch in {item.path!r}: the archive is damaged.")
        os.fchmod(fd, item.mode)
        os.utime(fd, ns=(item.mtime_ns, item.mtime_ns))
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


@dataclass(frozen=True, slots=True)
class UndoResult:
    """What an undo put back: the tree the restore of ``restored`` had replaced."""

    restored: str
    partial: bool
    paths: list[str]
    nodb_files: list[str] = field(default_factory=list)


def undo_restore(
    run_dir: Path | RunRef,
    *,
    progress: ProgressCallback | None = None,
    defer_delete: bool = False,
    before_swap: Callable[[], None] | None = None,
) -> UndoResult:
    """Put back exactly what the run's last restore replaced; NothingToUndo if nothing is kept.

    The kept tree (``undo``) is swapped in through the restore journal (kind ``undo``, its
    stage the kept tree), so a crash anywhere is finished by ``recover`` as a restore's swap
    is. A full restore's undo replaces every top-level name of the run; a partial one's only
    the paths that restore moved. What the undo replaced is deleted (``defer_delete``: parked
    as trash for ``purge_trash``), and with it the kept tree and its record: nothing is left
    to undo. ``before_swap`` is the caller's last chance to stop, as in ``restore_archive``.
    """
    report = progress or ignore_progress
    with open_run(run_dir) as run, run_lock(run) as work:
        run.require_writable()
        recover_locked(run, work)  # drops an expired undo too
        record = current_undo(work)
        if record is None:
            raise NothingToUndo(
                f"Run {run.runid} has nothing to undo: no restore since its last archive, "
                "restore or undo, or what it kept has expired."
            )
        nodb = tree_nodb_files(work, record)
        layout: Layout = run_layout(run)
        if record.partial:
            replaced = sorted(p for p in {*record.old, *record.new} if exists_beneath(run, p))
        else:
            replaced = top_level_names(run)
        journal = Journal(record.id, record.archive, SWAPPING, old=replaced,
                          new=list(record.old), modes=dict(record.modes), kind=UNDO,
                          partial=record.partial)  # fmt: skip
        journal.times = parent_times(run, [*replaced, *record.old]) if record.partial else {}
        if before_swap is not None:
            before_swap()
        n = len(record.old)
        report(ProgressEvent("undo", Phase.SWAP, n, n, 0, 0))
        write_journal(work, journal)
        try:
            roll_forward(run, work, layout, journal)
        except OSError as exc:
            raise RunArchiveError(
                f"Undo of the restore of {record.archive} stopped during the swap "
                f"({exc.strerror}). The journal holds the rest: fix the cause, then run "
                f"`runarchive recover` on run {run.runid}."
            ) from exc
        report(ProgressEvent("undo", Phase.CLEANUP, n, n, 0, 0))
        finish(work, layout, journal, defer_delete=defer_delete)
    report(ProgressEvent("undo", Phase.DONE, n, n, 0, 0))
    return UndoResult(record.archive, record.partial, list(record.old), nodb)
