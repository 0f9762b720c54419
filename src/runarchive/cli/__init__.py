"""The ``runarchive`` command line: the core operations, for people (progress bars) and scripts.

Exit codes: 0 success, 1 the operation failed (damage found, unsafe archive, no space…, Redis
configured but unreachable), 2 usage error (bad arguments or names), 3 refused because the run
is busy or locked. With ``--json`` every command prints one JSON document on stdout, errors
included.

``archive``, ``restore``, ``delete`` and ``prune`` obey the service's rules when a Redis URL is
configured (``--redis-url``, ``REDIS_URL`` or ``RUNARCHIVE_REDIS_URL``): refused while a
``.nodb`` lock of the run is held or a job holds the run, else holding the run's slot and
locks while they work (``runarchive.jobs.local``). ``--no-locks`` skips that. Without a URL
they are local only, and RQ and redis-py are not imported for them.

Start-up is part of every local command's time, so this module imports only click and the
core: rich (progress bar, table, styled errors) is imported when something is drawn on a
terminal or an error is printed, and ``--help`` lists the service commands from
``SERVICE_COMMANDS`` rather than importing RQ, redis-py and Flask (a test pins the table to
the real commands).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from runarchive import __version__
from runarchive.cli.audit_commands import audit, audited
from runarchive.cli.exits import exit_with
from runarchive.cli.inside_commands import COMMANDS as INSIDE_COMMANDS
from runarchive.cli.scrub_commands import scrub as scrub_command

# Only what every command needs. Each command imports, from the same face, the operation
# it runs when it runs: ``runarchive.core`` loads its modules on first use, so ``list``
# loads no deflate library or thread pool and ``--help`` neither engine.
from runarchive.core import (
    MAX_COMMENT_CHARS,
    MAX_KEEP,
    Comment,
    LinkMode,
    RunArchiveError,
    human_bytes,
    iso_utc,
    parse_comment,
)

if TYPE_CHECKING:
    from rich.console import Console

    from runarchive.core import Plan, Policy, ProgressCallback, ProgressEvent, RecoverResult

F = TypeVar("F", bound=Callable[..., Any])
# Resolved here: the operator typed it (a link to a run is their choice); below the run,
# the library follows no link at all.
RUN_DIR = click.Path(exists=False, file_okay=False, path_type=Path, resolve_path=True)


@cache
def err() -> Console:
    """The stderr console for progress, notes and errors (rich is imported on first use)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


# Environment variables with which rich treats a stream as a terminal when it is not a tty.
_RICH_TERMINAL_ENV = ("FORCE_TERMINAL", "FORCE_COLOR", "TTY_COMPATIBLE")


