"""The line ``runarchive list`` adds while the run's last restore can be undone.

Said in the list because that is where a user looks before acting on a run: an archive or a
restore ends the undo, so knowing it is there (and until when, and the disk it holds) is part
of choosing what to do next. The facts are the API list's ``undo`` object (``core.undo_info``),
so the CLI and the dashboard cannot disagree; only the wording is the CLI's.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from runarchive.core import human_bytes

if TYPE_CHECKING:
    from runarchive.core import UndoInfo

MOMENT = "%Y-%m-%d %H:%M:%S UTC"  # the list's "created (UTC)" column, with its zone said


def _moment(when: datetime | None) -> str:
    return when.strftime(MOMENT) if when is not None else "an unknown time"


def undo_line(info: UndoInfo) -> str | None:
    """Return "Undo available: restore of NAME at T, expires T, keeps N" (None: no undo)."""
    if not info.available:
        return None
    return (
        f"Undo available: restore of {info.restored} at {_moment(info.at)}, expires "
        f"{_moment(info.expires)}, keeps {human_bytes(info.disk)} (runarchive undo RUN_DIR)"
    )
