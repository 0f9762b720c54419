"""Undo: what a restore replaced, kept where it already is so it can be put back exactly.

Mechanism (measured in ``bench/undo.py``, see benchmarks.md): a restore's swap moves every
replaced entry into ``.runarchive-old-<id>/`` at the run's top. Instead of deleting that tree,
``finish`` renames it to ``archives/.runarchive/undo-<id>`` (one rename: no byte is copied, so
bytes, modes, mtimes, links and empty folders are exactly what the run held) and writes a
small record, ``archives/.runarchive/undo.json``, naming what it holds: the restored archive,
the moment, the entries moved aside (``old``) and those put in their place (``new``), whether
the restore was partial, the modes of replaced folders that had to be made writable to move,
and the disk the tree holds on its own. An automatic pre-restore archive would have cost a
whole create (reading and compressing the run) on every restore.

Undo is a swap in the other direction through the same journal (``restore.undo_restore``):
the journal's stage is ``undo-<id>``, so a crash at any point of an undo is finished by
``recover`` exactly as a restore's is; afterwards nothing is left to undo.

What is kept goes at the next archive, restore or undo of the run, or when it expires
(``RUNARCHIVE_UNDO_TTL`` seconds, default 7 days; 0 keeps nothing), whichever comes first.
Expiry is lazy: every mutating operation's recover, the list (``undo_info``) and the worker's
maintenance drop an expired one. Dropping is crash-safe in this order: the record is removed
(durably), then the tree is renamed to ``trash-<id>``, which any later recover or
``purge_trash`` deletes; a tree without a record is never used, only removed.

The record lives in the run, so it is read back like an upload (``parse_undo_record``): exact
keys, the 12-hex id, an archive name, paths checked component by component
(``names.is_run_relpath``), modes permission bits only. A record that fails is dropped with
its tree; it is never acted on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import Busy, InvalidInput, UnsafeRun
from .fsutil import atomic_write_bytes
from .isotime import iso_utc
from .names import is_archive_name, is_run_relpath
from .rundir import Folder, open_run
from .runlock import run_lock
from .statefile import load_json, read_small_file

UNDO_RECORD = "undo.json"
UNDO_PREFIX = "undo-"
TRASH_PREFIX = "trash-"
UNDO_TTL_ENV = "RUNARCHIVE_UNDO_TTL"
DEFAULT_UNDO_TTL = 7 * 24 * 3600
MAX_RECORD_BYTES = 16 << 20
_UNDO_RE = re.compile(r"undo-([0-9a-f]{12})")
_ID_RE = re.compile(r"[0-9a-f]{12}")
RECORD_TMP_RE = re.compile(rf"\.{re.escape(UNDO_RECORD)}\.tmp-[0-9]{{1,10}}")  # atomic_write's
_KEYS = {"id", "archive", "at_ns", "expires_ns", "partial", "old", "new", "modes", "bytes"}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def undo_ttl() -> int:
    """Return how long a restore's replaced tree is kept, in seconds (0: not kept)."""
    raw = os.environ.get(UNDO_TTL_ENV, "").strip()
    if not raw:
        return DEFAULT_UNDO_TTL
    if not raw.isdigit():
        raise InvalidInput(f"{UNDO_TTL_ENV} must be a whole number of seconds, not {raw!r}.")
    return int(raw)


@dataclass(frozen=True, slots=True)
class UndoRecord:
    """What ``undo-<id>`` holds and what the restore put in its place (validated)."""

    id: str
    archive: str
    at_ns: int
    expires_ns: int
    partial: bool
    old: tuple[str, ...]
    new: tuple[str, ...]
    modes: dict[str, int]
    disk: int  # bytes the kept tree holds on its own (``held_bytes``)

    @property
    def tree(self) -> str:
        """The kept tree's name in our state folder."""
        return f"{UNDO_PREFIX}{self.id}"

    def expired(self, now_ns: int | None = None) -> bool:
        return (time.time_ns() if now_ns is None else now_ns) >= self.expires_ns

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "id": self.id, "archive": self.archive, "at_ns": self.at_ns,
            "expires_ns": self.expires_ns, "partial": self.partial, "old": list(self.old),
            "new": list(self.new), "modes": self.modes, "bytes": self.disk,
        }  # fmt: skip
        return json.dumps(body).encode()


