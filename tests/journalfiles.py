"""The restore journal and state folders as plain files, for tests that plant or inspect them.

Tests write journals the way a crash (or someone with write access to the run) leaves them:
as bytes in ``.runarchive/journal.json``. They never go through the library's own writer, so
what the library reads back is exactly what is planted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runarchive.core.journal import JOURNAL, SWAPPED, SWAPPING
from runarchive.core.names import ARCHIVES_DIR, WORK_DIR

__all__ = [
    "SWAPPED",
    "SWAPPING",
    "old_dir",
    "read_journal",
    "scratch_dir",
    "stage_dir",
    "top_level_names",
    "write_journal",
]


def journal_file(run: Path) -> Path:
    return run / WORK_DIR / JOURNAL


def read_journal(run: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(journal_file(run).read_bytes())
    except FileNotFoundError:
        return None
    return data


def write_journal(run: Path, state: dict[str, Any]) -> None:
    (run / WORK_DIR).mkdir(mode=0o700, exist_ok=True)
    journal_file(run).write_text(json.dumps(state))


def stage_dir(run: Path, jid: str) -> Path:
    return run / WORK_DIR / f"stage-{jid}"


def scratch_dir(run: Path, jid: str) -> Path:
    return run / WORK_DIR / f"stage-{jid}.scratch"


def old_dir(run: Path, jid: str) -> Path:
    return run / WORK_DIR / f"old-{jid}"


def top_level_names(run: Path) -> list[str]:
    return sorted(n for n in os.listdir(run) if n not in (ARCHIVES_DIR, WORK_DIR))
