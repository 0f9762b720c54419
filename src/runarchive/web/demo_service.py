"""The local trial behind ``runarchive serve --demo`` (and ``make run``).

A newcomer gets a working service in one command: a generated WEPP-like run, a ``demo`` user
who owns it, and the credentials printed with the URL. Everything lives in the data dir and
runs root, so a second start finds and reuses it (same password, same run, same archives).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from runarchive.jobs import Settings
from runarchive.synthetic_run import generate_run

from . import accounts
from .db import Database
from .settings import WebSettings, default_database_url

DEMO_USER = "demo"
DEMO_RUNID = "demo-pinecone"
PASSWORD_FILE = "demo-password"


@dataclass(frozen=True, slots=True)
class Trial:
    """What a newcomer needs to log in."""

    username: str
    password: str
    runid: str
    run_dir: Path


def _password(data_dir: Path) -> str:
    path = data_dir / PASSWORD_FILE
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


def trial_settings(jobs_settings: Settings) -> Settings:
    """Default the runs root to ``<data dir>/runs`` when none is configured."""
    if jobs_settings.runs_root is not None:
        return jobs_settings
    return replace(jobs_settings, runs_root=Path(jobs_settings.data_dir) / "runs")


def prepare_trial(jobs_settings: Settings, web: WebSettings) -> Trial:
    """Create (once) the demo run, the demo user and their link; return the credentials."""
    data_dir = Path(jobs_settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    assert jobs_settings.runs_root is not None
    run_dir = Path(jobs_settings.runs_root) / DEMO_RUNID
    if not run_dir.exists():
        generate_run(run_dir, seed=7, target_bytes=5 * 2**20, files=300)
    password = _password(data_dir)
    database = Database(web.database_url or default_database_url(data_dir))
    try:
        session = database.session
        user = accounts.find_user(session, DEMO_USER)
        if user is None:
            user = accounts.create_user(session, DEMO_USER, password)
        accounts.grant_run(session, DEMO_RUNID, user)
    finally:
        database.close()
    return Trial(DEMO_USER, password, DEMO_RUNID, run_dir)


def banner(trial: Trial, host: str, port: int, data_dir: Path) -> str:
    """Return the lines printed at start: where to go, how to log in, where the data is.

    Paths are printed absolute (they were resolved at start-up), with the line that points the
    CLI of another terminal at the same accounts and runs.
    """
    url = f"http://{host}:{port}/runs/{trial.runid}/archive"
    return (
        "\n  runarchive demo is starting (Ctrl-C stops everything)\n"
        f"  open      {url}\n"
        f"  username  {trial.username}\n"
        f"  password  {trial.password}\n"
        f"  run       {trial.run_dir}\n"
        f"  data dir  {data_dir}\n"
        f"  CLI       export RUNARCHIVE_DATA_DIR={data_dir}   "
        "# in another terminal: users, runs, tokens act on this service\n"
    )
