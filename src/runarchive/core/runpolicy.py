"""A run's own retention policy, kept with the run in ``archives/.runarchive/policy.json``.

``{"keep_daily":n,"keep_last":n,"keep_monthly":n,"keep_weekly":n,"version":1}``: exactly
these keys, each a whole number 0..``retention.MAX_KEEP``, read back strictly
(``statefile``). A run without the file follows the site default (configuration,
``RUNARCHIVE_KEEP_*``); without either nothing is ever pruned. Written atomically under the
run lock, refused on a read-only run; saving an empty policy (every count zero) is stored as
such and keeps everything, whatever the site default says (a run's way to opt out).
"""

from __future__ import annotations

import os

from .errors import InvalidInput, UnsafeRun
from .journal import recover_locked
from .retention import Policy, parse_policy
from .rundir import RunDir, open_run
from .runlock import run_lock
from .statefile import read_state, remove_state, write_state

POLICY_FILE = "policy.json"
_VERSION = 1


def parse_policy_file(value: object) -> Policy:
    """Return the policy of a parsed policy file, or raise UnsafeRun."""
    if not isinstance(value, dict) or value.get("version") != _VERSION:
        raise UnsafeRun(f"{POLICY_FILE}: expected a version 1 policy.")
    try:
        return parse_policy({k: v for k, v in value.items() if k != "version"})
    except InvalidInput as exc:
        raise UnsafeRun(f"{POLICY_FILE}: {exc}") from None


def read_run_policy(run: RunDir) -> Policy | None:
    """Return the run's own policy, or None when it has none."""
    work = run.work()
    if work is None:
        return None
    with work:
        value = read_state(work, POLICY_FILE)
    return None if value is None else parse_policy_file(value)


def run_policy(run_dir: os.PathLike[str] | str) -> Policy | None:
    """Return the own policy of the run at ``run_dir`` (None: it follows the site default)."""
    with open_run(run_dir) as run:
        return read_run_policy(run)


def set_run_policy(run_dir: os.PathLike[str] | str, policy: Policy | None) -> None:
    """Store ``policy`` as the run's own (None: remove it, back to the site default)."""
    with open_run(run_dir) as run, run_lock(run) as work:
        run.require_writable()
        recover_locked(run, work)
        if policy is None:
            remove_state(work, POLICY_FILE)
        else:
            write_state(work, POLICY_FILE, {**policy.to_dict(), "version": _VERSION})


def effective_policy(own: Policy | None, site_default: Policy | None) -> Policy | None:
    """The policy that applies: the run's own, else the site default (None: keep all)."""
    return own if own is not None else site_default
