"""Run ids to run directories under the runs root.

Two layouts are supported: flat ``<root>/<runid>`` and WEPPcloud's sharded
``<root>/<runid[:2]>/<runid>``; ``auto`` tries flat first, then sharded. Run ids are validated
(``^[A-Za-z0-9_.;-]+$``, not ``.``/``..``) before they touch the filesystem, and a shard that
would be ``.`` or ``..`` (run ids starting with dots) is refused, so no id can leave the root.
"""

from __future__ import annotations

from pathlib import Path

from runarchive.core.errors import InvalidInput, NotFound
from runarchive.core.names import validate_runid

from .config import Settings


def _candidates(root: Path, runid: str, layout: str) -> list[Path]:
    shard = runid[:2]
    sharded = [] if shard in {".", ".."} else [root / shard / runid]
    if layout == "flat":
        return [root / runid]
    if layout == "sharded":
        return sharded
    return [root / runid, *sharded]


def run_dir_candidates(settings: Settings, runid: str) -> list[Path]:
    """Return where run ``runid`` may live, in lookup order (after validating the id)."""
    validate_runid(runid)
    if settings.runs_root is None:
        raise InvalidInput("No runs root configured: set RUNARCHIVE_RUNS_ROOT or --runs-root.")
    return _candidates(Path(settings.runs_root), runid, settings.run_layout)


def resolve_run(settings: Settings, runid: str) -> Path:
    """Return the directory of run ``runid``; raise InvalidInput or NotFound."""
    for candidate in run_dir_candidates(settings, runid):
        if candidate.is_dir():
            return candidate
    raise NotFound(f"Run {runid} not found.")  # not where: clients must not learn server paths


def find_run(settings: Settings, runid: str) -> Path | None:
    """Return the run directory when this host can see it, else None (never raises)."""
    try:
        return resolve_run(settings, runid)
    except (InvalidInput, NotFound):
        return None