def _is_terminal(stream: IO[str], console: Callable[[], Console]) -> bool:
    """Tell whether rich would draw on ``stream``, importing rich only if it might."""
    if not stream.isatty() and not any(v in os.environ for v in _RICH_TERMINAL_ENV):
        return False  # what rich's Console.is_terminal answers in this case, cheaply
    return console().is_terminal


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def json_option(func: F) -> F:
    """Add ``--json`` to a command."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(func)


@contextmanager
def reporting(as_json: bool, label: str) -> Iterator[ProgressCallback | None]:
    """Show a rich progress bar on a terminal; map library errors to exit codes."""
    try:
        if as_json or not _is_terminal(sys.stderr, err):
            yield None
        else:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            with Progress(
                TextColumn(label), BarColumn(), DownloadColumn(binary_units=True),
                TimeRemainingColumn(), console=err(), transient=True,
            ) as bar:  # fmt: skip
                task = bar.add_task(label, total=None)

                def update(event: ProgressEvent) -> None:
                    bar.update(task, completed=event.bytes_done, total=event.bytes_total or None)

                yield update
    except RunArchiveError as exc:
        if as_json:
            click.echo(json.dumps({"error": {"code": exc.code, "message": str(exc)}}))
        else:
            err().print(f"[bold red]error:[/] {exc}", highlight=False)
        exit_with(exc)


def lock_options(func: F) -> F:
    """Add ``--redis-url`` and ``--no-locks`` to a command that changes a run."""
    func = click.option(
        "--no-locks", is_flag=True,
        help="Skip the service's .nodb lock and running-job checks, even with a Redis URL.",
    )(func)  # fmt: skip
    return click.option(
        "--redis-url", envvar=["REDIS_URL", "RUNARCHIVE_REDIS_URL"], default=None,
        help="Redis of the service whose locks and jobs to honour [env REDIS_URL].",
    )(func)  # fmt: skip


@contextmanager
def service_rules(
    run_dir: Path, verb: str, redis_url: str | None, no_locks: bool, archive: str | None = None
) -> Iterator[Any]:
    """Hold the run's slot and ``.nodb`` locks when a Redis URL is configured, else nothing.

    Yields the ``LocalHold`` (which announces the outcome on the run's channel) or None.
    """
    if no_locks or not redis_url or not run_dir.is_dir():  # a missing run: the core says so
        yield None
        return
    from runarchive.jobs.local import hold_run  # only now: local-only commands never load RQ/redis

    with hold_run(redis_url, run_dir, verb, archive) as hold:
        yield hold


def emit(as_json: bool, payload: Any, text: str) -> None:
    """Print a result as JSON or as a human line."""
    click.echo(json.dumps(_jsonable(payload), ensure_ascii=False) if as_json else text)


# Every service command's name and the first paragraph of its help, so that ``--help`` can
# list them without importing the jobs and web layers; tests/test_cli_startup.py pins it.
SERVICE_COMMANDS = {
    "cancel": "Cancel job JOB_ID (exit 0; 3 when it can no longer be canceled; 1 unknown job).",
    "enqueue-archive": "Queue an archive job for run RUNID; print its job id.",
    "enqueue-restore": "Queue a restore of run RUNID from archive NAME; print its job id.",
    "enqueue-undo": "Queue an undo of run RUNID's last restore; print its job id.",
    "job-status": "Print a job's status, times and progress as JSON.",
    "reconcile": "Free the slots of jobs that died and recover the runs they left (this host's "
    "view).",
    "runs": "Grant and revoke run ownership.",
    "serve": "Run the web service (gunicorn); without a Redis URL, also Redis and a worker.",
    "tokens": "Manage personal API tokens.",
    "users": "Manage user accounts.",
    "worker": "Run RQ worker(s) on the runarchive queue (reconciles stale jobs at start).",
}


class _Commands(click.Group):
    """The ``runarchive`` group: the service commands (jobs, web) are imported when named.

    A local command (``archive``, ``list`` …) and ``--help`` so start without importing RQ,
    redis-py or Flask; running a service command imports them.
    """

    def _service(self) -> dict[str, click.Command]:
        from .jobs_commands import COMMANDS
        from .web_commands import COMMANDS as WEB_COMMANDS

        return {command.name or "": command for command in COMMANDS + WEB_COMMANDS}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return a local command, else the service command of that name."""
        return self.commands.get(cmd_name) or self._service().get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return every command name, local and service."""
        return sorted({*self.commands, *SERVICE_COMMANDS})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands as click does, the service ones from ``SERVICE_COMMANDS``."""
        stubs = {name: click.Command(name, help=text) for name, text in SERVICE_COMMANDS.items()}
        click.Group(self.name, commands={**stubs, **self.commands}).format_commands(ctx, formatter)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="runarchive")
def cli() -> None:
    """Crash-safe, verified snapshots of model run directories."""


for _command in INSIDE_COMMANDS:  # ls, cat, extract, diff: inside one archive
    cli.add_command(_command)
