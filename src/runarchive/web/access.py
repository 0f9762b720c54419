"""Who may do what to a run.

* **Read** (dashboard, list, download, status stream, job status): the run's owners
  (``RunAccess`` rows), admins, and anyone — logged in or not — when the run folder holds a
  ``PUBLIC`` marker file.
* **Write** (archive, restore, delete, job info with its traceback, cancel): owners and admins
  only.

A host application can add its own rules with an access policy (``init_app(app,
access_policy=…)``, or the ``RUNARCHIVE_ACCESS_POLICY`` app config of ``create_app``): a
callable ``policy(runid) -> "write" | "read" | "deny" | None`` called inside the request (so it
may read the host's own session or headers). ``"write"``/``"read"`` grant that access;
``"deny"`` refuses (403), whatever the rules above say; ``None`` leaves the decision to the rules
above — in a host app that uses its own login there are no runarchive users then, so ``None``
means "anonymous": a ``PUBLIC`` run is readable, any other answers 401, which sends a browser
to the host's login. The policy may also ``abort()`` with a response of its own, which is sent
as it is. See ``docs/integration.md``.

Who "the user" is: with runarchive's own login, the session's or API token's user; with the
host's login, only the user of a personal API token (``Authorization: Bearer``) — the host's
users reach runarchive through the policy alone.

A policy that takes a ``config`` keyword (or ``**kwargs``) is called ``policy(runid,
config=config)``: the WEPPcloud routes (``wepp.py``) pass the URL's config segment
(``/runs/<runid>/<config>/…``), our own routes pass ``None``; a policy taking only the run id
keeps working unchanged.

Order of checks, so nothing leaks to people who may not see the run: the run id is validated
first (400, before any filesystem access); then the rule is applied (401 when nobody is logged
in, 403 for another user); only a permitted caller learns that a run does not exist (404).

Each check runs once per request: the id is validated once, the host policy and the ownership
query are asked once, the run folder is looked up once, and the ``RunView`` returned carries
the located run (``RunView.run``, a ``RunRef``) down to the jobs layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from flask import current_app, g
from flask_login import current_user  # type: ignore[import-untyped]

from runarchive.core import NotFound, RunArchiveError, RunRef, open_run, validate_runid
from runarchive.jobs import Trigger, find_run, job_status

from . import accounts
from .db import db
from .errors import Forbidden, Unauthorized
from .jobs_context import deployment, jobs
from .models import User
from .mount import mount

PUBLIC_MARKER = "PUBLIC"
POLICY = "RUNARCHIVE_ACCESS_POLICY"
TOKEN_USER = "runarchive_token_user"  # g key: the API token's user, under the host's login
DENY = "deny"


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as the current user may see it."""

    runid: str
    run: RunRef | None  # None: this host cannot see the run
    public: bool
    can_read: bool
    can_write: bool
    denied: bool = False  # the host's policy said "deny"

    @property
    def run_dir(self) -> Path | None:
        """The run's folder, or None when this host cannot see it."""
        return self.run.path if self.run is not None else None


def user() -> User | None:
    """Return the logged-in user (session or API token), or None."""
    if not mount().own_login:  # the host's login: current_user is the host's, not ours
        token_user: User | None = g.get(TOKEN_USER)
        return token_user
    if current_user.is_authenticated:
        found: User = current_user._get_current_object()
        return found
    return None


def is_public(run_dir: RunRef | Path | None) -> bool:
    """Tell whether the run folder holds the ``PUBLIC`` marker."""
    if run_dir is None:
        return False
    try:
        with open_run(run_dir) as run:
            return run.is_file(PUBLIC_MARKER)  # a link named PUBLIC does not count
    except (RunArchiveError, OSError):
        return False


def may_write(who: User | None, runid: str) -> bool:
    """Tell whether ``who`` owns run ``runid`` or is an admin.

    A grant a fork made is settled first (``accounts.settle_forks``): it counts once its job
    made the run, and is gone once the job ended without it.
    """
    if who is None:
        return False
    if who.is_admin:
        return True
    session = db().session
    accounts.settle_forks(session, fork_outcome, runid=runid)
    return accounts.owns_run(session, who, runid)


def fork_outcome(job_id: str, runid: str) -> bool | None:
    """Tell whether fork job ``job_id`` made run ``runid``: True, False, or None while unknown.

    Its final trigger decides. A job Redis no longer knows (its results expired) made the run
    if the run exists: the fork's rename never replaces anything, so a run there after a
    failed fork was made by someone else only if the job failed for that very reason, which
    its trigger said while it was kept. Redis down: not known yet.
    """
    try:
        info = job_status(jobs(), job_id)
    except NotFound:
        return find_run(deployment().settings, runid) is not None
    except (RunArchiveError, redis.exceptions.RedisError):
        return None
    trigger = info.get("trigger")
    if trigger is None:
        return None
    return bool(trigger == Trigger.FORK_COMPLETE)


def takes_config(policy: Callable[..., str | None]) -> bool:
    """Tell whether a host policy accepts the ``config`` keyword (or any keyword)."""
    try:
        params = inspect.signature(policy).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD or (p.name == "config" and p.kind in keyword)
        for p in params
    )


def _host_grant(runid: str, config: str | None) -> str | None:
    policy: Callable[..., str | None] | None = current_app.config.get(POLICY)
    if policy is None:
        return None
    return policy(runid, config=config) if takes_config(policy) else policy(runid)


def _grant(runid: str, config: str | None) -> tuple[str | None, bool]:
    """Ask the host policy and the ownership rule, once: return the grant and write access."""
    grant = _host_grant(runid, config)
    if grant == DENY:
        return grant, False
    return grant, grant == "write" or may_write(user(), runid)


def view(runid: str, *, config: str | None = None) -> RunView:
    """Evaluate the rules for run ``runid`` (validated) and the current user.

    ``config`` is the WEPPcloud URL's config segment, handed to a host policy that takes it.
    """
    validate_runid(runid)
    run = find_run(deployment().settings, runid)
    public = is_public(run)
    grant, write = _grant(runid, config)
    if grant == DENY:
        return RunView(runid, run, public, False, False, denied=True)
    return RunView(runid, run, public, write or public or grant == "read", write)


def _refuse(runid: str, verb: str, denied: bool) -> None:
    if user() is None and not denied:
        raise Unauthorized("Log in, or send a personal API token (Authorization: Bearer …).")
    raise Forbidden(f"You may not {verb} run {runid}.")


def require_read(runid: str, *, config: str | None = None) -> RunView:
    """Return the run if the current user may read it; raise 400/401/403/404."""
    found = view(runid, config=config)
    if not found.can_read:
        _refuse(runid, "read", found.denied)
    if found.run is None:
        raise NotFound(f"Run {runid} not found.")
    return found


def require_write(runid: str, *, config: str | None = None) -> RunView:
    """Return the run if the current user may change it; raise 400/401/403/404.

    The write rule is decided before the filesystem is touched, as for reading.
    """
    validate_runid(runid)
    grant, write = _grant(runid, config)
    if not write:
        _refuse(runid, "change", grant == DENY)
    run = find_run(deployment().settings, runid)
    if run is None:
        raise NotFound(f"Run {runid} not found.")
    return RunView(runid, run, is_public(run), True, True)
