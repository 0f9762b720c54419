"""The only way the library touches a run's files: directory handles, resolved beneath the run.

Everything under a run — model files, ``archives/``, our own ``.runarchive/`` state, every
link — may have been written by someone who can write into the run and wants to reach
something else: another run, the accounts database, the secret key. So no path below a run
is ever given to the kernel as a string from the root. A run is opened once
(``O_DIRECTORY|O_NOFOLLOW``) and every path below it is resolved relative to that handle with
no symlink allowed in any component and no escape above it:

* with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`` where the
  kernel has it (Linux 5.6+): one system call, checked by the kernel for every component;
* otherwise component by component with ``openat(…, O_NOFOLLOW)`` from the parent's handle.

Why by hand: Python exposes ``dir_fd`` on single calls but no "resolve beneath" open, and no
library on PyPI wraps ``openat2`` for this (cap-std is Rust); the fallback is CPython's own
``_rmtree_safe_fd`` technique. A check and the use it guards act on the same descriptor:
``open_file`` returns the descriptor that was checked, ``Folder.open`` the folder that was
checked, and callers ``fstat`` what they opened instead of ``lstat``-ing a name again.

``archives/`` and ``.runarchive/`` must be real folders of the run: a link, a file or anything
else there raises ``UnsafeRun`` (list reports it, every mutating operation refuses).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .errors import NotFound, ReadOnlyRun, UnsafeRun
from .names import (
    ARCHIVES_DIR,
    LEGACY_WORK_DIR,
    STATE_DIR,
    is_dot_component,
    run_id_of,
    split_relpath,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SYS_OPENAT2 = 437  # the same number on every Linux architecture (unified syscall table)
_RESOLVE = 0x02 | 0x04 | 0x08  # NO_MAGICLINKS | NO_SYMLINKS | BENEATH
_UNSAFE_ERRNOS = frozenset({errno.ELOOP, errno.EXDEV, errno.ENOTDIR})

# The process's own symbols, where CPython's libc already is: ``ctypes.util.find_library``
# would import ``subprocess`` and ``shutil`` into every command's start-up.
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _probe_openat2() -> bool:
    how = _OpenHow(_DIR_FLAGS, 0, _RESOLVE)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(-100), b".", ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )  # fmt: skip
    if fd < 0:
        return False
    os.close(fd)
    return True


# Tests switch this off to exercise the portable walk on the same kernel.
use_openat2 = _probe_openat2()


def _openat2(dir_fd: int, rel: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, _RESOLVE)
    fd = int(
        _libc.syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            os.fsencode(rel),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), rel)
    return fd


def _walk_open(dir_fd: int, parts: list[str], flags: int, mode: int) -> int:
    """Open ``parts`` beneath ``dir_fd`` one component at a time, never following a link."""
    current = dir_fd
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=current)
            if current != dir_fd:
                os.close(current)
            current = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=current)
    finally:
        if current != dir_fd:
            os.close(current)


def open_beneath(dir_fd: int, rel: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open relative path ``rel`` beneath ``dir_fd`` with no symlink in any component.

    ``rel`` must be a relative POSIX path of plain components (checked). A link anywhere on
    the way, or a component that is not a folder, raises ``OSError`` (ELOOP/ENOTDIR/EXDEV).
    """
    parts = split_relpath(rel)
    if not flags & os.O_DIRECTORY:
        # A fifo planted where a file was expected must not block the open (ignored for files).
        flags |= os.O_NONBLOCK
    if use_openat2:
        return _openat2(dir_fd, rel, flags, mode)
    return _walk_open(dir_fd, parts, flags, mode)


def is_unsafe_error(exc: OSError) -> bool:
    """Tell whether an open failed because a component was a link or not a folder."""
    return exc.errno in _UNSAFE_ERRNOS


