"""Fixtures of the hardening suite: the web tests' deployment (real valkey, app, users, workers).

The module-scoped ``web`` app, the ``live`` server and the ``workers`` pool are the web
suite's own (``tests/web/conftest.py``); re-exported here so the hardening tests attack exactly
the app the product builds. Tests that stop Redis start their own embedded valkey.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from runarchive.jobs import JobsContext, Settings
from runarchive.web import create_app, shutdown
from runarchive.web.accounts import create_token, create_user
from runarchive.web.db import db
from runarchive.web.settings import WebSettings
from tests.jobs.conftest import Workers, worker_env
from tests.web.conftest import live, redis_url, web, workers
from tests.web.webutil import PASSWORD, WebEnv

__all__ = ["live", "redis_url", "web", "workers"]


def make_web_env(root: Path, redis_url: str, runs: Path) -> WebEnv:
    """A deployment of its own (app, jobs context, ``alice`` with an owner token) on ``runs``."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=redis_url,
        runs_root=runs,
        queue=f"hard-{tag}",
        key_prefix=f"ra-hard-{tag}",
        heartbeat_ttl=2.0,
        slot_grace=2.0,
        data_dir=root / "data",
    )
    websettings = WebSettings(database_url=f"sqlite:///{root / 'accounts.sqlite3'}")
    app = create_app({"TESTING": True, "JOBS_SETTINGS": settings, "WEB_SETTINGS": websettings})
    env = WebEnv(app, settings, JobsContext.from_settings(settings), root)
    with app.app_context():
        session = db().session
        env.tokens["owner"] = create_token(session, create_user(session, "alice", PASSWORD))
    return env


def close_web_env(env: WebEnv) -> None:
    shutdown(env.app)
    env.ctx.close()


LIMIT_FSIZE = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


def start_limited_worker(pool: Workers, max_file_bytes: int, *args: str) -> subprocess.Popen[bytes]:
    """Start a real worker whose processes may not write a file past ``max_file_bytes``.

    Python ignores SIGXFSZ, so a write past the limit fails with ``EFBIG`` — to the core,
    exactly like a full disk.
    """
    log = open(pool.logs / f"worker-{len(pool.procs)}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LIMIT_FSIZE,
            str(max_file_bytes),
            "-m",
            "runarchive.jobs",
            "worker",
            *args,
        ],
        env=worker_env(pool.settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    pool.procs.append(proc)
    return proc
