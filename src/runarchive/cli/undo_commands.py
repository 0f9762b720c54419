"""``runarchive undo``: put back exactly what the run's last restore replaced."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .audit_commands import audited
from .common import RUN_DIR, emit, json_option, lock_options, reporting, service_rules


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@lock_options
@json_option
def undo(run_dir: Path, redis_url: str | None, no_locks: bool, as_json: bool) -> None:
    """Put back exactly what the last restore of RUN_DIR replaced (exit 3: nothing to undo).

    Kept until the next archive, restore or undo of the run, or RUNARCHIVE_UNDO_TTL seconds
    (default 7 days).
    """
    from runarchive.core import purge_trash, undo_restore

    with (
        reporting(as_json, "undoing") as progress,
        audited(run_dir, "undo") as note,
        service_rules(run_dir, "undo", redis_url, no_locks) as hold,
    ):
        result = undo_restore(run_dir, progress=progress, defer_delete=True)
        note.archive = result.restored
        if hold is not None:
            hold.undo_complete(result.restored)
    scope = f" ({', '.join(result.paths)})" if result.partial else ""
    emit(as_json, result, f"Undo complete: the restore of {result.restored}{scope} is undone")
    sys.stdout.flush()
    purge_trash(run_dir)  # what the undo replaced, after the answer


COMMANDS = [undo]
