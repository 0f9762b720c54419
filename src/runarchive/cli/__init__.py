"""The ``runarchive`` command line: the core operations, for people (progress bars) and scripts.

Exit codes: 0 success, 1 the operation failed (damage found, unsafe archive, no space…, Redis
configured but unreachable), 2 usage error (bad arguments or names), 3 refused because the run
is busy or locked, 4 refused by a quota, 5 ``scrub`` found damage (``cli/exits.py`` owns the
map). With ``--json`` every command prints one JSON document on stdout, errors included.

This module holds the group and the commands on one archive's life (archive, list, verify,
restore, delete, recover); the others live beside it, one module per concern
(``retention_commands``: pin/unpin/prune, ``undo_commands``, ``fork_commands``,
``inside_commands``, ``scrub_commands``, ``audit_commands``), all sharing ``common``.

``archive``, ``restore``, ``delete`` and ``prune`` obey the service's rules when a Redis URL is
configured (``--redis-url``, ``REDIS_URL`` or ``RUNARCHIVE_REDIS_URL``): refused while a
``.nodb`` lock of the run is held or a job holds the run, else holding the run's slot and
locks while they work (``runarchive.jobs.local``). ``--no-locks`` skips that. Without a URL
they are local only, and RQ and redis-py are not imported for them.

Start-up is part of every local command's time, so this module imports only click, the
core's face and ``common``, and of the standard library nothing that click does not load
itself (no pathlib, json or dataclasses for ``--help``): the commands of the other modules
are imported when named, and ``--help`` lists them from ``LOCAL_COMMANDS`` (and the service
commands from ``SERVICE_COMMANDS``, rather than importing RQ, redis-py and Flask; a test pins
both tables to the real commands). rich (progress bar, table, styled errors) is imported when
something is drawn on a terminal or an error is printed; the core's modules when a command
runs the operation they hold.
"""

from __future__ import annotations

import sys
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING, Any

import click

from runarchive import __version__
from runarchive.cli.common import (
    RUN_DIR,
    PathType,
    emit,
    err,
    is_terminal,
    json_option,
    jsonable,
    lock_options,
    reporting,
    service_rules,
)

# Only what declaring the commands needs: ``runarchive.core`` loads its modules on first use,
# and each command imports, from the same face, what it runs when it runs, so ``list``
# loads no deflate library or thread pool and ``--help`` neither engine (nor the names and
# sizes rules: ``core.names``, ``core.fsutil``).
from runarchive.core import LinkMode, RunArchiveError

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

    from runarchive.core import (
        ArchiveInfo,
        Comment,
        Policy,
        RecoverResult,
        RestorePaths,
    )


# The commands of this package's other modules (``COMMANDS`` of each), by module: each module
# is imported when one of its commands is named, and ``--help`` lists them with the first
# paragraph of their help from here; tests/test_cli_startup.py pins it.
LOCAL_COMMANDS: dict[str, dict[str, str]] = {
    "inside_commands": {
        "ls": "List folder PREFIX (default: the top) inside archive NAME of RUN_DIR, folders "
        "first.",
        "cat": "Write file PATH of archive NAME to stdout, byte for byte, streamed from the zip.",
        "extract": "Write files PATH… (a folder: every file below it) of archive NAME below DEST.",
        "diff": "Show what changed from archive NAME to the run (or to archive OTHER of the run).",
    },
    "fork_commands": {
        "fork": "Make NEW_RUN_DIR, a new run holding exactly archive NAME of RUN_DIR.",
    },
    "retention_commands": {
        "pin": "Pin archive NAME of RUN_DIR: never pruned, and not deleted until unpinned.",
        "unpin": "Unpin archive NAME of RUN_DIR.",
        "prune": "Remove the archives of RUN_DIR that the retention policy does not keep.",
    },
    "undo_commands": {
        "undo": "Put back exactly what the last restore of RUN_DIR replaced (exit 3: nothing to "
        "undo).",
    },
    # every archive verified now, as the periodic scrub does
    "scrub_commands": {
        "scrub": "Verify every archive of RUN_DIR (or of every run under the runs root) now.",
    },
    # the audit log; the commands that change a run record into it (audit_commands.py)
    "audit_commands": {
        "audit": "Print the audit log (every run, or RUN_ID's), oldest first.",
    },
}
_MODULE_OF = {name: module for module, names in LOCAL_COMMANDS.items() for name in names}

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


def local_commands(module: str) -> dict[str, click.Command]:
    """Import this package's ``module`` (a key of ``LOCAL_COMMANDS``); return its commands."""
    commands: list[click.Command] = import_module(f"{__name__}.{module}").COMMANDS
    return {command.name or "": command for command in commands}


