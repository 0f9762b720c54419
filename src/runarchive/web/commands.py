"""Command-line entry points of the web layer (registered on ``runarchive`` by ``cli.py``).

``runarchive serve`` runs the service; ``users add``, ``runs grant``/``revoke`` and ``tokens
create`` manage accounts in the same database the service uses (``--data-dir`` or
``--database-url``, also from the environment). Exit codes as the rest of the CLI: 0 ok,
1 failed, 2 bad input.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from runarchive.core import RunArchiveError

F = TypeVar("F", bound=Callable[..., Any])
DIR = click.Path(file_okay=False, path_type=Path)

_DB_OPTIONS = [
    click.option(
        "--data-dir",
        type=DIR,
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


@contextmanager
def _reporting() -> Iterator[None]:
    try:
        yield
    except RunArchiveError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


@contextmanager
def _session(data_dir: Path | None, database_url: str | None) -> Iterator[Any]:
    from runarchive.jobs import Settings

    from .db import Database
    from .settings import WebSettings, default_database_url

    web = WebSettings.from_env(database_url=database_url)
    url = web.database_url or default_database_url(Settings.from_env(data_dir=data_dir).data_dir)
    database = Database(url)
    try:
        yield database.session
    finally:
        database.close()


@click.command()
@click.option("--host", default=None, help="Listen address [env RUNARCHIVE_HOST; 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env RUNARCHIVE_PORT; 8000].")
@click.option(
    "--runs-root",
    type=DIR,
    default=None,
    help="Folder holding the runs [env RUNARCHIVE_RUNS_ROOT].",
)
@click.option("--redis-url", default=None, help="Redis URL [env REDIS_URL; default: embedded].")
@database_options
@click.option(
    "--worker/--no-worker",
    default=None,
    help="Run a local job worker [default: only with the embedded Redis].",
)
@click.option(
    "--demo",
    is_flag=True,
    default=None,
    help="Local trial: a generated run, a demo user, SECRET_KEY kept in the data dir.",
)
def serve(
    host: str | None,
    port: int | None,
    runs_root: Path | None,
    redis_url: str | None,
    data_dir: Path | None,
    database_url: str | None,
    worker: bool | None,
    demo: bool | None,
) -> None:
    """Run the web service (gunicorn); without a Redis URL, also Redis and a worker."""
    from runarchive.jobs import Settings

    from .server import run_serve
    from .settings import WebSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with _reporting():
        jobs_settings = Settings.from_env(
            redis_url=redis_url, runs_root=runs_root, data_dir=data_dir
        )
        web = WebSettings.from_env(database_url=database_url, host=host, port=port, demo=demo)
        if web.demo:
            from .trial import banner, prepare_trial, trial_settings

            jobs_settings = trial_settings(jobs_settings)
            click.echo(banner(prepare_trial(jobs_settings, web), web.host, web.port))
    sys.exit(run_serve(web, jobs_settings, web.host, web.port, worker))


@click.group()
def users() -> None:
    """Manage user accounts."""


@users.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May read and write every run.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
@database_options
def users_add(
    name: str, admin: bool, password_stdin: bool, data_dir: Path | None, database_url: str | None
) -> None:
    """Add user NAME (asks for the password unless --password-stdin)."""
    from . import accounts

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _reporting(), _session(data_dir, database_url) as session:
        accounts.create_user(session, name, password, admin=admin)
    click.echo(f"added user {name}" + (" (admin)" if admin else ""))


@click.group()
def runs() -> None:
    """Grant and revoke run ownership."""


@runs.command("grant")
@click.argument("runid")
@click.argument("user")
@database_options
def runs_grant(runid: str, user: str, data_dir: Path | None, database_url: str | None) -> None:
    """Make USER an owner of run RUNID (read and write)."""
    from . import accounts

    with _reporting(), _session(data_dir, database_url) as session:
        granted = accounts.grant_run(session, runid, accounts.require_user(session, user))
    click.echo(f"granted {runid} to {user}" if granted else f"{user} already owns {runid}")


@runs.command("revoke")
@click.argument("runid")
@click.argument("user")
@database_options
def runs_revoke(runid: str, user: str, data_dir: Path | None, database_url: str | None) -> None:
    """Remove USER's ownership of run RUNID."""
    from . import accounts

    with _reporting(), _session(data_dir, database_url) as session:
        revoked = accounts.revoke_run(session, runid, accounts.require_user(session, user))
    click.echo(f"revoked {runid} from {user}" if revoked else f"{user} did not own {runid}")


@click.group()
def tokens() -> None:
    """Manage personal API tokens."""


@tokens.command("create")
@click.argument("user")
@database_options
def tokens_create(user: str, data_dir: Path | None, database_url: str | None) -> None:
    """Create an API token for USER and print it (it cannot be shown again)."""
    from . import accounts

    with _reporting(), _session(data_dir, database_url) as session:
        token = accounts.create_token(session, accounts.require_user(session, user))
    click.echo(token)


COMMANDS: tuple[click.Command, ...] = (serve, users, runs, tokens)
