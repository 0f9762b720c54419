"""The restore journal and state folders as plain files, for tests that plant or inspect them.

Tests write journals the way a crash (or someone with write access to the run) leaves them:
as bytes in ``archives/.runarchive/journal.json``; a restore's transient folders sit at the
run's top as ``.runarchive-stage-<id>`` and ``.runarchive-old-<id>``. They never go through
the library's own writer, so what the library reads back is exactly what is planted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runarchive.core.journal import JOURNAL, SWAPPED, SWAPPING
from runarchive.core.names import ARCHIVES_DIR, STATE_DIR, is_reserved_top

__all__ = [
    "SWAPPED",
    "SWAPPING",
    "kept_undo",
    "leftovers",
    "old_dir",
    "read_journal",
    "scratch_dir",
    "stage_dir",
    "top_level_names",
    "undo_record",
    "work_dir",
    "write_journal",
]


def work_dir(run: Path) -> Path:
    return run / ARCHIVES_DIR / STATE_DIR


def journal_file(run: Path) -> Path:
    return work_dir(run) / JOURNAL


def read_journal(run: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(journal_file(run).read_bytes())
    except FileNotFoundError:
        return None
    return data


def write_journal(run: Path, state: dict[str, Any]) -> None:
    work_dir(run).mkdir(mode=0o700, parents=True, exist_ok=True)
    journal_file(run).write_text(json.dumps(state))


def stage_dir(run: Path, jid: str) -> Path:
    return run / f".runarchive-stage-{jid}"


def scratch_dir(run: Path, jid: str) -> Path:
    return run / f".runarchive-stage-{jid}.scratch"


def old_dir(run: Path, jid: str) -> Path:
    return run / f".runarchive-old-{jid}"


def top_level_names(run: Path) -> list[str]:
    return sorted(n for n in os.listdir(run) if not is_reserved_top(n))


def undo_record(run: Path) -> dict[str, Any] | None:
    """The undo record as planted or left (None when there is none)."""
    try:
        data: dict[str, Any] = json.loads((work_dir(run) / "undo.json").read_bytes())
    except FileNotFoundError:
        return None
    return data


def kept_undo(run: Path) -> list[str]:
    """The undo record and the tree it names, when both are there: what a restore keeps."""
    record = undo_record(run)
    if record is None or not (work_dir(run) / f"undo-{record['id']}").is_dir():
        return []
    return ["undo.json", f"undo-{record['id']}"]


def leftovers(run: Path) -> list[str]:
    """Our transient folders at the run's top and everything in our state folder but the lock
    and a restore's kept undo (record and tree, consistent): what nobody should find there."""
    top = [n for n in os.listdir(run) if n.startswith(".runarchive")]
    work = work_dir(run)
    kept = {"lock", *kept_undo(run)}
    inside = [n for n in os.listdir(work) if n not in kept] if work.is_dir() else []
    return sorted(top + inside)
