"""Prune: remove the archives a retention policy does not keep (``retention`` decides).

``plan_prune`` answers what a prune would do (a dry run: nothing is touched, no lock taken).
``prune_archives`` does it under the run lock:

1. recover a pending restore first (as every mutating operation);
2. read the pins and the run's policy (strictly, ``pins``/``runpolicy``: a file that fails
   validation refuses the prune with ``UnsafeRun`` and nothing is removed), scan ``archives/``
   once by handle and plan (``retention.plan_retention``); with something to remove, refuse a
   read-only run (``ReadOnlyRun``);
3. remove the planned archives one at a time, oldest first: each is unlinked only if the name
   still names the file that was planned (same inode: a file swapped in meanwhile is left),
   then the folder is fsynced and ``on_removed(name, size)`` is called.

Failure semantics: an unlink is atomic, so a prune killed at any instant leaves every archive
either whole and listed or gone; what is left is a prefix of the plan (the oldest removed
first), and running prune again finishes it. Pins and the policy are only read. Only regular
files are candidates (anything else named ``*.zip`` is left for a person).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from .catalog import scan_archives
from .errors import RunArchiveError
from .journal import recover_locked
from .names import archive_created
from .pins import read_pins
from .retention import Candidate, Plan, Policy, plan_retention
from .rundir import RunDir, open_run
from .runlock import run_lock
from .runpolicy import effective_policy, read_run_policy

OnRemoved = Callable[[str, int], None]


def _plan(
    run: RunDir, policy: Policy | None, site_default: Policy | None
) -> tuple[Plan, dict[str, os.stat_result]]:
    """Plan from one scan of ``archives/``; return the plan and what each name was then."""
    chosen = policy if policy is not None else effective_policy(read_run_policy(run), site_default)
    pins = read_pins(run)
    archives = run.archives()
    if archives is None:
        return plan_retention([], pins, chosen), {}
    with archives:
        found = [(name, st) for name, st in scan_archives(archives) if stat.S_ISREG(st.st_mode)]
    candidates = [Candidate(n, archive_created(n, st.st_mtime), st.st_size) for n, st in found]
    return plan_retention(candidates, pins, chosen), dict(found)


def plan_prune(
    run_dir: os.PathLike[str] | str,
    *,
    policy: Policy | None = None,
    site_default: Policy | None = None,
) -> Plan:
    """Say what a prune would keep and remove; touch nothing.

    ``policy`` (given) wins over the run's own policy, which wins over ``site_default``.
    """
    with open_run(run_dir) as run:
        return _plan(run, policy, site_default)[0]


def prune_archives(
    run_dir: os.PathLike[str] | str | Path,
    *,
    policy: Policy | None = None,
    site_default: Policy | None = None,
    on_removed: OnRemoved | None = None,
    before_remove: Callable[[], None] | None = None,
) -> Plan:
    """Remove what the policy does not keep (see the module's steps); return the plan.

    ``before_remove`` is called once before the first removal (a job claims its point of no
    cancel there). Archives are removed oldest first.
    """
    with open_run(run_dir) as run, run_lock(run) as work:
        recover_locked(run, work)
        plan, stats = _plan(run, policy, site_default)
        if not plan.remove:
            return plan  # nothing to do, so nothing to refuse (a read-only run archives too)
        run.require_writable()
        if before_remove is not None:
            before_remove()
        archives = run.archives()
        assert archives is not None  # there is something to remove
        with archives:
            for cand in reversed(plan.remove):
                try:
                    now = archives.lstat(cand.name)
                except FileNotFoundError:
                    continue  # gone already (removed by hand)
                if not os.path.samestat(now, stats[cand.name]):
                    raise RunArchiveError(
                        f"Archive {cand.name} changed while being pruned; it was left as it is."
                    )
                archives.unlink(cand.name)
                archives.fsync()
                if on_removed is not None:
                    on_removed(cand.name, cand.size)
        return plan