class Folder:
    """An open directory handle; everything below it is reached relative to it.

    ``label`` names the folder in messages (relative to the run); it is never used to reach
    the folder. Close it (or use it as a context manager) when done.
    """

    __slots__ = ("fd", "label")

    def __init__(self, fd: int, label: str) -> None:
        self.fd = fd
        self.label = label

    def __enter__(self) -> Folder:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the descriptor (safe to repeat)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _child_label(self, rel: str) -> str:
        return f"{self.label}/{rel}" if self.label else rel

    def open(self, rel: str) -> Folder:
        """Open the real folder at ``rel`` beneath this one; OSError if it is anything else."""
        return Folder(
            open_beneath(self.fd, rel, os.O_RDONLY | os.O_DIRECTORY), self._child_label(rel)
        )

    def make(self, name: str, mode: int = 0o700) -> Folder:
        """Create folder ``name`` (one component; it must not exist) and open it."""
        os.mkdir(_one(name), mode, dir_fd=self.fd)
        return self.open(name)

    def ensure(self, name: str, mode: int = 0o700) -> Folder:
        """Open the real folder ``name``, creating it when missing; UnsafeRun for a non-folder."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(_one(name), mode, dir_fd=self.fd)
        try:
            return self.open(name)
        except OSError as exc:
            raise _unsafe(self, name, exc) from None

    def open_optional(self, name: str) -> Folder | None:
        """Open the real folder ``name`` (None when missing; UnsafeRun for anything else)."""
        try:
            return self.open(name)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unsafe(self, name, exc) from None

    def open_file(self, rel: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
        """Open the file at ``rel`` beneath this folder (no link anywhere); return the fd."""
        return open_beneath(self.fd, rel, flags, mode)

    def lstat(self, name: str) -> os.stat_result:
        """Return lstat facts of the direct child ``name``."""
        return os.stat(_one(name), dir_fd=self.fd, follow_symlinks=False)

    def exists(self, name: str) -> bool:
        """Tell whether the direct child ``name`` exists (links count, unfollowed)."""
        try:
            self.lstat(name)
        except FileNotFoundError:
            return False
        return True

    def is_file(self, name: str) -> bool:
        """Tell whether the direct child ``name`` is a regular file (a link never is)."""
        try:
            return stat.S_ISREG(self.lstat(name).st_mode)
        except FileNotFoundError:
            return False

    def names(self) -> list[str]:
        """Return the names in this folder."""
        return os.listdir(self.fd)

    def scandir(self) -> Iterator[os.DirEntry[str]]:
        """Iterate over this folder's entries (their ``stat`` is relative to this handle)."""
        with os.scandir(self.fd) as entries:
            yield from entries

    def readlink(self, name: str) -> str:
        """Return the text of link ``name`` (one component)."""
        return os.readlink(_one(name), dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        """Remove file or link ``name`` (one component)."""
        os.unlink(_one(name), dir_fd=self.fd)

    def rename(self, name: str, dest: Folder, dest_name: str) -> None:
        """Move child ``name`` to ``dest``/``dest_name`` (both single components)."""
        os.rename(_one(name), _one(dest_name), src_dir_fd=self.fd, dst_dir_fd=dest.fd)

    def link_from(self, src_fd: int, name: str) -> None:
        """Hard-link the open file ``src_fd`` here as ``name``: the inode checked, not a path."""
        os.link(f"/proc/self/fd/{src_fd}", _one(name), dst_dir_fd=self.fd, follow_symlinks=True)

    def fsync(self) -> None:
        """Make this folder's entries durable."""
        os.fsync(self.fd)

    def remove_tree(self, name: str) -> bool:
        """Delete child ``name`` and everything below it, never following a link; True if found.

        A link or file named ``name`` is unlinked, not followed. Read-only folders inside are
        made writable first (as their owner could), through their own handles.
        """
        try:
            st = self.lstat(name)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            self.unlink(name)
            return True
        _remove_dir(self.fd, name, st)
        return True


def _one(name: str) -> str:
    """Refuse anything but a single plain path component."""
    if not name or is_dot_component(name) or "/" in name or "\x00" in name:
        raise ValueError(f"not a single path component: {name!r}")
    return name


def _open_owned_dir(parent_fd: int, name: str, st: os.stat_result) -> int:
    """Open folder ``name`` (the one ``st`` describes), giving its owner rwx first if needed.

    The mode is changed through an ``O_PATH`` handle of that very folder (``/proc/self/fd``),
    so a folder swapped for a link in between cannot redirect the chmod.
    """
    if st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC,
                          dir_fd=parent_fd)  # fmt: skip
        try:
            if not os.path.samestat(st, os.fstat(path_fd)):
                raise OSError(errno.ESTALE, "folder replaced while it was being removed", name)
            os.chmod(f"/proc/self/fd/{path_fd}", stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        finally:
            os.close(path_fd)
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    if not os.path.samestat(st, os.fstat(fd)):
        os.close(fd)
        raise OSError(errno.ESTALE, "folder replaced while it was being removed", name)
    return fd


def _remove_dir(parent_fd: int, name: str, st: os.stat_result) -> None:
    fd = _open_owned_dir(parent_fd, name, st)
    try:
        for entry in os.scandir(fd):
            child = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(child.st_mode):
                _remove_dir(fd, entry.name, child)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def _unsafe(parent: Folder, name: str, exc: OSError) -> UnsafeRun:
    """Say what is at ``name`` instead of the folder we need (a link, a file…)."""
    try:
        mode = parent.lstat(name).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        what = "is a symbolic link"
    elif mode and not stat.S_ISDIR(mode):
        what = "is not a folder"
    else:
        what = f"cannot be opened ({exc.strerror})"
    return UnsafeRun(
        f"{parent._child_label(name)} {what}; runarchive only works with a real folder there. "
        "Remove or rename it (nothing was changed)."
    )


READONLY_MARKER = "READONLY"


@dataclass(frozen=True, slots=True)
class RunRef:
    """A run found at the edge: its validated id and its folder, handed down as one value.

    Made where a run id from outside is resolved (``jobs.runs.locate_run``); ``open_run`` takes
    it without validating the id again. A path (``os.fspath``), so path-taking functions take it.
    """

    runid: str
    path: Path

    def __fspath__(self) -> str:
        return str(self.path)


class RunDir(Folder):
    """A run opened by handle: its id, and its ``archives/`` and ``.runarchive/`` folders."""

    __slots__ = ("path", "runid")

    def __init__(self, fd: int, path: Path, runid: str) -> None:
        super().__init__(fd, "")
        self.path = path  # for messages and for callers that report it; never re-opened
        self.runid = runid

    def __enter__(self) -> RunDir:
        return self

    def require_writable(self) -> None:
        """Refuse to change the run's content or archives when it is marked ``READONLY``.

        WEPPcloud marks a read-only run with a ``READONLY`` file in the run folder (any kind
        of entry counts: refusing is the safe reading of a marker that is a link).
        """
        if self.exists(READONLY_MARKER):
            raise ReadOnlyRun(self.runid)

    def archives(self) -> Folder | None:
        """Open the real ``archives/`` folder, or None when the run has none yet."""
        return self.open_optional(ARCHIVES_DIR)

    def ensure_archives(self) -> Folder:
        """Open the real ``archives/`` folder, creating it when missing."""
        return self.ensure(ARCHIVES_DIR, 0o755)

    def work(self) -> Folder | None:
        """Open the real ``archives/.runarchive/`` state folder, or None when there is none."""
        archives = self.archives()
        if archives is None:
            return None
        with archives:
            return archives.open_optional(STATE_DIR)

    def ensure_work(self) -> Folder:
        """Open the real ``archives/.runarchive/`` state folder, creating it when missing."""
        with self.ensure_archives() as archives:
            return archives.ensure(STATE_DIR, 0o700)

    def legacy_work(self) -> Folder | None:
        """Open the state folder older versions kept at the run's top, if there is one."""
        return self.open_optional(LEGACY_WORK_DIR)


def open_run(path: os.PathLike[str] | str) -> RunDir:
    """Open the run folder at ``path`` by handle (it must be a real folder, not a link).

    The folders above the run are the operator's (the runs root, a shard): they are
    resolved as given. The run folder itself is opened with ``O_NOFOLLOW``. A ``RunRef``'s id
    was validated when it was made; a plain path's name is validated here.
    """
    if isinstance(path, RunRef):
        run, runid = path.path, path.runid
    else:
        run = Path(path)
        runid = run_id_of(run)
    parent = os.path.realpath(run.parent)
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise NotFound(f"Run directory not found: {runid}") from None
    try:
        fd = os.open(runid, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        raise NotFound(f"Run directory not found: {runid}") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeRun(
                f"Run {runid} is not a real folder (a link or a file); pass the real folder."
            ) from None
        raise
    finally:
        os.close(parent_fd)
    return RunDir(fd, Path(parent) / runid, runid)
