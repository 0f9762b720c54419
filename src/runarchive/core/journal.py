"""The restore journal and ``recover``: a restore is all-or-nothing across crashes.

A restore moves through three journal states, each written atomically (temp file, fsync,
rename, fsync the folder) to ``archives/.runarchive/journal.json``:

``staging``   The archive is being extracted into ``.runarchive-stage-<id>/`` at the run's top
              (the same filesystem, so the swap is renames); the run itself has not been
              touched. Recover: delete the stage. Result: the run exactly as before.
``swapping``  The stage is complete, verified and synced to disk. Its top-level names and the
              run's current top-level names are in the journal. The swap renames every old
              top-level entry into ``.runarchive-old-<id>/``, then every staged one into the
              run. Each rename is atomic and the roll-forward checks each name independently,
              so recover simply finishes the swap. Result: the run exactly as the archive.
``swapped``   The swap is durable; only the old tree and the empty stage remain to be deleted.
              Recover deletes them. A restore that defers the deletion renames the old tree to
              ``archives/.runarchive/trash-<id>`` (out of the run's tree: from the final
              trigger on the run is exactly the archive) and drops the journal; ``purge_trash``
              (or any later recover) deletes trash folders.

``archives/`` (with our state inside) is never moved. Stray temp files (``archives/.tmp-*``)
from a killed create are removed by recover too; recover runs under the run lock, so no live
writer can own them. Versions before 0.2 kept the lock, journal and transient folders in a
``.runarchive/`` folder at the run's top: recover finishes a restore journalled there (same
rules, their names without the prefix) and removes that folder.

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
import fcntl
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import Busy, InvalidInput, UnsafeRun
from .fsutil import atomic_write_bytes
from .names import LEGACY_WORK_DIR, is_archive_name, is_reserved_top, is_run_relpath
from .rundir import Folder, RunDir, open_run
from .runlock import run_lock
from .statefile import load_json, read_small_file
from .undo import (
    DEFAULT_UNDO_TTL,
    RECORD_TMP_RE,
    UNDO_PREFIX,
    UndoRecord,
    drop_undo,
    expire_undo,
    keep_tree,
    undo_ttl,
)

JOURNAL = "journal.json"
STAGING = "staging"
SWAPPING = "swapping"
SWAPPED = "swapped"
STATES = (STAGING, SWAPPING, SWAPPED)
RESTORE, UNDO = "restore", "undo"  # what a journal swaps in: a staged archive, or a kept tree
MAX_JOURNAL_BYTES = 64 << 20
_ID_RE = re.compile(r"[0-9a-f]{12}")
# A finished restore's replaced tree, parked in our state folder until purged (``_park``).
WORK_TRASH_PREFIX = "trash-"
_WORK_TRASH_RE = re.compile(r"trash-[0-9a-f]{12}")
_STATE_DIR_RE = re.compile(r"(stage|old|trash)-([0-9a-f]{12})(\.scratch)?")
_TMP_ARCHIVE_RE = re.compile(r"\.tmp-.{1,240}\.partial")
_JOURNAL_TMP_RE = re.compile(rf"\.{re.escape(JOURNAL)}\.tmp-[0-9]{{1,10}}")
_KEYS = {"id", "archive", "state", "old", "new", "modes", "kind", "partial", "old_modes", "times"}


@dataclass(frozen=True, slots=True)
class RecoverResult:
    """What recover did: none, rolled_back, rolled_forward or cleaned."""

    action: str
    removed_temp: int


@dataclass(slots=True)
class Journal:
    """A validated journal: what one restore (or undo) was doing.

    ``old`` and ``new`` are the paths the swap moves: top-level names for a full restore,
    the chosen paths (relative, checked component by component) for a ``partial`` one. A
    ``kind`` of ``undo`` swaps in the kept tree ``archives/.runarchive/undo-<id>`` instead of
    a stage. ``modes`` are the final modes of ``new`` folders, ``old_modes`` the modes of
    ``old`` folders made writable to move them (kept for undo), ``times`` the mtimes of the
    run folders holding swapped paths, put back after the renames.
    """

    id: str
    archive: str
    state: str
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)
    kind: str = RESTORE
    partial: bool = False
    old_modes: dict[str, int] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"id": self.id, "archive": self.archive, "state": self.state}
        if self.kind != RESTORE:
            body["kind"] = self.kind
        if self.partial:
            body["partial"] = True
        if self.state != STAGING:
            body.update(old=self.old, new=self.new, modes=self.modes)
            if self.old_modes:
                body["old_modes"] = self.old_modes
            if self.times:
                body["times"] = self.times
        return json.dumps(body).encode()


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a restore's transient folders live and what they are called.

    Today: the run's top, prefixed ``.runarchive-``; before 0.2: inside the top-level
    ``.runarchive/`` folder, unprefixed. ``folder`` is borrowed, not owned.
    """

    folder: Folder
    prefix: str

    def stage(self, jid: str) -> str:
        """The staging folder of restore ``jid``."""
        return f"{self.prefix}stage-{jid}"

    def scratch(self, jid: str) -> str:
        """Where extract workers create files before moving them into the stage."""
        return f"{self.prefix}stage-{jid}.scratch"

    def old(self, jid: str) -> str:
        """The folder the replaced tree of restore ``jid`` is moved into."""
        return f"{self.prefix}old-{jid}"

    def trash(self, jid: str) -> str:
        """Where a finished restore parks the replaced tree until it is purged."""
        return f"{self.prefix}trash-{jid}"

    def kind(self, name: str) -> str | None:
        """Return stage/old/trash when ``name`` is one of our transient folders, else None."""
        if not name.startswith(self.prefix):
            return None
        match = _STATE_DIR_RE.fullmatch(name[len(self.prefix) :])
        return match[1] if match else None


