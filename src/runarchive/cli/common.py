"""What every local command shares: its output (a rich progress bar on a terminal, one JSON
document with ``--json``), its options (``--json``, ``--redis-url``/``--no-locks``) and the
service's rules it honours when a Redis URL is configured.

Kept apart from ``cli/__init__`` so that the command modules (``retention_commands``,
``undo_commands``, ``fork_commands`` …) import it at their top, not from the package that
imports them. Start-up is part of every local command's time: only click and the core's face
at import (and of the standard library only what click loads itself: ``--help`` loads no
pathlib, json or dataclasses); rich when something is drawn, the jobs layer when a Redis URL
asks for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from runarchive.cli.exits import exit_with
from runarchive.core import RunArchiveError

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

    from runarchive.core import ProgressCallback, ProgressEvent

F = TypeVar("F", bound=Callable[..., Any])


class PathType(click.Path["Path"]):
    """``click.Path(path_type=pathlib.Path)``, with pathlib imported on the first value.

    Declaring the commands needs no pathlib then, and ``--help`` does not load it.
    """

    def coerce_path_result(self, value: str | os.PathLike[str]) -> Path:
        from pathlib import Path

        return value if isinstance(value, Path) else Path(value)


# Resolved here: the operator typed it (a link to a run is their choice); below the run,
# the library follows no link at all.
RUN_DIR = PathType(exists=False, file_okay=False, resolve_path=True)


@cache
def err() -> Console:
    """The stderr console for progress, notes and errors (rich is imported on first use)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


# Environment variables with which rich treats a stream as a terminal when it is not a tty.
_RICH_TERMINAL_ENV = ("FORCE_TERMINAL", "FORCE_COLOR", "TTY_COMPATIBLE")


def is_terminal(stream: IO[str], console: Callable[[], Console]) -> bool:
    """Tell whether rich would draw on ``stream``, importing rich only if it might."""
    if not stream.isatty() and not any(v in os.environ for v in _RICH_TERMINAL_ENV):
        return False  # what rich's Console.is_terminal answers in this case, cheaply
    return console().is_terminal


def jsonable(value: Any) -> Any:
    """Return ``value`` as plain JSON data (dataclasses, times, paths, nested)."""
    # Imported here, by the commands that print JSON: not at start-up.
    from dataclasses import asdict, is_dataclass
    from pathlib import Path

    from runarchive.core import iso_utc

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return {k: plain(v) for k, v in asdict(value).items()}
        if isinstance(value, datetime):
            return iso_utc(value)
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(value)


def json_option(func: F) -> F:
    """Add ``--json`` to a command."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(func)


@contextmanager
def reporting(as_json: bool, label: str) -> Iterator[ProgressCallback | None]:
    """Show a rich progress bar on a terminal; map library errors to exit codes."""
    try:
        if as_json or not is_terminal(sys.stderr, err):
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
            import json

            click.echo(json.dumps({"error": {"code": exc.code, "message": str(exc)}}))
        else:
            err().print(f"[bold red]error:[/] {exc}", highlight=False)
        exit_with(exc)


# The service's database, for ``audit`` and the web layer's commands (``web_commands``): here,
# so that ``audit`` (and the audit rows of the local commands) need not import those commands.
_DB_OPTIONS = [
    click.option(
        "--data-dir",
        type=PathType(file_okay=False),
        default=None,
        help="Data dir holding the SQLite database [env RUNARCHIVE_DATA_DIR].",
    ),
    click.option(
        "--database-url",
        default=None,
        help="SQLAlchemy URL [env RUNARCHIVE_DATABASE_URL; default: SQLite in the data dir].",
    ),
]


def database_options(func: F) -> F:
    """Add ``--data-dir`` and ``--database-url``."""
    for option in reversed(_DB_OPTIONS):
        func = option(func)
    return func


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
    if not as_json:
        click.echo(text)
        return
    import json

    click.echo(json.dumps(jsonable(payload), ensure_ascii=False))