cli.add_command(scrub_command)  # every archive verified now, as the periodic scrub does
cli.add_command(audit)  # the audit log; the commands below record into it (audit_commands.py)


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.option("--comment", "-c", default="", help="Up to 40 characters, shown by list.")
@click.option(
    "--links", type=click.Choice([m.value for m in LinkMode]), default=LinkMode.STORE.value,
    envvar="RUNARCHIVE_LINKS", show_default=True, show_envvar=True,
    help="store: symlinks as links; follow: links inside the run as what they point to.",
)  # fmt: skip
@lock_options
@json_option
def archive(
    run_dir: Path, comment: str, links: str, redis_url: str | None, no_locks: bool, as_json: bool
) -> None:
    """Create a new archive of RUN_DIR under RUN_DIR/archives/.

    With --links follow, links that leave the run stay links (never followed) and are named.
    The site's per-run quota (RUNARCHIVE_QUOTA_RUN_BYTES/_COUNT) applies: exit 4 when over it.
    """
    from runarchive.core import policy_from_env, purge_trash

    stored = _comment(comment, as_json)
    with reporting(as_json, ""):
        site = policy_from_env()  # a bad RUNARCHIVE_KEEP_* is a usage error before any work
    pruned: list[str] = []
    with (
        reporting(as_json, "archiving") as progress,
        audited(run_dir, "archive") as note,
        service_rules(run_dir, "archive", redis_url, no_locks) as hold,
    ):
        from runarchive.core import create_archive

        from .quota_commands import local_budget  # the site's per-run quota (no owner here)

        budget = local_budget(run_dir)
        result = create_archive(run_dir, stored, progress=progress, links=links, budget=budget)
        note.archive, note.bytes = result.name, result.size
        if hold is not None:
            hold.archive_ready(result.name)
        prune_error = _prune_after_archive(run_dir, site, hold, pruned)
    text = f"Archive ready: {result.name} ({result.files} files, {human_bytes(result.size)})"
    if result.followed:
        text += f"\nfollowed {result.followed} link{'s' if result.followed != 1 else ''}"
    warnings = list(result.warnings)
    if prune_error is not None:
        warnings.append(f"prune failed (the archive is kept): {prune_error}")
    for warning in warnings:
        text += f"\nwarning: {warning}"
    for skipped in result.skipped:
        text += f"\nwarning: skipped {skipped}"
    text += "".join(f"\nArchive pruned: {name}" for name in pruned)
    emit(as_json, {**_jsonable(result), "warnings": warnings, "pruned": pruned}, text)
    sys.stdout.flush()
    purge_trash(run_dir)  # the undo this archive ended (parked as trash), after the answer


def _prune_after_archive(
    run_dir: Path, site: Policy | None, hold: Any, pruned: list[str]
) -> str | None:
    """Apply the retention policy after an archive, as the service's archive job does; return
    why it failed (the archive stands either way), or None."""
    from runarchive.core import prune_archives

    def removed(name: str, size: int) -> None:
        pruned.append(name)
        if hold is not None:
            hold.archive_pruned(name)

    try:
        prune_archives(run_dir, site_default=site, on_removed=removed)
    except RunArchiveError as exc:
        return str(exc)
    return None


def _comment(comment: str, as_json: bool) -> Comment:
    """Apply the comment rule of every interface once; say on stderr when it was cut."""
    with reporting(as_json, ""):
        parsed = parse_comment(comment)
    if parsed.cut:
        err().print(
            f"note: the comment was cut to {MAX_COMMENT_CHARS} characters: {parsed.text!r}",
            highlight=False, markup=False,
        )  # fmt: skip
    return parsed