def run_layout(run: RunDir) -> Layout:
    """The layout of this version: transient folders at the run's top."""
    return Layout(run, ".runarchive-")


def _bad(reason: str) -> UnsafeRun:
    return UnsafeRun(
        f"The restore journal archives/.runarchive/{JOURNAL} is not one runarchive wrote "
        f"({reason}); nothing was changed. Check the run, then remove that file (and any "
        ".runarchive-stage-/-old- folders at the run's top) and retry."
    )


def _names(raw: object, what: str, partial: bool) -> list[str]:
    """Validate a list of swapped paths: top-level names, or (partial) relative paths checked
    component by component, none beneath another."""
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise _bad(f"{what} is not a list of names")
    names: list[str] = raw
    for name in names:
        if not is_run_relpath(name) or (not partial and "/" in name):
            raise _bad(f"{what} holds {name!r}, which is not a path of the run it may replace")
    if len(set(names)) != len(names):
        raise _bad(f"{what} names an entry twice")
    if partial:
        listed = set(names)
        for name in names:
            parent = name.rpartition("/")[0]
            while parent:
                if parent in listed:
                    raise _bad(f"{what} names {name!r} beneath {parent!r}")
                parent = parent.rpartition("/")[0]
    return names


def _modes(raw: object, what: str, allowed: list[str]) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise _bad(f"{what} is not an object")
    for name, mode in raw.items():
        if name not in allowed:
            raise _bad(f"{what} names {name!r}, which the swap does not move")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
            raise _bad(f"mode of {name!r} is not permission bits")
    return dict(raw)


def _times(raw: object, moved: list[str]) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise _bad("times is not an object")
    parents = {p.rpartition("/")[0] for p in moved} - {""}
    for name, when in raw.items():
        if name not in parents:
            raise _bad(f"times names {name!r}, which holds nothing the swap moves")
        if not isinstance(when, int) or isinstance(when, bool) or not 0 <= when < 1 << 63:
            raise _bad(f"time of {name!r} is not nanoseconds")
    return dict(raw)


