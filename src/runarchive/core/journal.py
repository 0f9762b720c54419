"""The restore journal and ``recover``: a restore is all-or-nothing across crashes.

A restore moves through three journal states, each written atomically (temp file, fsync,
rename, fsync the folder) to ``.runarchive/journal.json``:

``staging``   The archive is being extracted into ``.runarchive/stage-<id>/``; the run itself
              has not been touched. Recover: delete the stage. Result: the run exactly as before.
``swapping``  The stage is complete, verified and synced to disk. Its top-level names and the
              run's current top-level names are in the journal. The swap renames every old
              top-level entry into ``.runarchive/old-<id>/``, then every staged one into the run.
              Each rename is atomic and the roll-forward checks each name independently, so
              recover simply finishes the swap. Result: the run exactly as the archive.
``swapped``   The swap is durable; only ``old-<id>`` and the empty stage remain to be deleted.
              Recover deletes them. A restore that defers the deletion renames ``old-<id>``
              to ``trash-<id>`` and drops the journal; ``purge_trash`` (or any later recover)
              deletes trash folders.

``archives/`` and ``.runarchive/`` are never moved. Stray temp files (``archives/.tmp-*``)
from a killed create are removed by recover too; recover runs under the run lock, so no live
writer can own them.

The journal lives in the run, so whoever can write into the run can write it: it is read back
as hostile input (``parse_journal``). Its id must be the 12 hex digits we generate, its names
single components that exist where the state says, its modes permission bits only, and no
other key is accepted. Every action goes through handles of the run's real folders
(``rundir``): a link where a state folder should be is refused, never followed. A journal that
fails any check raises ``UnsafeRun`` and nothing is touched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from .errors import UnsafeRun
from .fsutil import atomic_write_bytes
from .names import ARCHIVES_DIR, WORK_DIR, is_archive_name
from .rundir import Folder, RunDir, open_run
from .runlock import run_lock

JOURNAL = "journal.json"
STAGING = "staging"
SWAPPING = "swapping"
SWAPPED = "swapped"
STATES = (STAGING, SWAPPING, SWAPPED)
MAX_JOURNAL_BYTES = 64 << 20
_ID_RE = re.compile(r"[0-9a-f]{12}")
_STATE_DIR_RE = re.compile(r"(stage|old|trash)-([0-9a-f]{12})(\.scratch)?")
_TMP_ARCHIVE_RE = re.compile(r"\.tmp-.{1,240}\.partial")
_JOURNAL_TMP_RE = re.compile(rf"\.{re.escape(JOURNAL)}\.tmp-[0-9]{{1,10}}")
_KEYS = {"id", "archive", "state", "old", "new", "modes"}
RESERVED_TOP = frozenset({ARCHIVES_DIR, WORK_DIR})


@dataclass(frozen=True, slots=True)
class RecoverResult:
    """What recover did: none, rolled_back, rolled_forward or cleaned."""

    action: str
    removed_temp: int


@dataclass(slots=True)
class Journal:
    """A validated journal: what one restore was doing."""

    id: str
    archive: str
    state: str
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"id": self.id, "archive": self.archive, "state": self.state}
        if self.state != STAGING:
            body.update(old=self.old, new=self.new, modes=self.modes)
        return json.dumps(body).encode()


def stage_name(jid: str) -> str:
    """Return the name of restore ``jid``'s staging folder in ``.runarchive``."""
    return f"stage-{jid}"


def scratch_name(jid: str) -> str:
    """Return where extract threads create files before moving them into the stage."""
    return f"stage-{jid}.scratch"


def trash_name(jid: str) -> str:
    """Return where a finished restore parks the replaced tree until it is purged."""
    return f"trash-{jid}"


def old_name(jid: str) -> str:
    """Return the folder the replaced tree of restore ``jid`` is moved into."""
    return f"old-{jid}"


def _bad(reason: str) -> UnsafeRun:
    return UnsafeRun(
        f"The restore journal .runarchive/{JOURNAL} is not one runarchive wrote ({reason}); "
        "nothing was changed. Check the run, then remove that file (and any stage-/old- "
        "folders beside it) and retry."
    )


