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
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_bytes, fsync_dir, remove_tree
from .names import ARCHIVES_DIR, WORK_DIR, require_run
from .runlock import run_lock, work_dir

JOURNAL = "journal.json"
STAGING = "staging"
SWAPPING = "swapping"
SWAPPED = "swapped"


@dataclass(frozen=True, slots=True)
class RecoverResult:
    """What recover did: none, rolled_back, rolled_forward or cleaned."""

    action: str
    removed_temp: int


def journal_path(run: Path) -> Path:
    """Return where the run's restore journal lives."""
    return run / WORK_DIR / JOURNAL


def stage_dir(run: Path, jid: str) -> Path:
    """Return the staging folder of restore ``jid``."""
    return run / WORK_DIR / f"stage-{jid}"


def scratch_dir(run: Path, jid: str) -> Path:
    """Return where extract threads create files before moving them into the stage."""
    return run / WORK_DIR / f"stage-{jid}.scratch"


def trash_dir(run: Path, jid: str) -> Path:
    """Return where a finished restore parks the replaced tree until it is purged."""
    return run / WORK_DIR / f"trash-{jid}"


def old_dir(run: Path, jid: str) -> Path:
    """Return the folder the replaced tree of restore ``jid`` is moved into."""
    return run / WORK_DIR / f"old-{jid}"


def write_journal(run: Path, state: Mapping[str, object]) -> None:
    """Durably record a restore's state."""
    atomic_write_bytes(journal_path(run), json.dumps(state).encode())


def read_journal(run: Path) -> dict[str, Any] | None:
    """Return the journal of an unfinished restore, or None."""
    try:
        data: dict[str, Any] = json.loads(journal_path(run).read_bytes())
    except FileNotFoundError:
        return None
    return data


def top_level_names(run: Path) -> list[str]:
    """Return the run's top-level names that a restore replaces."""
    return sorted(n for n in os.listdir(run) if n not in (ARCHIVES_DIR, WORK_DIR))


def roll_forward(run: Path, state: dict[str, Any]) -> None:
    """Finish a swap from any intermediate point; safe to repeat."""
    jid = state["id"]
    old, stage = old_dir(run, jid), stage_dir(run, jid)
    old.mkdir(exist_ok=True)
    for name in state["old"]:
        src, dst = run / name, old / name
        if os.path.lexists(src) and not os.path.lexists(dst):
            _make_movable(src)
            os.rename(src, dst)
    for name in state["new"]:
        src, dst = stage / name, run / name
        if not os.path.lexists(src):
            continue
        if os.path.lexists(dst):
            # Something appeared in the run during the swap; keep it beside the old tree.
            os.rename(dst, old / f"{name}.stray-{os.getpid()}")
        os.rename(src, dst)
    for name, mode in state.get("modes", {}).items():
        os.chmod(run / name, mode)
    for folder in (run, old, stage):
        if folder.exists():
            fsync_dir(folder)
    state["state"] = SWAPPED
    write_journal(run, state)


def _make_movable(path: Path) -> None:
    """Give a folder its owner's write bit: moving a folder to a new parent rewrites its ``..``.

    Only folders about to be replaced get here, and they are deleted afterwards.
    """
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IWUSR:
        os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)


def finish(run: Path, state: dict[str, Any], *, defer_delete: bool = False) -> None:
    """Delete what a completed swap left behind, then the journal.

    With ``defer_delete`` the replaced tree is only renamed to ``trash-<id>`` (instant), so
    the caller can report success first and call ``purge_trash`` afterwards.
    """
    jid = state["id"]
    old = old_dir(run, jid)
    if defer_delete and old.exists():
        os.rename(old, trash_dir(run, jid))
    remove_tree(old)
    remove_tree(stage_dir(run, jid))
    remove_tree(scratch_dir(run, jid))
    clear_journal(run)


def purge_trash(run_dir: Path) -> int:
    """Delete the trees replaced by earlier restores; return how many were removed."""
    work = Path(run_dir) / WORK_DIR
    names = [n for n in os.listdir(work) if n.startswith("trash-")] if work.is_dir() else []
    for name in names:
        remove_tree(work / name)
    return len(names)


def clear_journal(run: Path) -> None:
    """Remove the journal, durably."""
    with contextlib.suppress(FileNotFoundError):
        journal_path(run).unlink()
    fsync_dir(run / WORK_DIR)


def _remove_stale(run: Path) -> int:
    removed = 0
    folder = run / ARCHIVES_DIR
    if folder.is_dir():
        for name in os.listdir(folder):
            if name.startswith(".tmp-"):
                with contextlib.suppress(FileNotFoundError):
                    (folder / name).unlink()
                removed += 1
    work = run / WORK_DIR
    for name in os.listdir(work):
        if name.startswith(("stage-", "old-", "trash-")):
            remove_tree(work / name)
            removed += 1
        elif name.startswith(f".{JOURNAL}.tmp-"):
            (work / name).unlink()
    return removed


def recover_locked(run: Path) -> RecoverResult:
    """Finish or undo an interrupted restore; the caller holds the run lock."""
    work_dir(run)
    state = read_journal(run)
    action = "none"
    if state is not None:
        if state["state"] == STAGING:
            remove_tree(stage_dir(run, state["id"]))
            remove_tree(scratch_dir(run, state["id"]))
            clear_journal(run)
            action = "rolled_back"
        elif state["state"] == SWAPPING:
            roll_forward(run, state)
            finish(run, state)
            action = "rolled_forward"
        else:
            finish(run, state)
            action = "cleaned"
    removed = _remove_stale(run)
    if action == "none" and removed:
        action = "cleaned"
    return RecoverResult(action, removed)


def recover_run(run_dir: Path) -> RecoverResult:
    """Take the run lock and recover it."""
    run = require_run(run_dir)
    with run_lock(run):
        return recover_locked(run)


def needs_recovery(run: Path) -> bool:
    """Tell whether an interrupted restore left a journal behind."""
    return journal_path(run).exists()
