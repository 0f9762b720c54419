"""Quotas from the command line: the local ``archive``'s run limit, and ``users quota``/``list``.

The local ``runarchive archive`` has no owner (it runs as whoever can write the folder), so it
honours the site's *per-run* quota only (``RUNARCHIVE_QUOTA_RUN_BYTES``/``…_COUNT``): checked
before any work against the run's archives plus the estimate, and the rest of the limit
handed to the core as the archive's byte budget. Owner quotas are the service's (the
accounts database and the Redis reservation); ``users quota`` sets a user's override there.

This module is imported by a local command, so it imports only click and the core's face at
the top; the ``users`` subcommands load the web layer when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import click

from runarchive.core import (
    budget_for,
    check_quota,
    human_bytes,
    measure_usage,
    parse_count,
    parse_size,
    run_limit_from_env,
)

from .exits import reporting

F = TypeVar("F", bound=Callable[..., Any])
Options = Callable[[F], F]
Opener = Callable[[Path | None, str | None], AbstractContextManager[Any]]


def local_budget(run_dir: Path) -> int | None:
    """Refuse (QuotaExceeded) an archive of ``run_dir`` over the site's per-run quota; return
    its byte budget (None: no byte limit)."""
    limit = run_limit_from_env()
    if limit.unlimited:
        return None
    usage = measure_usage(run_dir, fresh=True)
    check_quota(
        f"Run {run_dir.name}", usage.archives_bytes, usage.archives_count, usage.estimate, limit
    )
    return budget_for(usage.archives_bytes, limit)


def _shown(quota_bytes: int | None, quota_count: int | None) -> str:
    size = "site default" if quota_bytes is None else human_bytes(quota_bytes)
    count = "site default" if quota_count is None else str(quota_count)
    return f"bytes {size}, archives {count}"


def users_quota_command(database_options: Options[Any], session: Opener) -> click.Command:
    """Build ``users quota`` with the web commands' database options and session opener
    (passed in: ``web_commands`` registers this module's commands, so it cannot be imported
    from here)."""

    @click.command("quota")
    @click.argument("name")
    @click.option(
        "--bytes",
        "size",
        default=None,
        metavar="B",
        help="Archive bytes over all the user's runs: 10G, 500M … or none (the site's).",
    )
    @click.option("--count", default=None, metavar="N",
                  help="Archives over all the user's runs, or none (the site's).")  # fmt: skip
    @database_options
    def users_quota(
        name: str, size: str | None, count: str | None, data_dir: Path | None,
        database_url: str | None,
    ) -> None:  # fmt: skip
        """Set user NAME's own archive quota over all their runs (shows it without options).

        The override replaces the site's RUNARCHIVE_QUOTA_OWNER_BYTES/_COUNT for this user;
        "none" clears one, back to the site's.
        """
        from runarchive.web import accounts

        with reporting(detail=False):
            new_bytes = parse_size(size) if size is not None else None
            new_count = parse_count(count) if count is not None else None
        with reporting(detail=False), session(data_dir, database_url) as opened:
            user = accounts.require_user(opened, name)
            if size is not None or count is not None:
                accounts.set_quota(
                    opened,
                    user,
                    new_bytes if size is not None else user.quota_bytes,
                    new_count if count is not None else user.quota_count,
                )
            shown = _shown(user.quota_bytes, user.quota_count)
        click.echo(f"quota of {name}: {shown}")

    return users_quota


def users_list_command(database_options: Options[Any], session: Opener) -> click.Command:
    """Build ``users list`` (name, admin, quota override, runs owned)."""

    @click.command("list")
    @database_options
    def users_list(data_dir: Path | None, database_url: str | None) -> None:
        """List the users: name, admin, their archive quota override and how many runs they own."""
        from runarchive.web import accounts

        with reporting(detail=False), session(data_dir, database_url) as opened:
            rows = accounts.list_users(opened)
            if not rows:
                click.echo("no users")
                return
            click.echo(f"{'NAME':<20}  {'ADMIN':<5}  {'QUOTA BYTES':>12}  {'ARCHIVES':>8}  RUNS")
            for user in rows:
                size = "-" if user.quota_bytes is None else human_bytes(user.quota_bytes)
                count = "-" if user.quota_count is None else str(user.quota_count)
                runs = len(accounts.runs_of(opened, user))
                admin = "yes" if user.is_admin else "no"
                click.echo(f"{user.name:<20}  {admin:<5}  {size:>12}  {count:>8}  {runs}")

    return users_list