def parse_journal(data: bytes) -> Journal:
    """Validate a journal as strictly as an uploaded archive; raise UnsafeRun if anything is off."""
    raw = load_json(data, _bad)
    if not isinstance(raw, dict) or not set(raw) <= _KEYS:
        raise _bad("unexpected fields")
    jid, archive, state = raw.get("id"), raw.get("archive"), raw.get("state")
    if not isinstance(jid, str) or not _ID_RE.fullmatch(jid):
        raise _bad("its id is not 12 hex digits")
    if not isinstance(archive, str) or not is_archive_name(archive):
        raise _bad("its archive is not an archive name")
    if state not in STATES:
        raise _bad(f"unknown state {state!r}")
    kind, partial = raw.get("kind", RESTORE), raw.get("partial", False)
    if kind not in (RESTORE, UNDO):
        raise _bad(f"unknown kind {kind!r}")
    if not isinstance(partial, bool):
        raise _bad("partial is not true or false")
    journal = Journal(jid, archive, state, kind=kind, partial=partial)
    if state == STAGING:
        if set(raw) - {"id", "archive", "state", "kind", "partial"} or kind == UNDO:
            raise _bad("a staging journal lists names")
        return journal
    journal.old = _names(raw.get("old"), "old", partial)
    journal.new = _names(raw.get("new"), "new", partial)
    journal.modes = _modes(raw.get("modes", {}), "modes", journal.new)
    journal.old_modes = _modes(raw.get("old_modes", {}), "old_modes", journal.old)
    journal.times = _times(raw.get("times", {}), journal.old + journal.new)
    return journal


def write_journal(work: Folder, journal: Journal) -> None:
    """Durably record a restore's state."""
    atomic_write_bytes(work.fd, JOURNAL, journal.to_json())


def read_journal(work: Folder) -> Journal | None:
    """Return the validated journal of an unfinished restore, or None."""
    data = read_small_file(work, JOURNAL, MAX_JOURNAL_BYTES, "journal", _bad)
    return None if data is None else parse_journal(data)


def top_level_names(run: RunDir) -> list[str]:
    """Return the run's top-level names that a restore replaces."""
    return sorted(n for n in run.names() if not is_reserved_top(n))


def folder_label(folder: Folder, name: str) -> str:
    """Name ``name`` in ``folder`` for a message (relative to the run)."""
    return f"{folder.label}/{name}" if folder.label else name


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
                f"{folder_label(work, name)} is not a folder runarchive made (a link or a "
                "file); nothing was changed. Remove it and retry."
            ) from None
        raise