@dataclass(frozen=True, slots=True)
class UndoInfo:
    """What the list shows of a run's undo: ``as_json()`` is the API's ``undo`` field."""

    available: bool
    restored: str | None = None
    at: datetime | None = None
    expires: datetime | None = None
    disk: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "restored": self.restored,
            "at": iso_utc(self.at) if self.at else None,
            "expires": iso_utc(self.expires) if self.expires else None,
            "bytes": self.disk,
        }

    @classmethod
    def of(cls, record: UndoRecord | None) -> UndoInfo:
        if record is None:
            return cls(False)
        return cls(True, record.archive, _moment(record.at_ns), _moment(record.expires_ns),
                   record.disk)  # fmt: skip


def _moment(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _bad(reason: str) -> UnsafeRun:
    return UnsafeRun(
        f"The undo record archives/.runarchive/{UNDO_RECORD} is not one runarchive wrote "
        f"({reason}); it is not used."
    )


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise _bad(f"{key} is not a non-negative integer")
    return value


def _paths(raw: object, what: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(is_run_relpath(p) for p in raw):
        raise _bad(f"{what} is not a list of paths of the run")
    if len(set(raw)) != len(raw):
        raise _bad(f"{what} names a path twice")
    return tuple(raw)


def parse_undo_record(data: bytes) -> UndoRecord:
    """Validate an undo record as strictly as an upload; raise UnsafeRun if anything is off."""
    raw = load_json(data, _bad)
    if not isinstance(raw, dict) or set(raw) != _KEYS:
        raise _bad("unexpected fields")
    jid, archive, partial = raw["id"], raw["archive"], raw["partial"]
    if not isinstance(jid, str) or not _ID_RE.fullmatch(jid):
        raise _bad("its id is not 12 hex digits")
    if not isinstance(archive, str) or not is_archive_name(archive):
        raise _bad("its archive is not an archive name")
    if not isinstance(partial, bool):
        raise _bad("partial is not true or false")
    old, new = _paths(raw["old"], "old"), _paths(raw["new"], "new")
    if not partial and any("/" in p for p in old + new):
        raise _bad("a full restore's names are not top-level names")
    modes = raw["modes"]
    if not isinstance(modes, dict):
        raise _bad("modes is not an object")
    for name, mode in modes.items():
        if name not in old:
            raise _bad(f"modes names {name!r}, which the tree does not hold")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
            raise _bad(f"mode of {name!r} is not permission bits")
    at, expires = _int(raw, "at_ns"), _int(raw, "expires_ns")
    if expires < at:
        raise _bad("it expires before it was made")
    return UndoRecord(jid, archive, at, expires, partial, old, new, dict(modes),
                      _int(raw, "bytes"))  # fmt: skip


def read_undo_record(work: Folder) -> UndoRecord | None:
    """Return the validated record (None when there is none); UnsafeRun when it fails."""
    data = read_small_file(work, UNDO_RECORD, MAX_RECORD_BYTES, "undo record", _bad)
    return None if data is None else parse_undo_record(data)


def write_undo_record(work: Folder, record: UndoRecord) -> None:
    """Durably record what ``undo-<id>`` holds."""
    atomic_write_bytes(work.fd, UNDO_RECORD, record.to_json())


def current_undo(work: Folder, now_ns: int | None = None) -> UndoRecord | None:
    """Return the record when it is valid, unexpired and its tree is a real folder, else None."""
    try:
        record = read_undo_record(work)
    except UnsafeRun:
        return None
    if record is None or record.expired(now_ns):
        return None
    try:
        st = work.lstat(record.tree)
    except FileNotFoundError:
        return None
    return record if stat.S_ISDIR(st.st_mode) else None


def drop_undo(work: Folder, *, keep: str | None = None, purge: bool = True) -> int:
    """Drop every kept tree but ``keep`` (an id) and, unless kept, the record; return how many.

    The record goes first (durably), then each tree is renamed to ``trash-<id>`` (instant)
    and, with ``purge``, deleted; a crash in between leaves trash any recover removes.
    """
    record_id: str | None
    try:
        record = read_undo_record(work)
        record_id = record.id if record is not None else None
    except UnsafeRun:
        record_id = None
    if keep is None or record_id != keep:
        with contextlib.suppress(FileNotFoundError):
            work.unlink(UNDO_RECORD)
            work.fsync()
    dropped = 0
    for name in work.names():
        match = _UNDO_RE.fullmatch(name)
        if match is None or match[1] == keep:
            continue
        trash = f"{TRASH_PREFIX}{match[1]}"
        _require_folder(work, name)
        if work.exists(trash):
            work.remove_tree(trash)
        work.rename(name, work, trash)
        if purge:
            work.remove_tree(trash)
        dropped += 1
    return dropped


def expire_undo(work: Folder, now_ns: int | None = None) -> bool:
    """Drop what is kept when it expired, its record fails or its tree is gone; True if so."""
    has_record = work.exists(UNDO_RECORD)
    has_tree = any(_UNDO_RE.fullmatch(n) for n in work.names())
    if not (has_record or has_tree):
        return False
    record = current_undo(work, now_ns)
    if record is not None:
        return drop_undo(work, keep=record.id) > 0  # a stray tree beside the kept one
    drop_undo(work)
    return True


def keep_tree(work: Folder, record: UndoRecord) -> None:
    """Make ``undo-<id>`` the run's one undo: measure it, record it, drop any earlier one."""
    with work.open(record.tree) as tree:
        held = held_bytes(tree)
    write_undo_record(work, _with_bytes(record, held))
    drop_undo(work, keep=record.id, purge=False)


def _with_bytes(record: UndoRecord, held: int) -> UndoRecord:
    return UndoRecord(record.id, record.archive, record.at_ns, record.expires_ns, record.partial,
                      record.old, record.new, record.modes, held)  # fmt: skip


def _require_folder(folder: Folder, name: str) -> None:
    try:
        folder.open(name).close()
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeRun(
                f"{folder.label}/{name} is not a folder runarchive made (a link or a file); "
                "nothing was changed. Remove it and retry."
            ) from None
        raise


def walk(folder: Folder, prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative path, lstat)`` of everything below ``folder``, by handle, never
    following a link (each folder opened is the one that was stat'ed; one that changed in
    between is skipped, not followed)."""
    for entry in folder.scandir():
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        rel = f"{prefix}{entry.name}"
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            try:
                fd = os.open(entry.name, _DIR_FLAGS, dir_fd=folder.fd)
            except OSError:
                continue  # gone, or swapped for a link since the stat: never followed
            with Folder(fd, rel) as child:
                if os.path.samestat(st, os.fstat(fd)):
                    yield from walk(child, rel + "/")


def held_bytes(tree: Folder) -> int:
    """Return the disk ``tree`` holds on its own: its blocks, but those of files still shared
    (hard-linked) with the run, which a restore reuses when unchanged."""
    total = 0
    for _, st in walk(tree):
        if stat.S_ISDIR(st.st_mode) or st.st_nlink == 1:
            total += st.st_blocks * 512
    return total


def tree_nodb_files(work: Folder, record: UndoRecord) -> list[str]:
    """Return the ``.nodb`` files (run paths) an undo would put back."""
    with work.open(record.tree) as tree:
        return sorted(p for p, st in walk(tree) if p.endswith(".nodb") and stat.S_ISREG(st.st_mode))


def undo_info(run_path: os.PathLike[str] | str) -> UndoInfo:
    """Say whether the run keeps a restore's replaced tree to put back (the list's ``undo``).

    An expired or invalid one is dropped here when the run is free (lazy expiry); when an
    operation holds the run it is only reported unavailable.
    """
    with open_run(run_path) as run:
        work = run.work()
        if work is None:
            return UndoInfo(False)
        with work:
            record = current_undo(work)
            stale = record is None and (
                work.exists(UNDO_RECORD) or any(_UNDO_RE.fullmatch(n) for n in work.names())
            )
        if stale:  # a state folder that is not ours is the next operation's to refuse
            with contextlib.suppress(Busy, UnsafeRun), run_lock(run) as locked:
                expire_undo(locked)
    return UndoInfo.of(record)


def expire_run_undo(run_path: os.PathLike[str] | str) -> bool:
    """Drop the run's kept tree if it expired (the worker's maintenance); False when busy."""
    with open_run(run_path) as run:
        work = run.work()
        if work is None:
            return False
        work.close()
        try:
            with run_lock(run) as work:
                return expire_undo(work)
        except Busy:
            return False


def undo_nodb_files(run_path: os.PathLike[str] | str) -> list[str]:
    """Return the ``.nodb`` files an undo of the run would put back (none when nothing kept)."""
    with open_run(run_path) as run:
        work = run.work()
        if work is None:
            return []
        with work:
            record = current_undo(work)
            return tree_nodb_files(work, record) if record is not None else []