def _names(raw: object, what: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise _bad(f"{what} is not a list of names")
    names: list[str] = raw
    for name in names:
        if (
            not name
            or name in (".", "..")
            or "/" in name
            or "\x00" in name
            or len(name.encode("utf-8", "surrogateescape")) > 255
            or name in RESERVED_TOP
        ):
            raise _bad(f"{what} holds {name!r}, which is not a top-level name of the run")
    if len(set(names)) != len(names):
        raise _bad(f"{what} names an entry twice")
    return names


def parse_journal(data: bytes) -> Journal:
    """Validate a journal as strictly as an uploaded archive; raise UnsafeRun if anything is off."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _bad("not JSON") from None
    if not isinstance(raw, dict) or not set(raw) <= _KEYS:
        raise _bad("unexpected fields")
    jid, archive, state = raw.get("id"), raw.get("archive"), raw.get("state")
    if not isinstance(jid, str) or not _ID_RE.fullmatch(jid):
        raise _bad("its id is not 12 hex digits")
    if not isinstance(archive, str) or not is_archive_name(archive):
        raise _bad("its archive is not an archive name")
    if state not in STATES:
        raise _bad(f"unknown state {state!r}")
    journal = Journal(jid, archive, state)
    if state == STAGING:
        if set(raw) - {"id", "archive", "state"}:
            raise _bad("a staging journal lists names")
        return journal
    journal.old = _names(raw.get("old"), "old")
    journal.new = _names(raw.get("new"), "new")
    modes = raw.get("modes", {})
    if not isinstance(modes, dict):
        raise _bad("modes is not an object")
    for name, mode in modes.items():
        if name not in journal.new:
            raise _bad(f"modes names {name!r}, which the restore does not put in place")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
            raise _bad(f"mode of {name!r} is not permission bits")
    journal.modes = dict(modes)
    return journal


def write_journal(work: Folder, journal: Journal) -> None:
    """Durably record a restore's state."""
    atomic_write_bytes(work.fd, JOURNAL, journal.to_json())


def read_journal(work: Folder) -> Journal | None:
    """Return the validated journal of an unfinished restore, or None."""
    try:
        fd = work.open_file(JOURNAL)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _bad(f"it cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _bad("it is not a regular file")
        if st.st_size > MAX_JOURNAL_BYTES:
            raise _bad("it is larger than any journal we write")
        data = os.pread(fd, st.st_size + 1, 0)
    finally:
        os.close(fd)
    return parse_journal(data)


def top_level_names(run: RunDir) -> list[str]:
    """Return the run's top-level names that a restore replaces."""
    return sorted(n for n in run.names() if n not in RESERVED_TOP)


def open_state_dir(work: Folder, name: str, *, create: bool = False) -> Folder | None:
    """Open our state folder ``name`` in ``.runarchive`` (None if missing); refuse a non-folder."""
    try:
        return work.make(name) if create else work.open(name)
    except FileExistsError:
        return open_state_dir(work, name)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeRun(
                f".runarchive/{name} is not a folder runarchive made (a link or a file); "
                "nothing was changed. Remove it and retry."
            ) from None
        raise


def roll_forward(run: RunDir, work: Folder, journal: Journal) -> None:
    """Finish a swap from any intermediate point; safe to repeat."""
    stage = open_state_dir(work, stage_name(journal.id))
    old = open_state_dir(work, old_name(journal.id), create=True)
    assert old is not None
    try:
        _check_names(run, old, stage, journal)
        for name in journal.old:
            if run.exists(name) and not old.exists(name):
                _make_movable(run, name)
                run.rename(name, old, name)
        for name in journal.new:
            if stage is None or not stage.exists(name):
                continue
            if run.exists(name):
                # Something appeared in the run during the swap; keep it beside the old tree.
                run.rename(name, old, f"{name}.stray-{os.getpid()}")
            stage.rename(name, run, name)
        for name, mode in journal.modes.items():
            _chmod_dir(run, name, mode)
        for folder in (run, old, stage):
            if folder is not None:
                folder.fsync()
    finally:
        old.close()
        if stage is not None:
            stage.close()
    journal.state = SWAPPED
    write_journal(work, journal)


def _check_names(run: RunDir, old: Folder, stage: Folder | None, journal: Journal) -> None:
    """Refuse a journal whose names are not where an interrupted swap would have left them."""
    for name in journal.new:
        if not (run.exists(name) or (stage is not None and stage.exists(name))):
            raise _bad(f"{name!r} is neither staged nor in the run")
    for name in journal.old:
        if not (run.exists(name) or old.exists(name)) and name not in journal.new:
            raise _bad(f"{name!r} is neither in the run nor moved aside")


def _chmod_dir(run: RunDir, name: str, mode: int) -> None:
    """Set a restored top-level folder's mode through its own handle (folders only)."""
    try:
        folder = run.open(name)
    except OSError:
        return  # not a folder (the journal's modes only ever name folders)
    with folder:
        os.fchmod(folder.fd, mode)


def _make_movable(run: RunDir, name: str) -> None:
    """Give a folder its owner's write bit: moving a folder to a new parent rewrites its ``..``.

    Only folders about to be replaced get here, and they are deleted afterwards.
    """
    st = run.lstat(name)
    if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IWUSR:
        _chmod_dir(run, name, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)


def finish(work: Folder, journal: Journal, *, defer_delete: bool = False) -> None:
    """Delete what a completed swap left behind, then the journal.

    With ``defer_delete`` the replaced tree is only renamed to ``trash-<id>`` (instant), so
    the caller can report success first and call ``purge_trash`` afterwards.
    """
    jid = journal.id
    for name in (old_name(jid), stage_name(jid), scratch_name(jid)):
        _require_folder_or_missing(work, name)
    if defer_delete and work.exists(old_name(jid)):
        work.rename(old_name(jid), work, trash_name(jid))
    for name in (old_name(jid), stage_name(jid), scratch_name(jid)):
        work.remove_tree(name)
    clear_journal(work)


def _require_folder_or_missing(work: Folder, name: str) -> None:
    folder = open_state_dir(work, name)
    if folder is not None:
        folder.close()


def purge_trash(run_path: os.PathLike[str] | str) -> int:
    """Delete the trees replaced by earlier restores; return how many were removed."""
    with open_run(run_path) as run:
        work = run.work()
        if work is None:
            return 0
        with work:
            names = [n for n in work.names() if _state_dir_kind(n) == "trash"]
            for name in names:
                _require_folder_or_missing(work, name)
                work.remove_tree(name)
    return len(names)


def clear_journal(work: Folder) -> None:
    """Remove the journal, durably."""
    with contextlib.suppress(FileNotFoundError):
        work.unlink(JOURNAL)
    work.fsync()


def _state_dir_kind(name: str) -> str | None:
    match = _STATE_DIR_RE.fullmatch(name)
    return match[1] if match else None


def _remove_stale(run: RunDir, work: Folder) -> int:
    """Remove what killed operations left: temp archives, stage/old/trash folders, temp journals.

    Only names of the exact forms we create are touched; a state folder that is a link or a
    file is refused (UnsafeRun), and anything else is left alone.
    """
    removed = 0
    archives = run.archives()
    if archives is not None:
        with archives:
            for name in archives.names():
                if _TMP_ARCHIVE_RE.fullmatch(name) and _is_regular(archives, name):
                    with contextlib.suppress(FileNotFoundError):
                        archives.unlink(name)
                    removed += 1
    for name in work.names():
        if _state_dir_kind(name) is not None:
            _require_folder_or_missing(work, name)
            work.remove_tree(name)
            removed += 1
        elif _JOURNAL_TMP_RE.fullmatch(name) and _is_regular(work, name):
            work.unlink(name)
    return removed


def _is_regular(folder: Folder, name: str) -> bool:
    try:
        return stat.S_ISREG(folder.lstat(name).st_mode)
    except FileNotFoundError:
        return False


def recover_locked(run: RunDir, work: Folder) -> RecoverResult:
    """Finish or undo an interrupted restore; the caller holds the run lock."""
    journal = read_journal(work)
    action = "none"
    if journal is not None:
        if journal.state == STAGING:
            for name in (stage_name(journal.id), scratch_name(journal.id)):
                _require_folder_or_missing(work, name)
                work.remove_tree(name)
            clear_journal(work)
            action = "rolled_back"
        elif journal.state == SWAPPING:
            roll_forward(run, work, journal)
            finish(work, journal)
            action = "rolled_forward"
        else:
            finish(work, journal)
            action = "cleaned"
    removed = _remove_stale(run, work)
    if action == "none" and removed:
        action = "cleaned"
    return RecoverResult(action, removed)


def recover_run(run_path: os.PathLike[str] | str) -> RecoverResult:
    """Open the run, take its lock and recover it."""
    with open_run(run_path) as run, run_lock(run) as work:
        return recover_locked(run, work)


def needs_recovery(run: RunDir) -> bool:
    """Tell whether an interrupted restore left a journal behind."""
    work = run.work()
    if work is None:
        return False
    with work:
        return work.exists(JOURNAL)


def check_run(run: RunDir) -> None:
    """Refuse (UnsafeRun) a run whose state a mutating operation would refuse, changing nothing.

    Lets a caller answer at once — before it queues a job — what the job would find: our
    folders not real folders, a journal that fails validation, a state folder that is a link.
    """
    archives = run.archives()
    if archives is not None:
        archives.close()
    work = run.work()
    if work is None:
        return
    with work:
        read_journal(work)  # validates it, when there is one
        for name in work.names():
            if _state_dir_kind(name) is not None:
                _require_folder_or_missing(work, name)
