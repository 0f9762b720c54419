"""The web commands (registered on ``runarchive`` by ``cli/__init__.py`` when named).

``runarchive serve`` runs the service; ``users add``/``passwd``/``remove``/``list``/``quota``
(``quota_commands.py``), ``runs
grant``/``revoke`` and ``tokens create``/``list``/``revoke`` manage accounts in the same database
the service uses (``--data-dir`` or ``--database-url``, also from the environment). A change is
a committed database write that every web process sees on its next request (no process caches
accounts). Exit codes as the rest of the CLI (``exits.py``): 0 ok, 1 failed (e.g. no such
user or token), 2 bad input (bad names, a short password, an ambiguous token prefix, no way
to ask for a password).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from runarchive.core import InvalidInput

from .common import database_options
from .exits import reporting
from .quota_commands import users_list_command, users_quota_command

DIR = click.Path(file_okay=False, path_type=Path)


@contextmanager
def _session(data_dir: Path | None, database_url: str | None) -> Iterator[Any]:
    from runarchive.jobs import Settings
    from runarchive.web.db import Database
    from runarchive.web.settings import WebSettings, default_database_url

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
    import logging  # here: every local command imports this module (through audit_commands)

    from runarchive.jobs import Settings
    from runarchive.web.ports import require_free_port
    from runarchive.web.server import run_serve
    from runarchive.web.settings import WebSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with reporting(detail=False):
        jobs_settings = Settings.from_env(
            redis_url=redis_url, runs_root=runs_root, data_dir=data_dir
        )
        web = WebSettings.from_env(database_url=database_url, host=host, port=port, demo=demo)
        require_free_port(web.host, web.port)  # before any banner, Redis or worker
        if web.demo:
            from runarchive.web.demo_service import banner, prepare_trial, trial_settings

            jobs_settings = trial_settings(jobs_settings)
            click.echo(
                banner(
                    prepare_trial(jobs_settings, web), web.host, web.port, jobs_settings.data_dir
                )
            )
    with reporting(detail=False):  # the CLI's exit code for the library's errors
        run_serve(web, jobs_settings, web.host, web.port, worker)


def _no_terminal() -> bool:
    """Tell whether a password prompt has nowhere to go: stdin is a file or a pipe and the
    process has no controlling terminal (where getpass would read stdin, echoing, and click
    would end with a bare "Aborted!")."""
    try:
        if os.isatty(sys.stdin.fileno()):
            return False
    except (AttributeError, OSError, ValueError):
        return False  # not an OS file (a caller's own stream): click prompts on it
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return True
    return False


def _new_password(from_stdin: bool) -> str:
    """Read a new password: the first line of stdin, or asked twice on the terminal."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if _no_terminal():
        raise InvalidInput(
            "No terminal to ask for the password on: pass it on stdin with --password-stdin."
        )
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


_PASSWORD_STDIN = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)


@click.group()
def users() -> None:
    """Manage user accounts."""


@users.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May read and write every run.")
@_PASSWORD_STDIN
@database_options
def users_add(
    name: str, admin: bool, password_stdin: bool, data_dir: Path | None, database_url: str | None
) -> None:
    """Add user NAME (asks for the password unless --password-stdin)."""
    from runarchive.web import accounts

    with reporting(detail=False):
        accounts.validate_username(name)
        password = _new_password(password_stdin)
    with reporting(detail=False), _session(data_dir, database_url) as session:
        accounts.create_user(session, name, password, admin=admin)
    click.echo(f"added user {name}" + (" (admin)" if admin else ""))


@users.command("passwd")
@click.argument("name")
@_PASSWORD_STDIN
@database_options
def users_passwd(
    name: str, password_stdin: bool, data_dir: Path | None, database_url: str | None
) -> None:
    """Set user NAME's password and end all their sessions (their API tokens stay valid)."""
    from runarchive.web import accounts

    with reporting(detail=False), _session(data_dir, database_url) as session:
        found = accounts.require_user(session, name)
        accounts.set_password(session, found, _new_password(password_stdin))
    click.echo(f"changed the password of {name}; their sessions have ended")


