"""``runarchive fork RUN_DIR NAME NEW_RUN_DIR``: an archive restored into a new run folder.

A command of its own module so ``cli/__init__.py`` only registers it. Like every local
command it imports only click and the core (``core.fork_archive``): no Redis, no RQ. It needs
none: a fork reads one published archive (no run lock, no ``.nodb`` lock) and the new run
appears by a rename that refuses to replace anything, so a fork by the service into the same
name at the same moment loses or wins cleanly, never mixes.

NEW_RUN_DIR is taken as typed: its last component is the new run's id (validated, never
collapsed: ``x/..`` is refused, not read as ``.``), its parent (relative to the working
directory, links resolved as the operator typed them) must exist. The source's absolute path
is rewritten to the new run's in the new run's ``.nodb`` files before it appears, as the
service's default post-fork hook does (``--keep-nodb-paths`` leaves them as archived).

Exit codes (``exits.py``): 0 made; 2 a bad name, or NEW_RUN_DIR already exists (file, link or
folder); 1 the archive is missing, damaged or unsafe, or no space.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .audit_commands import audited
from .common import RUN_DIR, emit, reporting

if TYPE_CHECKING:
    from runarchive.core import ForkStage

NEW_RUN_DIR = click.Path(path_type=Path)  # as typed: its name is the new run's id


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@click.argument("new_run_dir", type=NEW_RUN_DIR)
@click.option(
    "--allow-external-links", is_flag=True,
    help="Restore symlinks that point outside the run (refused by default).",
)  # fmt: skip
@click.option(
    "--keep-nodb-paths", is_flag=True,
    help="Leave the source run's path in the new run's .nodb files as archived.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def fork(
    run_dir: Path, name: str, new_run_dir: Path, allow_external_links: bool,
    keep_nodb_paths: bool, as_json: bool,
) -> None:  # fmt: skip
    """Make NEW_RUN_DIR, a new run holding exactly archive NAME of RUN_DIR.

    NEW_RUN_DIR must not exist; its name is the new run's id. The run is built beside it and
    appears whole, or not at all. RUN_DIR is not changed, and the new run has no archives.
    """

    with (
        reporting(as_json, "forking") as progress,
        audited(run_dir, "fork", name, f"into {new_run_dir.name}") as note,
    ):
        from runarchive.core import fork_archive, rewrite_run_paths

        sources = [str(run_dir), os.path.realpath(run_dir)]

        def rewrite(stage: ForkStage) -> None:
            rewrite_run_paths(stage, sources)

        result = fork_archive(
            run_dir, name, new_run_dir.parent, new_run_dir.name, progress=progress,
            allow_external_links=allow_external_links,
            before_publish=None if keep_nodb_paths else rewrite,
        )  # fmt: skip
        note.bytes = result.bytes_total
    text = (
        f"Fork complete: {result.runid} from {result.name} at {result.path} ({result.files} files)"
    )
    text += "".join(f"\nwarning: {w}" for w in result.warnings)
    emit(as_json, result, text)
    sys.stdout.flush()


COMMANDS = [fork]
