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
import os
import secrets
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DamagedArchive, NotFound, RunArchiveError
from .fsutil import is_no_space, remove_tree, require_space, sync_filesystem
from .journal import (
    STAGING,
    SWAPPING,
    clear_journal,
    finish,
    recover_locked,
    roll_forward,
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
from .safety import PlanItem, RestorePlan, check_link_target, plan_restore

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


def restore_archive(
    run_dir: Path,
    name: str,
    *,
    progress: ProgressCallback | None = None,
    limits: Limits | None = None,
    allow_external_links: bool = False,
    threads: int = 2,
) -> RestoreResult:
    """Replace the run's content (all but ``archives/``) with archive ``name``."""
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
            _extract(reader, plan, stage, report, threads, allow_external_links)
            sync_filesystem(stage)
        except BaseException as exc:
            remove_tree(stage)
            clear_journal(run)
            if isinstance(exc, OSError) and is_no_space(exc):
                raise RunArchiveError(
                    f"Ran out of disk space while restoring ({exc.strerror}); the run is "
                    "unchanged. Free some space and retry."
                ) from exc
            raise
        state.update(state=SWAPPING, old=top_level_names(run), new=sorted(os.listdir(stage)))
        write_journal(run, state)
        total = len(plan.items)
        report(
            ProgressEvent("restore", Phase.SWAP, total, total, plan.total_bytes, plan.total_bytes)
        )
        roll_forward(run, state)
        report(
            ProgressEvent(
                "restore", Phase.CLEANUP, total, total, plan.total_bytes, plan.total_bytes
            )
        )
        finish(run, state)
    report(ProgressEvent("restore", Phase.DONE, total, total, plan.total_bytes, plan.total_bytes))
    return RestoreResult(
        name, plan.files, total, plan.total_bytes, plan.had_manifest, plan.warnings
    )


def _extract(
    reader: ArchiveReader,
    plan: RestorePlan,
    stage: Path,
    report: ProgressCallback,
    threads: int,
    allow_external: bool,
) -> None:
    stage.mkdir(mode=0o700)
    dirs = [i for i in plan.items if i.type == DIR]
    files = [i for i in plan.items if i.type == FILE]
    links = [i for i in plan.items if i.type == SYMLINK]
    made: set[str] = set()
    for item in [*dirs, *files, *links]:
        parent = item.path.rpartition("/")[0] if item.type != DIR else item.path
        if parent and parent not in made:
            os.makedirs(stage / parent, mode=0o700, exist_ok=True)
            made.add(parent)
    done_files = done_bytes = 0
    total_files, total_bytes = len(files), plan.total_bytes
    with ThreadPoolExecutor(threads, thread_name_prefix="runarchive-extract") as pool:
        futures = {pool.submit(_write_file, reader, item, stage): item for item in files}
        try:
            for fut in as_completed(futures):
                fut.result()
                item = futures[fut]
                done_files += 1
                done_bytes += item.entry.usize
                report(
                    ProgressEvent(
                        "restore",
                        Phase.EXTRACT,
                        done_files,
                        total_files,
                        done_bytes,
                        total_bytes,
                        item.path,
                    )
                )
        finally:
            for fut in futures:
                fut.cancel()
    for item in links:
        target = b"".join(reader.stream(item.entry)).decode("utf-8", "surrogateescape")
        check_link_target(item, target, allow_external)
        os.symlink(target, stage / item.path)
        os.utime(stage / item.path, ns=(item.mtime_ns, item.mtime_ns), follow_symlinks=False)
    for item in sorted(dirs, key=lambda i: i.path.count("/"), reverse=True):
        os.chmod(stage / item.path, item.mode)
        os.utime(stage / item.path, ns=(item.mtime_ns, item.mtime_ns))
    for parent in made - {i.path for i in dirs}:
        os.chmod(stage / parent, 0o755)


def _write_file(reader: ArchiveReader, item: PlanItem, stage: Path) -> None:
    fd = os.open(stage / item.path, _O_NEW, 0o600)
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
    finally:
        os.close(fd)