@cli.command("list")
@click.argument("run_dir", type=RUN_DIR)
@json_option
def list_cmd(run_dir: Path, as_json: bool) -> None:
    """List the archives of RUN_DIR, newest first."""
    with reporting(as_json, ""):
        from runarchive.core import list_archives

        infos = list_archives(run_dir)
    if as_json:
        emit(True, {"archives": infos}, "")
        return
    if not infos:
        click.echo("No archives yet.")
        return
    rows = [
        (info.name, info.comment, human_bytes(info.size),
         info.created.strftime("%Y-%m-%d %H:%M:%S"), str(info.files), str(info.links),
         "yes" if info.readable else f"NO: {info.error}")
        for info in infos
    ]  # fmt: skip
    heads = ("name", "comment", "size", "created (UTC)", "files", "links", "ok")
    out = _stdout_console
    if not _is_terminal(sys.stdout, out):
        # Piped or redirected: plain aligned columns, nothing cut or wrapped, for scripts.
        widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
        for row in [heads, *rows]:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return
    from rich.table import Column, Table

    table = Table(*heads[1:])
    table.columns.insert(0, Column("name", no_wrap=True))
    for row in rows:
        table.add_row(*row)
    out().print(table)


@cache
def _stdout_console() -> Console:
    """The stdout console for tables and the demo tour (rich is imported on first use)."""
    from rich.console import Console

    return Console()


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@json_option
def verify(run_dir: Path, name: str, as_json: bool) -> None:
    """Check every entry of archive NAME against its CRC and manifest sha256."""
    with reporting(as_json, "verifying") as progress:
        from runarchive.core import verify_archive

        report = verify_archive(run_dir, name, progress=progress)
    lines = [f"{name}: {'OK' if report.ok else 'DAMAGED'} ({report.entries} entries)"]
    lines += [f"  {p}" for p in report.problems]
    emit(as_json, report, "\n".join(lines))
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@click.option(
    "--allow-external-links", is_flag=True,
    help="Restore symlinks that point outside the run (refused by default).",
)  # fmt: skip
@click.option("--yes", "-y", is_flag=True, help="Do not ask before removing newer files.")
@click.option(
    "--path", "paths", multiple=True, metavar="P",
    help="Restore only this file or folder (a trailing / asks for a folder, which becomes "
    "exactly the archive's); repeatable. Everything else in the run stays as it is.",
)  # fmt: skip
@lock_options
@json_option
def restore(
    run_dir: Path, name: str, allow_external_links: bool, yes: bool, paths: tuple[str, ...],
    redis_url: str | None, no_locks: bool, as_json: bool,
) -> None:  # fmt: skip
    """Replace the content of RUN_DIR (all but archives/), or only each --path, with archive
    NAME.

    Files of the run that the archive does not hold are removed; for a whole restore the
    command says how many first, and asks on a terminal unless --yes. What the restore
    replaced is kept: `runarchive undo RUN_DIR` puts it back.
    """
    from runarchive.core import parse_restore_paths

    with reporting(as_json, ""):
        chosen = parse_restore_paths(list(paths)) if paths else None  # refused before any work
    if chosen is None:
        _confirm_removals(run_dir, name, yes, as_json)
    detail = f"paths: {', '.join(chosen.as_list())}" if chosen is not None else None
    with (
        reporting(as_json, "restoring") as progress,
        audited(run_dir, "restore", name, detail) as note,
        service_rules(run_dir, "restore", redis_url, no_locks, name) as hold,
    ):
        from runarchive.core import purge_trash, restore_archive

        result = restore_archive(
            run_dir, name, progress=progress, allow_external_links=allow_external_links,
            defer_delete=True, paths=chosen,
        )  # fmt: skip
        note.bytes = result.bytes_total
        if hold is not None:
            hold.restore_complete(name)
    text = f"Restore complete: {name} ({result.files} files, {result.reused} unchanged)"
    if result.paths:
        text += f"\nrestored only: {', '.join(result.paths)}"
    text += "".join(f"\nwarning: {w}" for w in result.warnings)
    emit(as_json, result, text)
    sys.stdout.flush()
    # The user has the answer; deleting the replaced tree can take its time now.
    purge_trash(run_dir)


