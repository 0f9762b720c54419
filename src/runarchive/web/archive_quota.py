"""Whose quotas an archive request counts against, and the list's ``usage`` block.

The jobs layer checks and reserves (``jobs.reservation``); only the web layer knows owners.
A run's owners are its ``RunAccess`` users (an admin archiving someone's run counts against
its owners, not against the admin). Each owner's limit is their own override in the accounts
database (``users.quota_bytes``/``quota_count``, each NULL: the site's
``RUNARCHIVE_QUOTA_OWNER_*``), over every run granted to them that this host can locate. A
run with no owner (reached through a host policy only) has only the site's per-run quota.

The refusal names the owner as the requester reads it: ``Your runs`` for the requester's own
limit, ``The runs of ana`` for a co-owner's.

``usage`` in the list is the run's own: its archives, its bytes outside ``archives/`` (the
core's cached walk), the run's quota (``quota_bytes``/``quota_count``: the site's per-run
setting, null without one) and the free bytes of the archives' disk.
"""

from __future__ import annotations

from collections.abc import Sequence

from runarchive.core import ArchiveInfo, Limit, RunRef, measure_usage
from runarchive.jobs import OwnerQuota, find_run

from . import accounts
from .access import user
from .db import db
from .jobs_context import deployment
from .models import User


def user_limit(who: User, site: Limit) -> Limit:
    """Return ``who``'s quota on all their runs' archives: their override, else the site's."""
    return Limit(
        site.bytes if who.quota_bytes is None else who.quota_bytes,
        site.count if who.quota_count is None else who.quota_count,
    )


def owner_quotas(runid: str) -> list[OwnerQuota]:
    """Return the limited owners of run ``runid``, each with every run of theirs located."""
    settings = deployment().settings
    session = db().session
    me = user()
    found = []
    for owner in accounts.owners_of(session, runid):
        limit = user_limit(owner, settings.owner_limit)
        if limit.unlimited:
            continue
        runs = tuple(
            run
            for other in accounts.runs_of(session, owner)
            if (run := find_run(settings, other)) is not None
        )
        mine = me is not None and me.id == owner.id
        subject = "Your runs" if mine else f"The runs of {owner.name}"
        found.append(OwnerQuota(owner.name, limit, runs, subject))
    return found


def usage_block(run: RunRef, rows: Sequence[ArchiveInfo]) -> dict[str, int | None]:
    """Return the list's ``usage`` of a run whose archives were just listed (``rows``)."""
    return measure_usage(run, rows).as_json(deployment().settings.run_limit)
