"""``runarchive pin``, ``unpin`` and ``prune``: which archives of a run are kept.

The rules themselves are the core's (``pins``, ``retention``, ``prune``); these commands parse
the options once, record the action in the audit log and print the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runarchive.core import MAX_KEEP, human_bytes

from .audit_commands import audited
from .common import RUN_DIR, F, emit, json_option, lock_options, reporting, service_rules

if TYPE_CHECKING:
    from runarchive.core import Plan


def _pin(run_dir: Path, name: str, pinned: bool, as_json: bool) -> None:
    from runarchive.core import set_pinned

    with reporting(as_json, ""), audited(run_dir, "pin" if pinned else "unpin", name):
        now = set_pinned(run_dir, name, pinned)
    word = "pinned" if now else "unpinned"
    emit(as_json, {"name": name, "pinned": now}, f"Archive {word}: {name}")


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@json_option
def pin(run_dir: Path, name: str, as_json: bool) -> None:
    """Pin archive NAME of RUN_DIR: never pruned, and not deleted until unpinned."""
    _pin(run_dir, name, True, as_json)


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@json_option
def unpin(run_dir: Path, name: str, as_json: bool) -> None:
    """Unpin archive NAME of RUN_DIR."""
    _pin(run_dir, name, False, as_json)


def _keep_option(rule: str, text: str) -> Callable[[F], F]:
    flag = "--" + rule.replace("_", "-")
    return click.option(flag, rule, type=click.IntRange(0, MAX_KEEP), default=None, help=text)


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@_keep_option("keep_last", "Keep the N newest archives.")
@_keep_option("keep_daily", "Keep the newest archive of each of the last N UTC days with one.")
@_keep_option("keep_weekly", "Keep the newest archive of each of the last N ISO weeks with one.")
@_keep_option("keep_monthly", "Keep the newest archive of each of the last N months with one.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@lock_options
@json_option
def prune(
    run_dir: Path,
    dry_run: bool,
    redis_url: str | None,
    no_locks: bool,
    as_json: bool,
    **keep: int | None,
) -> None:
    """Remove the archives of RUN_DIR that the retention policy does not keep.

    The --keep-* options, when any is given, are the policy (a missing one is 0); else the
    run's own policy, else the site default (RUNARCHIVE_KEEP_*); with none nothing is removed.
    Pinned archives are always kept. Days, weeks and months are UTC calendar ones.
    """
    from runarchive.core import parse_policy, plan_prune, policy_from_env, prune_archives

    with reporting(as_json, ""):
        given = {rule: value for rule, value in keep.items() if value is not None}
        policy = parse_policy(given, partial=True) if given else None
        site = policy_from_env()
        if dry_run:
            plan = plan_prune(run_dir, policy=policy, site_default=site)
        else:
            with (
                audited(run_dir, "prune") as note,
                service_rules(run_dir, "prune", redis_url, no_locks) as hold,
            ):
                announce = hold.archive_pruned if hold is not None else None
                plan = prune_archives(
                    run_dir,
                    policy=policy,
                    site_default=site,
                    on_removed=(lambda name, size: announce(name)) if announce else None,
                )
                note.bytes = plan.bytes_freed
                removed = [c.name for c in plan.remove]
                note.detail = f"removed: {', '.join(removed)}" if removed else None
    payload = {**plan.to_dict(), "dry_run": dry_run,
               "reasons": {k.name: list(k.reasons) for k in plan.keep}}  # fmt: skip
    emit(as_json, payload, _prune_text(plan, dry_run))


def _prune_text(plan: Plan, dry_run: bool) -> str:
    lines = [f"keep {len(plan.keep)} archive(s):"]
    lines += [f"  {k.name}  ({', '.join(k.reasons)})" for k in plan.keep]
    verb = "would remove" if dry_run else "removed"
    lines.append(f"{verb} {len(plan.remove)} archive(s):")
    lines += [f"  {c.name}" for c in plan.remove]
    freed = "would free" if dry_run else "freed"
    lines.append(f"{freed} {human_bytes(plan.bytes_freed)}")
    return "\n".join(lines)


COMMANDS = [pin, unpin, prune]
