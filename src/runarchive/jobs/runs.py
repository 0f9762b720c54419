"""Run ids to run directories under the runs root.

Two layouts are supported: flat ``<root>/<runid>`` and WEPPcloud's sharded
``<root>/<runid[:2]>/<runid>``; ``auto`` tries flat first, then sharded. Run ids are validated
(``^[A-Za-z0-9_.;-]+$``, not ``.``/``..``) before they touch the filesystem, and a shard that
would be ``.`` or ``..`` (run ids starting with dots) is refused, so no id can leave the root.

In the ``auto`` layout a folder whose name is as short as a shard (one or two characters)
*is* a shard — a grant on run ``ab`` must not cover every run stored under ``<root>/ab/`` — so
such ids are looked up sharded only. A candidate counts only when it is a real folder
(``lstat``): a link in the runs root is never taken for a run.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runarchive.core import (
    InvalidInput,
    NotFound,
    RunExists,
    RunRef,
    is_dot_component,
    validate_runid,
)

from .settings import Settings


def _candidates(root: Path, runid: str, layout: str) -> list[Path]:
    shard = runid[:2]
    sharded = [] if is_dot_component(shard) else [root / shard / runid]
    if layout == "flat":
        return [root / runid]
    if layout == "sharded" or len(runid) <= 2:
        return sharded
    return [root / runid, *sharded]


def run_dir_candidates(settings: Settings, runid: str) -> list[Path]:
    """Return where run ``runid`` may live, in lookup order (after validating the id)."""
    validate_runid(runid)
    if settings.runs_root is None:
        raise InvalidInput("No runs root configured: set RUNARCHIVE_RUNS_ROOT or --runs-root.")
    return _candidates(Path(settings.runs_root), runid, settings.run_layout)


def locate_run(settings: Settings, runid: str | RunRef) -> RunRef:
    """Validate run id ``runid`` and find its folder, once; raise InvalidInput or NotFound.

    The ``RunRef`` made here is what the layers below are handed (a ``RunRef`` given is
    returned as it is: it was located already).
    """
    if isinstance(runid, RunRef):
        return runid
    root = Path(settings.runs_root or ".")
    for candidate in run_dir_candidates(settings, runid):
        shard_ok = candidate.parent == root or _is_real_dir(candidate.parent)
        if shard_ok and _is_real_dir(candidate):
            return RunRef(runid, candidate)
    raise NotFound(f"Run {runid} not found.")  # not where: clients must not learn server paths


def resolve_run(settings: Settings, runid: str) -> Path:
    """Return the directory of run ``runid``; raise InvalidInput or NotFound."""
    return locate_run(settings, runid).path


def find_run(settings: Settings, runid: str) -> RunRef | None:
    """Return the run when this host can see it, else None (never raises)."""
    try:
        return locate_run(settings, runid)
    except (InvalidInput, NotFound):
        return None


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def new_run_place(settings: Settings, runid: str) -> tuple[Path, bool]:
    """Return the folder a new run ``runid`` goes in, where ``locate_run`` will find it, and
    whether that folder is a shard to make when missing; RunExists when any place is taken.

    Any entry at any candidate — a run, a file, a link, even a dangling one — counts: a fork
    must never shadow (flat before sharded) or sit beside something already named so.
    """
    candidates = run_dir_candidates(settings, runid)
    if not candidates:
        raise InvalidInput(f"Run id {runid!r} cannot be placed in the sharded layout.")
    for candidate in candidates:
        if _lexists(candidate):
            raise RunExists(runid)
    place = candidates[0]
    return place.parent, place.parent != Path(str(settings.runs_root))


def fork_holders(settings: Settings) -> list[Path]:
    """Every folder a fork's stage may be in: the runs root and its shard folders."""
    if settings.runs_root is None:
        return []
    root = Path(settings.runs_root)
    found = [root]
    if settings.run_layout != "flat":
        try:
            with os.scandir(root) as entries:
                found += [root / e.name for e in entries
                          if len(e.name) <= 2 and e.is_dir(follow_symlinks=False)]  # fmt: skip
        except OSError:
            return []
    return found


def _lexists(path: Path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False  # a file where the shard would be: the fork refuses it when it gets there
    return True