class _Commands(click.Group):
    """The ``runarchive`` group: every command not defined in this module is imported when named.

    A local command (``archive``, ``list`` …) and ``--help`` so start without importing the
    other commands' modules, and without RQ, redis-py or Flask; running a service command
    imports them.
    """

    def _service(self) -> dict[str, click.Command]:
        from .jobs_commands import COMMANDS
        from .web_commands import COMMANDS as WEB_COMMANDS

        return {command.name or "": command for command in COMMANDS + WEB_COMMANDS}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return a command of this module, else of the module that defines it, else the
        service command of that name."""
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in _MODULE_OF:
            return local_commands(_MODULE_OF[cmd_name]).get(cmd_name)
        return self._service().get(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Resolve as click does; for a name that is no command, suggest from this module's
        commands and the other modules' (click looks at ``self.commands`` only), as when
        they were all registered here."""
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            known = [*self.commands, *_MODULE_OF]
            raise click.exceptions.NoSuchCommand(
                exc.command_name, possibilities=known, ctx=ctx
            ) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return every command name, local and service."""
        return sorted({*self.commands, *_MODULE_OF, *SERVICE_COMMANDS})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands as click does, those of other modules from the two tables."""
        helps = {name: text for names in LOCAL_COMMANDS.values() for name, text in names.items()}
        helps |= SERVICE_COMMANDS
        stubs = {name: click.Command(name, help=text) for name, text in helps.items()}
        click.Group(self.name, commands={**stubs, **self.commands}).format_commands(ctx, formatter)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="runarchive")
def cli() -> None:
    """Crash-safe, verified snapshots of model run directories."""


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
    from runarchive.core import human_bytes, policy_from_env, purge_trash

    from .audit_commands import audited

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
    emit(as_json, {**jsonable(result), "warnings": warnings, "pruned": pruned}, text)
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
    from runarchive.core import MAX_COMMENT_CHARS, parse_comment

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
    """List the archives of RUN_DIR, newest first, and whether its last restore can be undone."""
    with reporting(as_json, ""):
        from runarchive.core import list_archives, undo_info

        infos = list_archives(run_dir)
        undo = undo_info(run_dir)
    if as_json:
        emit(True, {"archives": infos, "undo": undo.as_json()}, "")
        return
    _print_archives(infos)
    from runarchive.cli.undo_line import undo_line

    line = undo_line(undo)
    if line is not None:
        click.echo(line)


def _print_archives(infos: list[ArchiveInfo]) -> None:
    """Print the list's rows: a table on a terminal, plain aligned columns otherwise."""
    if not infos:
        click.echo("No archives yet.")
        return
    from runarchive.core import human_bytes

    rows = [
        (info.name, info.comment, human_bytes(info.size),
         info.created.strftime("%Y-%m-%d %H:%M:%S"), str(info.files), str(info.links),
         "yes" if info.readable else f"NO: {info.error}")
        for info in infos
    ]  # fmt: skip
    heads = ("name", "comment", "size", "created (UTC)", "files", "links", "ok")
    out = _stdout_console
    if not is_terminal(sys.stdout, out):
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

    from .audit_commands import audited

    with reporting(as_json, ""):
        chosen = parse_restore_paths(list(paths)) if paths else None  # refused before any work
    _confirm_removals(run_dir, name, yes, as_json, chosen)
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


def _confirm_removals(
    run_dir: Path, name: str, yes: bool, as_json: bool, chosen: RestorePaths | None
) -> None:
    """Say what the restore (of ``chosen`` only, when given) restores, changes and removes —
    the dashboard's confirm, from the same preview; when it removes files, ask on a terminal
    unless ``yes``.

    Skipped for ``--json``, which prints nothing of it: the preview is a scan of the run.
    """
    if as_json:
        return
    from runarchive.core import human_bytes

    with reporting(as_json, ""):
        from runarchive.core import preview_restore

        preview = preview_restore(run_dir, name, paths=chosen)
    scope = f" of {', '.join(chosen.as_list())}" if chosen is not None else ""
    restores, changes = preview.restores, preview.changes
    err().print(
        f"This restore{scope} restores {_files(restores.files)} "
        f"({human_bytes(restores.bytes)}), changes {changes.files} "
        f"({human_bytes(changes.bytes)}) and leaves {preview.unchanged} unchanged.",
        highlight=False, markup=False,
    )  # fmt: skip
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


def _files(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@lock_options
@json_option
def delete(run_dir: Path, name: str, redis_url: str | None, no_locks: bool, as_json: bool) -> None:
    """Delete archive NAME of RUN_DIR."""
    from .audit_commands import audited

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
@click.option("--dir", "base", type=PathType(), default="data/demo", show_default=True,
              help="Where the demo run is generated.")  # fmt: skip
def demo(base: Path) -> None:
    """Generate a WEPP-like run, archive it, damage it, restore it, verify it."""
    from runarchive.demo import run_demo

    run_demo(base, _stdout_console())


def main() -> None:
    """Entry point of the ``runarchive`` script."""
    cli()


if __name__ == "__main__":
    main()