def _parent(root: Folder, path: str, *, create: int | None = None) -> Folder | None:
    """Open the folder holding ``path`` beneath ``root`` (a new handle; ``root`` itself for a
    top-level name); None when missing, unless ``create`` (a mode) makes the missing ones."""
    parent = path.rpartition("/")[0]
    if not parent:
        return Folder(os.dup(root.fd), root.label)
    if create is None:
        try:
            return root.open(parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _bad(f"{parent!r} is not a folder ({exc.strerror})") from None
    folder = Folder(os.dup(root.fd), root.label)
    for part in parent.split("/"):
        with folder:
            folder = folder.ensure(part, create)
    return folder


def exists_beneath(root: Folder | None, path: str) -> bool:
    if root is None:
        return False
    parent = _parent(root, path)
    if parent is None:
        return False
    with parent:
        return parent.exists(path.rpartition("/")[2])


def _move(src_root: Folder, path: str, dest_root: Folder, dest_path: str, mode: int) -> None:
    """Rename ``path`` beneath ``src_root`` to ``dest_path`` beneath ``dest_root`` by handles,
    making the destination's missing parent folders (``mode``)."""
    src = _parent(src_root, path)
    if src is None:
        return
    with src, _parent(dest_root, dest_path, create=mode) as dest:  # type: ignore[union-attr]
        src.rename(path.rpartition("/")[2], dest, dest_path.rpartition("/")[2])


def swap_source(layout: Layout, work: Folder, journal: Journal) -> Folder | None:
    """Open what a journal swaps in: the restore's stage, or the kept tree of an undo."""
    if journal.kind == UNDO:
        return open_state_dir(work, f"{UNDO_PREFIX}{journal.id}")
    return open_state_dir(layout.folder, layout.stage(journal.id))


def roll_forward(run: RunDir, work: Folder, layout: Layout, journal: Journal) -> None:
    """Finish a swap from any intermediate point; safe to repeat."""
    stage = swap_source(layout, work, journal)
    old = open_state_dir(layout.folder, layout.old(journal.id), create=True)
    assert old is not None
    try:
        _check_names(run, old, stage, journal)
        for name in journal.old:
            if exists_beneath(run, name) and not exists_beneath(old, name):
                _make_movable(run, name)
                _move(run, name, old, name, 0o700)
        for name in journal.new:
            if stage is None or not exists_beneath(stage, name):
                continue
            if exists_beneath(run, name):
                # Something appeared in the run during the swap; keep it beside the old tree.
                _move(run, name, old, f"{name}.stray-{os.getpid()}", 0o700)
            _move(stage, name, run, name, 0o755)
        for name, mode in journal.modes.items():
            _chmod_dir(run, name, mode)
        for name, mtime_ns in journal.times.items():
            _set_mtime(run, name, mtime_ns)
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
        if not (exists_beneath(run, name) or exists_beneath(stage, name)):
            raise _bad(f"{name!r} is neither staged nor in the run")
    for name in journal.old:
        if not (exists_beneath(run, name) or exists_beneath(old, name)) and name not in journal.new:
            raise _bad(f"{name!r} is neither in the run nor moved aside")


def _chmod_dir(run: Folder, name: str, mode: int) -> None:
    """Set a swapped folder's mode through its own handle (folders only)."""
    try:
        folder = run.open(name)
    except OSError:
        return  # not a folder (the journal's modes only ever name folders)
    with folder:
        os.fchmod(folder.fd, mode)


def _set_mtime(run: Folder, name: str, mtime_ns: int) -> None:
    """Put back the mtime of a run folder whose entries the swap renamed."""
    try:
        folder = run.open(name)
    except OSError:
        return
    with folder:
        os.utime(folder.fd, ns=(mtime_ns, mtime_ns))


def _make_movable(run: RunDir, name: str) -> None:
    """Give a folder its owner's write bit: moving a folder to a new parent rewrites its ``..``.

    Only folders about to be replaced get here; a restore records their modes first
    (``old_modes``), so an undo puts them back as they were.
    """
    parent = _parent(run, name)
    if parent is None:
        return
    with parent:
        st = parent.lstat(name.rpartition("/")[2])
    if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IWUSR:
        _chmod_dir(run, name, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)


def old_modes(run: Folder, names: list[str]) -> dict[str, int]:
    """Return the modes of the folders among ``names`` the swap must make writable to move."""
    found: dict[str, int] = {}
    for name in names:
        parent = _parent(run, name)
        if parent is None:
            continue
        with parent:
            try:
                st = parent.lstat(name.rpartition("/")[2])
            except FileNotFoundError:
                continue
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IWUSR:
            found[name] = stat.S_IMODE(st.st_mode)
    return found


def parent_times(run: Folder, names: list[str]) -> dict[str, int]:
    """Return the mtimes of the run folders (below the top) that hold ``names``."""
    times: dict[str, int] = {}
    for parent in sorted({n.rpartition("/")[0] for n in names} - {""}):
        try:
            with run.open(parent) as folder:
                times[parent] = os.fstat(folder.fd).st_mtime_ns
        except OSError:
            continue
    return times


def finish(work: Folder, layout: Layout, journal: Journal, *, defer_delete: bool = False) -> None:
    """Keep or delete what a completed swap left behind, then drop the journal.

    A restore's replaced tree becomes the run's undo (``undo.keep_tree``: a rename into
    ``archives/.runarchive/undo-<id>`` and a record), replacing any earlier one; when undo is
    off (``RUNARCHIVE_UNDO_TTL=0``) or ``archives/`` is another filesystem it is deleted as
    before. An undo's replaced tree (what the restore had put in) is deleted, and with it
    the kept tree's empty shell and the record. With ``defer_delete`` a tree to delete is
    only renamed to the trash name (instant), so the caller can report success first and
    call ``purge_trash`` afterwards. Every step is safe to repeat after a crash.
    """
    jid, folder = journal.id, layout.folder
    transient = (layout.old(jid), layout.stage(jid), layout.scratch(jid))
    for name in transient:
        _require_folder_or_missing(folder, name)
    kept = f"{UNDO_PREFIX}{jid}"
    if journal.kind == UNDO:
        if defer_delete and folder.exists(layout.old(jid)):
            _park(folder, layout, work, jid)
        drop_undo(work)  # the record, then the emptied kept tree
    else:
        ttl = _ttl() if layout.prefix else 0  # an older version's journal keeps nothing
        if ttl and folder.exists(layout.old(jid)):
            try:
                folder.rename(layout.old(jid), work, kept)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        if work.exists(kept):
            keep_tree(work, _record(work, journal, ttl or _ttl()))
        else:
            if defer_delete and folder.exists(layout.old(jid)):
                _park(folder, layout, work, jid)
            drop_undo(work, purge=not defer_delete)
    for name in transient:
        folder.remove_tree(name)
    clear_journal(work)


def _ttl() -> int:
    """The undo TTL; a setting broken since the restore began (which checked it) keeps the
    default rather than stop a finished swap's cleanup."""
    try:
        return undo_ttl()
    except InvalidInput:
        return DEFAULT_UNDO_TTL


def _record(work: Folder, journal: Journal, ttl: int) -> UndoRecord:
    """The undo record of a restore whose replaced tree was just kept."""
    now = time.time_ns()
    with work.open(f"{UNDO_PREFIX}{journal.id}") as tree:
        held = [n for n in journal.old if exists_beneath(tree, n)]
    modes = {n: m for n, m in journal.old_modes.items() if n in held}
    return UndoRecord(journal.id, journal.archive, now, now + ttl * 1_000_000_000,
                      journal.partial, tuple(held), tuple(journal.new), modes, 0)  # fmt: skip


def _park(folder: Folder, layout: Layout, work: Folder, jid: str) -> None:
    """Move the replaced tree out of the run's own tree until it is purged.

    Into ``archives/.runarchive/trash-<id>`` (a rename, instant): from the final trigger on, the
    run holds exactly the archive, and a host that walks the run (WEPPcloud's own archiver
    takes everything but ``archives/``) never sees the old tree. When ``archives/`` is another
    filesystem the rename cannot cross, it is parked at the run's top as before.
    """
    try:
        folder.rename(layout.old(jid), work, f"{WORK_TRASH_PREFIX}{jid}")
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        folder.rename(layout.old(jid), folder, layout.trash(jid))


def _work_trash(work: Folder) -> list[str]:
    """The parked trees in our state folder (exact names only)."""
    return [n for n in work.names() if _WORK_TRASH_RE.fullmatch(n)]


def _require_folder_or_missing(folder: Folder, name: str) -> None:
    found = open_state_dir(folder, name)
    if found is not None:
        found.close()


def purge_trash(run_path: os.PathLike[str] | str) -> int:
    """Delete the trees replaced by earlier restores; return how many were removed."""
    with open_run(run_path) as run:
        layout = run_layout(run)
        names = [n for n in run.names() if layout.kind(n) == "trash"]
        for name in names:
            _require_folder_or_missing(run, name)
            run.remove_tree(name)
        parked = 0
        work = run.work()
        if work is not None:
            with work:
                for name in _work_trash(work):
                    _require_folder_or_missing(work, name)
                    work.remove_tree(name)
                    parked += 1
    return len(names) + parked


def clear_journal(work: Folder) -> None:
    """Remove the journal, durably."""
    with contextlib.suppress(FileNotFoundError):
        work.unlink(JOURNAL)
    work.fsync()


def _remove_stale(run: RunDir, work: Folder, layout: Layout) -> int:
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
    names = layout.folder.names()
    for name in names:  # first: no worker of a killed restore writes in any of them now
        if layout.kind(name) == "stage":
            wait_for_writers(layout.folder, name)
    for name in names:
        if layout.kind(name) is not None:
            _require_folder_or_missing(layout.folder, name)
            layout.folder.remove_tree(name)
            removed += 1
    for name in work.names():
        if (_JOURNAL_TMP_RE.fullmatch(name) or RECORD_TMP_RE.fullmatch(name)) and _is_regular(
            work, name
        ):
            work.unlink(name)
    for name in _work_trash(work):
        _require_folder_or_missing(work, name)
        work.remove_tree(name)
        removed += 1
    return removed


# How long a recover waits for the extraction workers of a killed restore to be gone.
WRITERS_WAIT = 10.0


def wait_for_writers(folder: Folder, name: str) -> None:
    """Return once no process holds the lock of stage ``name`` in ``folder`` (or it is gone).

    A restore locks its stage, and its extraction workers (``workers``) share that lock for
    as long as they live. They die with the restore, but a killed restore's workers can
    outlive it by some milliseconds, and only they write into the stage; the run's lock
    they never hold. So a recover that finds the run free waits on the stage lock before
    removing what they may still be writing. Busy if it is still held after
    ``WRITERS_WAIT`` seconds. A stage that is no real folder is left to the caller's checks.
    """
    try:
        stage = folder.open(name)
    except OSError:
        return
    with stage:
        deadline = time.monotonic() + WRITERS_WAIT
        while True:
            try:
                fcntl.flock(stage.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return  # released when the handle closes
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held = folder_label(folder, name)
                    raise Busy(
                        f"Processes of an interrupted restore still hold {held}; nothing was "
                        "changed. Retry once they have exited."
                    ) from None
                time.sleep(0.005)


def _is_regular(folder: Folder, name: str) -> bool:
    try:
        return stat.S_ISREG(folder.lstat(name).st_mode)
    except FileNotFoundError:
        return False


def _recover_journal(run: RunDir, work: Folder, layout: Layout) -> str:
    """Finish or undo the restore journalled in ``work``; return what was done."""
    journal = read_journal(work)
    if journal is None:
        return "none"
    if journal.state == STAGING:
        wait_for_writers(layout.folder, layout.stage(journal.id))
        for name in (layout.stage(journal.id), layout.scratch(journal.id)):
            _require_folder_or_missing(layout.folder, name)
            layout.folder.remove_tree(name)
        clear_journal(work)
        return "rolled_back"
    if journal.state == SWAPPING:
        roll_forward(run, work, layout, journal)
        finish(work, layout, journal)
        return "rolled_forward"
    finish(work, layout, journal)
    return "cleaned"


def _migrate_legacy(run: RunDir) -> tuple[str, int]:
    """Finish a restore an older version journalled in ``<run>/.runarchive``, then retire it.

    Only what we put there goes — the lock, temp journals, our transient folders (checked to
    be real folders) — and the folder itself once empty; anything else is left in place
    (the folder is never archived or replaced, so it does no harm).
    """
    legacy = run.legacy_work()
    if legacy is None:
        return "none", 0
    removed = 0
    with legacy:
        layout = Layout(legacy, "")
        action = _recover_journal(run, legacy, layout)
        for name in legacy.names():
            if layout.kind(name) is not None:
                _require_folder_or_missing(legacy, name)
                legacy.remove_tree(name)
                removed += 1
            elif (name == "lock" or _JOURNAL_TMP_RE.fullmatch(name)) and not stat.S_ISDIR(
                legacy.lstat(name).st_mode
            ):
                legacy.unlink(name)  # a link is unlinked, never followed
    with contextlib.suppress(OSError):  # not empty: something not ours is inside
        os.rmdir(LEGACY_WORK_DIR, dir_fd=run.fd)
        run.fsync()
    return action, removed


def recover_locked(run: RunDir, work: Folder) -> RecoverResult:
    """Finish or undo an interrupted restore; the caller holds the run lock."""
    action, removed = _migrate_legacy(run)
    layout = run_layout(run)
    current = _recover_journal(run, work, layout)
    if current != "none":
        action = current
    if expire_undo(work):
        removed += 1
    removed += _remove_stale(run, work, layout)
    if action == "none" and removed:
        action = "cleaned"
    return RecoverResult(action, removed)


def recover_run(run_path: os.PathLike[str] | str) -> RecoverResult:
    """Open the run, take its lock and recover it."""
    with open_run(run_path) as run, run_lock(run) as work:
        return recover_locked(run, work)


def needs_recovery(run: RunDir) -> bool:
    """Tell whether an interrupted restore (of this or an older version) left a journal."""
    legacy = run.legacy_work()
    if legacy is not None:
        with legacy:
            if legacy.exists(JOURNAL):
                return True
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
    for work, layout in _state_places(run):
        with work:
            read_journal(work)  # validates it, when there is one
            for name in layout.folder.names():
                if layout.kind(name) is not None:
                    _require_folder_or_missing(layout.folder, name)


def _state_places(run: RunDir) -> list[tuple[Folder, Layout]]:
    places = []
    legacy = run.legacy_work()
    if legacy is not None:
        places.append((legacy, Layout(legacy, "")))
    work = run.work()
    if work is not None:
        places.append((work, run_layout(run)))
    return places