def _confirm_removals(run_dir: Path, name: str, yes: bool, as_json: bool) -> None:
    """Say how many files the restore removes; on a terminal ask, unless ``yes``.

    Skipped for ``--json``, which prints nothing of it: the preview is a scan of the run.
    """
    if as_json:
        return
    with reporting(as_json, ""):
        from runarchive.core import preview_restore

        preview = preview_restore(run_dir, name)
    if preview.removes_files == 0:
        return
    n = preview.removes_files
    err().print(
        f"This restore removes {n} file{'s' if n != 1 else ''} created since the archive "
        f"({human_bytes(preview.removes_bytes)}), e.g. {', '.join(preview.sample[:3])}.",
        highlight=False, markup=False,
    )  # fmt: skip
    if yes or not sys.stdin.isatty():
        return
    if not click.confirm("Restore anyway?", default=False, err=True):
        err().print("Nothing was changed.", highlight=False)
        sys.exit(1)


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@lock_options
@json_option
def delete(run_dir: Path, name: str, redis_url: str | None, no_locks: bool, as_json: bool) -> None:
    """Delete archive NAME of RUN_DIR."""
    with (
        reporting(as_json, ""),
        audited(run_dir, "delete", name) as note,
        service_rules(run_dir, "delete", redis_url, no_locks) as hold,
    ):
        from runarchive.core import delete_archive

        note.bytes = delete_archive(run_dir, name)
        if hold is not None:
            hold.archive_deleted(name)
    emit(as_json, {"deleted": name}, f"Archive deleted: {name}")


def _pin(run_dir: Path, name: str, pinned: bool, as_json: bool) -> None:
    from runarchive.core import set_pinned

    with reporting(as_json, ""), audited(run_dir, "pin" if pinned else "unpin", name):
        now = set_pinned(run_dir, name, pinned)
    word = "pinned" if now else "unpinned"
    emit(as_json, {"name": name, "pinned": now}, f"Archive {word}: {name}")


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@json_option
def pin(run_dir: Path, name: str, as_json: bool) -> None:
    """Pin archive NAME of RUN_DIR: never pruned, and not deleted until unpinned."""
    _pin(run_dir, name, True, as_json)


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@json_option
def unpin(run_dir: Path, name: str, as_json: bool) -> None:
    """Unpin archive NAME of RUN_DIR."""
    _pin(run_dir, name, False, as_json)


def _keep_option(rule: str, text: str) -> Callable[[F], F]:
    flag = "--" + rule.replace("_", "-")
    return click.option(flag, rule, type=click.IntRange(0, MAX_KEEP), default=None, help=text)


@cli.command()
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


@cli.command()
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


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@json_option
def recover(run_dir: Path, as_json: bool) -> None:
    """Finish or roll back an interrupted restore of RUN_DIR and remove stale temp files."""
    with reporting(as_json, ""):
        from runarchive.core import recover_run

        result = recover_run(run_dir)
    emit(as_json, result, _recover_text(result))


_RECOVERED = {
    "none": "no interrupted restore, nothing left over",
    "rolled_back": "an interrupted restore had not begun its swap: undone, the run is as before",
    "rolled_forward": "an interrupted restore was mid-swap: finished, the run is as the archive",
    "cleaned": "a finished restore's leftovers were removed",
}


def _recover_text(result: RecoverResult) -> str:
    """Say what recover checked and found, in words."""
    found = _RECOVERED.get(result.action, result.action)
    extra = f"; {result.removed_temp} stale temp item(s) removed" if result.removed_temp else ""
    return f"recover: checked the journal, state folders and temp files: {found}{extra}."


@cli.command()
@click.option("--dir", "base", type=click.Path(path_type=Path), default=Path("data/demo"),
              show_default=True, help="Where the demo run is generated.")  # fmt: skip
def demo(base: Path) -> None:
    """Generate a WEPP-like run, archive it, damage it, restore it, verify it."""
    from runarchive.demo import run_demo

    run_demo(base, _stdout_console())


def main() -> None:
    """Entry point of the ``runarchive`` script."""
    cli()


if __name__ == "__main__":
    main()