@users.command("remove")
@click.argument("name")
@database_options
def users_remove(name: str, data_dir: Path | None, database_url: str | None) -> None:
    """Remove user NAME with their run grants, API tokens and sessions."""
    from runarchive.web import accounts

    with reporting(detail=False), _session(data_dir, database_url) as session:
        accounts.remove_user(session, accounts.require_user(session, name))
    click.echo(f"removed user {name}")


@click.group()
def runs() -> None:
    """Grant and revoke run ownership."""


@runs.command("grant")
@click.argument("runid")
@click.argument("user")
@click.option(
    "--runs-root", type=DIR, default=None,
    help="Folder holding the runs [env RUNARCHIVE_RUNS_ROOT; the demo's <data dir>/runs].",
)  # fmt: skip
@click.option("--allow-missing", is_flag=True, help="Grant a run that does not exist (yet).")
@database_options
def runs_grant(
    runid: str, user: str, runs_root: Path | None, allow_missing: bool,
    data_dir: Path | None, database_url: str | None,
) -> None:  # fmt: skip
    """Make USER an owner of run RUNID (read and write).

    A run that cannot be found under the runs root is refused (a typo would grant nothing,
    silently) unless --allow-missing.
    """
    from runarchive.core import NotFound, validate_runid
    from runarchive.jobs import Settings, find_run
    from runarchive.web import accounts

    with reporting(detail=False), _session(data_dir, database_url) as session:
        validate_runid(runid)
        if not allow_missing:
            settings = Settings.from_env(runs_root=runs_root, data_dir=data_dir)
            if settings.runs_root is None:
                settings = settings.with_overrides(runs_root=Path(settings.data_dir) / "runs")
            if find_run(settings, runid) is None:
                raise NotFound(
                    f"Run {runid} not found under {settings.runs_root}; check the id, or pass "
                    "--allow-missing to grant it before it exists."
                )
        granted = accounts.grant_run(session, runid, accounts.require_user(session, user))
    click.echo(f"granted {runid} to {user}" if granted else f"{user} already owns {runid}")


@runs.command("revoke")
@click.argument("runid")
@click.argument("user")
@database_options
def runs_revoke(runid: str, user: str, data_dir: Path | None, database_url: str | None) -> None:
    """Remove USER's ownership of run RUNID."""
    from runarchive.web import accounts

    with reporting(detail=False), _session(data_dir, database_url) as session:
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
    from runarchive.web import accounts

    with reporting(detail=False), _session(data_dir, database_url) as session:
        token = accounts.create_token(session, accounts.require_user(session, user))
    click.echo(token)


@tokens.command("list")
@click.argument("user")
@database_options
def tokens_list(user: str, data_dir: Path | None, database_url: str | None) -> None:
    """List USER's API tokens: id, prefix (not the token) and creation time (UTC)."""
    from runarchive.web import accounts

    with reporting(detail=False), _session(data_dir, database_url) as session:
        rows = accounts.tokens_of(session, accounts.require_user(session, user))
        if not rows:
            click.echo(f"{user} has no tokens")
            return
        click.echo(f"{'ID':>6}  {'PREFIX':<12}  CREATED")
        for row in rows:
            created = row.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            click.echo(f"{row.id:>6}  {row.prefix or '(unknown)':<12}  {created}")


@tokens.command("revoke")
@click.argument("user")
@click.argument("token_prefix", required=False)
@database_options
def tokens_revoke(
    user: str, token_prefix: str | None, data_dir: Path | None, database_url: str | None
) -> None:
    """Revoke USER's token starting with TOKEN_PREFIX, or all of USER's tokens without it."""
    from runarchive.web import accounts

    with reporting(detail=False), _session(data_dir, database_url) as session:
        count = accounts.revoke_tokens(session, accounts.require_user(session, user), token_prefix)
    click.echo(f"revoked {count} token{'' if count == 1 else 's'} of {user}")


users.add_command(users_quota_command(database_options, _session))
users.add_command(users_list_command(database_options, _session))

COMMANDS: tuple[click.Command, ...] = (serve, users, runs, tokens)
