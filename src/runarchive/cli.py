"""The ``runarchive`` command line: the core operations, for people (progress bars) and scripts.

Exit codes: 0 success, 1 the operation failed (damage found, unsafe archive, no space…),
2 usage error (bad arguments or names), 3 refused because the run is busy or locked.
With ``--json`` every command prints one JSON document on stdout, errors included.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from . import __version__
from .core import (
    ProgressCallback,
    ProgressEvent,
    RunArchiveError,
    create_archive,
    delete_archive,
    list_archives,
    purge_trash,
    recover_run,
    restore_archive,
    verify_archive,
)
from .core.fsutil import human_bytes

F = TypeVar("F", bound=Callable[..., Any])
err = Console(stderr=True, soft_wrap=True)
# Resolved here: the operator typed it (a link to a run is their choice); below the run,
# the library follows no link at all.
RUN_DIR = click.Path(exists=False, file_okay=False, path_type=Path, resolve_path=True)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
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
        if as_json or not err.is_terminal:
            yield None
        else:
            with Progress(
                TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                console=err, transient=True,
            ) as bar:  # fmt: skip
                task = bar.add_task(label, total=None)

                def update(event: ProgressEvent) -> None:
                    bar.update(task, completed=event.bytes_done, total=event.bytes_total or None)

                yield update
    except RunArchiveError as exc:
        if as_json:
            click.echo(json.dumps({"error": {"code": exc.code, "message": str(exc)}}))
        else:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)


def emit(as_json: bool, payload: Any, text: str) -> None:
    """Print a result as JSON or as a human line."""
    click.echo(json.dumps(_jsonable(payload), ensure_ascii=False) if as_json else text)


@click.group()
@click.version_option(__version__, prog_name="runarchive")
def cli() -> None:
    """Crash-safe, verified snapshots of model run directories."""


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.option("--comment", "-c", default="", help="Up to 40 characters, shown by list.")
@json_option
def archive(run_dir: Path, comment: str, as_json: bool) -> None:
    """Create a new archive of RUN_DIR under RUN_DIR/archives/."""
    with reporting(as_json, "archiving") as progress:
        result = create_archive(run_dir, comment, progress=progress)
    text = f"Archive ready: {result.name} ({result.files} files, {human_bytes(result.size)})"
    for link in result.external_links:
        text += f"\nwarning: link leaves the run: {link}"
    for skipped in result.skipped:
        text += f"\nwarning: skipped {skipped}"
    emit(as_json, result, text)


@cli.command("list")
@click.argument("run_dir", type=RUN_DIR)
@json_option
def list_cmd(run_dir: Path, as_json: bool) -> None:
    """List the archives of RUN_DIR, newest first."""
    with reporting(as_json, ""):
        infos = list_archives(run_dir)
    if as_json:
        emit(True, {"archives": infos}, "")
        return
    table = Table("comment", "size", "created (UTC)", "files", "ok")
    table.columns.insert(0, Column("name", no_wrap=True))
    for info in infos:
        table.add_row(
            info.name, info.comment, human_bytes(info.size),
            info.created.strftime("%Y-%m-%d %H:%M:%S"), str(info.files),
            "yes" if info.readable else f"NO: {info.error}",
        )  # fmt: skip
    Console().print(table) if infos else click.echo("No archives yet.")


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@json_option
def verify(run_dir: Path, name: str, as_json: bool) -> None:
    """Check every entry of archive NAME against its CRC and manifest sha256."""
    with reporting(as_json, "verifying") as progress:
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
@json_option
def restore(run_dir: Path, name: str, allow_external_links: bool, as_json: bool) -> None:
    """Replace the content of RUN_DIR (all but archives/) with archive NAME."""
    with reporting(as_json, "restoring") as progress:
        result = restore_archive(
            run_dir, name, progress=progress, allow_external_links=allow_external_links,
            defer_delete=True,
        )  # fmt: skip
    text = f"Restore complete: {name} ({result.files} files, {result.reused} unchanged)"
    text += "".join(f"\nwarning: {w}" for w in result.warnings)
    emit(as_json, result, text)
    sys.stdout.flush()
    # The user has the answer; deleting the replaced tree can take its time now.
    purge_trash(run_dir)


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@json_option
def delete(run_dir: Path, name: str, as_json: bool) -> None:
    """Delete archive NAME of RUN_DIR."""
    with reporting(as_json, ""):
        delete_archive(run_dir, name)
    emit(as_json, {"deleted": name}, f"Archive deleted: {name}")


@cli.command()
@click.argument("run_dir", type=RUN_DIR)
@json_option
def recover(run_dir: Path, as_json: bool) -> None:
    """Finish or roll back an interrupted restore of RUN_DIR and remove stale temp files."""
    with reporting(as_json, ""):
        result = recover_run(run_dir)
    emit(as_json, result, f"recover: {result.action} ({result.removed_temp} stale items removed)")


@cli.command()
@click.option("--dir", "base", type=click.Path(path_type=Path), default=Path("data/demo"),
              show_default=True, help="Where the demo run is generated.")  # fmt: skip
def demo(base: Path) -> None:
    """Generate a WEPP-like run, archive it, damage it, restore it, verify it."""
    from .tour import run_demo

    run_demo(base, Console())


def _register_job_commands() -> None:
    from .jobs.commands import COMMANDS
    from .web.commands import COMMANDS as WEB_COMMANDS

    for command in COMMANDS + WEB_COMMANDS:
        cli.add_command(command)


_register_job_commands()


def main() -> None:
    """Entry point of the ``runarchive`` script."""
    cli()


if __name__ == "__main__":
    main()
