"""Forking an archive into a new run: the archive restored into a run folder that did not exist.

Why a module of its own: a fork changes no run. It reads one archive of the source (no run
lock, no ``.nodb`` lock: a published archive never changes, and the open handle keeps its
bytes even if it is deleted meanwhile) and makes a run that nobody may see before it is whole.

Order of work:

1. The new run's name is validated as a run id; the folder that will hold it (the runs root,
   or its shard folder, made when missing) is opened by handle, and a shard that is a link or
   a file is refused (``UnsafeRun``). Anything at the new name — a folder, a file, a link — is
   ``RunExists``; nothing is changed.
2. Stale stages of dead forks in that folder are removed (``recover_forks``).
3. ``plan_restore`` checks the archive exactly as for a restore (names that climb, links
   leaving the run, limits, overlaps, the manifest); free space is checked.
4. The stage ``.<parent>/.runarchive-fork+<hex>/`` is made **in the folder that will hold
   the run** (same filesystem, so the last step is a rename) and ``flock``-ed for the life of
   the fork. ``+`` is outside the run id alphabet, so no request can name a stage as a run.
   The archive is extracted into ``stage/run`` by restore's own extractor (CRC, size and
   sha256 of every byte as it streams); ``syncfs``.
5. ``before_publish(stage)``: the caller's last chance to stop (a canceled job raises there)
   and to change the staged files (the post-fork hooks rewrite ``.nodb`` paths there, so the
   run appears already rewritten); ``syncfs`` again.
6. ``renameat2(RENAME_NOREPLACE)`` of ``stage/run`` to the new name: the one step that makes
   the run visible, and which fails rather than replace anything made there meanwhile
   (``RunExists``: two forks racing for a name, one wins). ``fsync`` of the parent.
7. The stage's empty shell is removed.

Crash semantics: killed before step 6, the new name holds nothing and the stage's lock died
with the process, so the next ``recover_forks`` of that folder (every fork, the CLI's fork,
the worker's maintenance) removes it; killed after, the run is whole and verified and only
the shell is left, removed the same way. Never a partial run under the new name.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import platform
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidInput, NoSpace, RunArchiveError, RunExists
from .fsutil import is_no_space, require_space, sync_filesystem
from .journal import STAGING, Journal
from .limits import Limits
from .manifest import FILE
from .names import ArchiveRef, validate_runid
from .progress import Phase, ProgressCallback, ProgressEvent, ignore_progress
from .reader import ArchiveReader, open_archive
from .restore import _Extractor
from .rundir import Folder, RunRef, open_run

STAGE_PREFIX = ".runarchive-fork+"
_RUN = "run"
_SCRATCH = "scratch"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1
# renameat2 by system call where the C library lacks the wrapper (glibc < 2.28, musl).
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class ForkResult:
    """What a finished fork made: the new run, and what the archive put in it."""

    name: str
    runid: str
    path: Path
    files: int
    entries: int
    bytes_total: int
    had_manifest: bool
    warnings: list[str] = field(default_factory=list)
    # The .nodb files of the new run (the archive's), known from the plan.
    nodb_files: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ForkStage:
    """The new run while it is staged: what ``before_publish`` may look at and change.

    ``folder`` is the staged run opened by handle (reach its files beneath it, as the
    built-in hook does); ``path`` is where it is now, ``final`` where it will appear.
    """

    runid: str
    folder: Folder
    path: Path
    final: Path
    nodb_files: tuple[str, ...]


def fork_archive(
    source: Path | RunRef,
    name: str | ArchiveRef,
    into: Path,
    new_runid: str,
    *,
    make_parent: bool = False,
    progress: ProgressCallback | None = None,
    limits: Limits | None = None,
    allow_external_links: bool = False,
    threads: int = 4,
    before_publish: Callable[[ForkStage], None] | None = None,
    reader: ArchiveReader | None = None,
) -> ForkResult:
    """Make run ``new_runid`` in folder ``into`` (it must not exist there), holding exactly
    archive ``name`` of run ``source``.

    The id is a string validated here (never a path a caller joined: ``..`` or ``/`` in it
    are refused, not collapsed). ``make_parent`` creates ``into`` (a shard of the runs root)
    when missing; the folder above it must exist. See the module's notes for the order and
    the crash semantics. ``reader`` is archive ``name`` already open (the caller closes it).
    """
    given = progress or ignore_progress

    def report(event: ProgressEvent) -> None:  # the extractor's events, named as a fork's
        given(dataclasses.replace(event, op="fork"))

    lim = limits or Limits.from_env()
    runid = validate_runid(new_runid)
    with _open_parent(into, runid, make_parent) as parent:
        _refuse_existing(parent, runid)
        recover_forks(parent)
        with open_run(source) as run, contextlib.ExitStack() as stack:
            if reader is None:
                reader = stack.enter_context(open_archive(run, name, lim))
            # The new run folder takes the source folder's permission bits.
            mode = stat.S_IMODE(os.fstat(run.fd).st_mode) & 0o777
            return _fork(reader, parent, Path(parent.label), runid, mode, report, lim,
                         allow_external_links, threads, before_publish)  # fmt: skip


def recover_forks(parent: Folder) -> int:
    """Remove the stages of dead forks in ``parent``; return how many.

    A stage is ours by its name; it is stale when nobody holds its ``flock`` (a live fork
    holds it from the stage's creation to its removal). Removed by handle, never followed.
    """
    removed = 0
    for entry in parent.scandir():
        if not entry.name.startswith(STAGE_PREFIX):
            continue
        try:
            fd = os.open(entry.name, _DIR_FLAGS, dir_fd=parent.fd)
        except FileNotFoundError:
            continue  # removed meanwhile (another recover, or its fork's end)
        except OSError:
            with contextlib.suppress(OSError):
                parent.remove_tree(entry.name)  # a file or link with our name: not a stage
                removed += 1
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live fork
        try:
            parent.remove_tree(entry.name)
            removed += 1
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    return removed


def recover_forks_in(folder: Path) -> int:
    """Remove the stages of dead forks in the folder at ``folder`` (0 when it is missing)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return 0
    with Folder(fd, str(folder)) as opened:
        return recover_forks(opened)


def _fork(reader: ArchiveReader, parent: Folder, where: Path, runid: str,
          mode: int, report: ProgressCallback, lim: Limits,
          allow_external_links: bool, threads: int,
          before_publish: Callable[[ForkStage], None] | None) -> ForkResult:  # fmt: skip
    from .safety import plan_restore  # beside restore's own import of it

    plan = plan_restore(reader, lim, allow_external_links)
    require_space(parent.fd, plan.total_bytes + (16 << 20), "fork the archive",
                  reserve=lim.reserve_for(parent.fd))  # fmt: skip
    nodb = tuple(sorted(i.path for i in plan.items if i.type == FILE and i.path.endswith(".nodb")))
    with _stage(parent) as (stage_name, stage):
        try:
            with stage.make(_RUN, 0o700) as built:
                with stage.make(_SCRATCH) as scratch:
                    journal = Journal(stage_name[len(STAGE_PREFIX) :], reader.name, STAGING)
                    # The workers hold the stage's lock too: a live fork's, as long as they live.
                    extractor = _Extractor(reader, plan, None, built, scratch, report, journal,
                                           hold=(stage.fd,))  # fmt: skip
                    extractor.build(threads)
                stage.remove_tree(_SCRATCH)
                for path, folder_mode in extractor.deferred_modes.items():
                    with built.open(path) as folder:  # nothing moves them: their own mode now
                        os.fchmod(folder.fd, folder_mode)
                os.fchmod(built.fd, mode | stat.S_IRWXU)  # a rename to another folder writes ".."
                sync_filesystem(built.fd)
                total, size = plan.files, plan.total_bytes
                report(ProgressEvent("fork", Phase.SWAP, total, total, size, size))
                if before_publish is not None:
                    before_publish(ForkStage(runid, built, where / stage_name / _RUN,
                                             where / runid, nodb))  # fmt: skip
                    sync_filesystem(built.fd)
                _rename_noreplace(stage, _RUN, parent, runid)
                parent.fsync()
                os.fchmod(built.fd, mode)  # the very folder, now the run
        except OSError as exc:
            if is_no_space(exc):
                raise NoSpace(
                    f"Ran out of disk space while forking ({exc.strerror}); no run was made. "
                    "Free some space and retry."
                ) from exc
            raise
    report(ProgressEvent("fork", Phase.DONE, plan.files, plan.files, size, size))
    return ForkResult(reader.name, runid, where / runid, plan.files, len(plan.items), size,
                      plan.had_manifest, plan.warnings, list(nodb))  # fmt: skip


@contextlib.contextmanager
def _stage(parent: Folder) -> Iterator[tuple[str, Folder]]:
    """Make a fresh locked stage in ``parent``; remove it (whatever it holds) at the end."""
    while True:
        stage_name = f"{STAGE_PREFIX}{secrets.token_hex(6)}"
        try:
            os.mkdir(stage_name, 0o700, dir_fd=parent.fd)
        except PermissionError as exc:
            raise RunArchiveError(
                f"Cannot make a new run in {parent.label} ({exc.strerror}); nothing was changed."
            ) from None
        stage = Folder(os.open(stage_name, _DIR_FLAGS, dir_fd=parent.fd), stage_name)
        fcntl.flock(stage.fd, fcntl.LOCK_EX)  # released by close, or by the kernel at death
        if os.fstat(stage.fd).st_nlink > 0:
            break
        stage.close()  # a recover_forks in between took it for a dead one's: make another
    try:
        yield stage_name, stage
    finally:
        try:
            parent.remove_tree(stage_name)
        finally:
            stage.close()


@contextlib.contextmanager
def _open_parent(holder: Path, runid: str, make_parent: bool) -> Iterator[Folder]:
    """Open the folder that will hold run ``runid``: resolved as the operator gave it, except
    a shard made here, which must then be a real folder (never a link planted there)."""
    top = Path(os.path.realpath(holder.parent if make_parent else holder))
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidInput(
            f"Cannot make run {runid}: the folder that would hold it does not exist."
        ) from None
    with Folder(fd, str(top)) as opened:
        if not make_parent:
            yield opened
            return
        with opened.ensure(holder.name, 0o755) as shard:  # UnsafeRun for a link or a file
            shard.label = str(top / holder.name)
            yield shard


def _refuse_existing(parent: Folder, runid: str) -> None:
    if parent.exists(runid):
        raise RunExists(runid)


def _rename_noreplace(src: Folder, name: str, dest: Folder, dest_name: str) -> None:
    """Rename ``src/name`` to ``dest/dest_name``, failing (RunExists) if anything is there."""
    func = getattr(_libc, "renameat2", None)
    args = (ctypes.c_int(src.fd), os.fsencode(name), ctypes.c_int(dest.fd),
            os.fsencode(dest_name), ctypes.c_uint(_RENAME_NOREPLACE))  # fmt: skip
    if func is not None:
        result = int(func(*args))
    elif (number := _SYS_RENAMEAT2.get(platform.machine())) is not None:
        result = int(_libc.syscall(ctypes.c_long(number), *args))
    else:
        raise RunArchiveError("This system offers no renameat2: a fork cannot appear atomically.")
    if result != 0:
        code = ctypes.get_errno()
        if code in (errno.EEXIST, errno.ENOTEMPTY):
            raise RunExists(dest_name)
        raise OSError(code, os.strerror(code), dest_name)


MAX_NODB_BYTES = 256 << 20  # a state file larger than this is left as it is, not read whole


def rewrite_run_paths(stage: ForkStage, old: list[str]) -> list[str]:
    """Replace the absolute path(s) ``old`` of the source run by the new run's in the staged
    ``.nodb`` files; return the files changed.

    What WEPPcloud's own fork does to a copied run: its state files name their run folder
    (``wd``), and a fork that kept the source's would write into the source. A path counts
    only as a whole component sequence (followed by ``/``, a quote, a backslash or the end),
    so ``/runs/abc`` never rewrites ``/runs/abcdef``. Each file is reached beneath the stage
    by handle (a link among the archive's entries is never followed), rewritten to a new
    file beside it and renamed over it, keeping its mode and mtime.
    """
    import re

    wanted = sorted({p.rstrip("/") for p in old if p.rstrip("/")}, key=len, reverse=True)
    if not wanted:
        return []
    pattern = re.compile(
        b"(?:" + b"|".join(re.escape(os.fsencode(p)) for p in wanted) + rb')(?=[/"\\]|$)'
    )
    final = os.fsencode(str(stage.final))
    changed = []
    for rel in stage.nodb_files:
        parent, _, base = rel.rpartition("/")
        with stage.folder.open(parent) if parent else Folder(os.dup(stage.folder.fd), "") as f:
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=f.fd)  # fmt: skip
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_NODB_BYTES:
                    continue
                pieces = []
                while piece := os.read(fd, 1 << 20):
                    pieces.append(piece)
                data = b"".join(pieces)
            finally:
                os.close(fd)
            new = pattern.sub(final, data)
            if new == data:
                continue
            tmp = f".{base}.fork-{secrets.token_hex(4)}"
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600, dir_fd=f.fd)  # fmt: skip
            try:
                view = memoryview(new)
                while view:
                    view = view[os.write(out, view) :]
                os.fchmod(out, stat.S_IMODE(st.st_mode))
                os.utime(out, ns=(st.st_mtime_ns, st.st_mtime_ns))
            finally:
                os.close(out)
            os.rename(tmp, base, src_dir_fd=f.fd, dst_dir_fd=f.fd)
            changed.append(rel)
    return changed
