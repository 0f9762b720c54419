"""The app-factory deployment of the hostile-run corpus: real app, real valkey, a real worker.

One deployment per test module (``deployment``): the product's app on its own queue and key
prefix, an accounts database and a secret key in its data dir, a file outside the runs root,
two users (``victor`` and ``mallory``) and one long-running ``runarchive worker`` process.
Every test gets a fresh ``World``: a victim run owned by victor and an attacker run owned by
mallory, each with one archive, and a snapshot of everything the attacker must not touch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from runarchive.core import create_archive
from runarchive.jobs import JobsContext, Settings
from runarchive.web import create_app, shutdown
from runarchive.web.accounts import create_token, create_user, grant_run, require_user
from runarchive.web.db import db
from runarchive.web.settings import WebSettings
from tests.hardening.hostile import (
    SQLITE_MAGIC,
    VICTIM_MARK,
    Secrets,
    full_snapshot,
    make_victim_run,
    run_cli,
)
from tests.support.runs import make_small_run
from tests.support.waiting import wait_until
from tests.support.web import PASSWORD
from tests.support.workers import Workers

FINAL = {"finished", "failed", "stopped", "canceled"}


@dataclass
class Deployment:
    app: Flask
    settings: Settings
    ctx: JobsContext
    root: Path
    secrets: Secrets
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    def grant(self, runid: str, user: str) -> None:
        with self.app.app_context():
            session = db().session
            grant_run(session, runid, require_user(session, user))


def start_deployment(root: Path, redis_url: str) -> Deployment:
    """Build the world's fixed parts under ``root`` and the app on a queue of its own."""
    runs, data, outside = root / "runs", root / "data", root / "outside"
    runs.mkdir()
    data.mkdir(mode=0o700)
    outside.mkdir()
    outside_secret = b"OUTSIDE-SECRET-" + secrets.token_hex(16).encode()
    (outside / "secret.txt").write_bytes(outside_secret)
    (outside / "secret.txt").chmod(0o600)
    key = secrets.token_hex(32).encode()
    (data / "secret_key").write_bytes(key + b"\n")
    (data / "secret_key").chmod(0o600)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=redis_url,
        runs_root=runs,
        queue=f"hostile-{tag}",
        key_prefix=f"ra-hostile-{tag}",
        heartbeat_ttl=2.0,
        slot_grace=2.0,
        data_dir=data,
    )
    web = WebSettings(database_url=f"sqlite:///{data / 'runarchive.sqlite3'}")
    app = create_app({"TESTING": True, "JOBS_SETTINGS": settings, "WEB_SETTINGS": web})
    dep = Deployment(app, settings, JobsContext.from_settings(settings), root,
                     Secrets(outside_secret, key, SQLITE_MAGIC, VICTIM_MARK))  # fmt: skip
    with app.app_context():
        session = db().session
        for name in ("victor", "mallory"):
            dep.tokens[name] = create_token(session, create_user(session, name, PASSWORD))
    return dep


def stop_deployment(dep: Deployment) -> None:
    shutdown(dep.app)
    dep.ctx.close()


class Guarded:
    """A test client for one user (API token, or anonymous) that checks every body it gets."""

    def __init__(self, dep: Deployment, token: str | None) -> None:
        self.client: FlaskClient = dep.app.test_client()
        if token is not None:
            self.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        self.secrets = dep.secrets

    def _checked(self, response: Any, where: str) -> Any:
        self.secrets.check(response.get_data(), where)  # reads a streamed body whole
        self.secrets.check(str(response.headers), where)
        response.close()
        return response

    def get(self, path: str, **kw: Any) -> Any:
        return self._checked(self.client.get(path, **kw), f"GET {path}")

    def head(self, path: str, **kw: Any) -> Any:
        return self._checked(self.client.head(path, **kw), f"HEAD {path}")

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self._checked(self.client.post(path, json=json, **kw), f"POST {path}")


@dataclass
class Outcome:
    """What a mutating request came to: refused at once, or a job that ran to its end."""

    status: int
    code: str | None = None
    message: str = ""
    trigger: str | None = None

    @property
    def refused(self) -> bool:
        return self.status >= 400 or (self.trigger or "").endswith("_FAILED")


@dataclass
class World:
    dep: Deployment
    victim_id: str
    attacker_id: str
    victim_archive: str
    attacker_archive: str
    before: dict[str, Any] = field(default_factory=dict)

    @property
    def victim(self) -> Path:
        return self.dep.runs / self.victim_id

    @property
    def attacker(self) -> Path:
        return self.dep.runs / self.attacker_id

    @property
    def rel_attacker(self) -> str:
        """The attacker's run as the CLI gets it: relative to the deployment's root."""
        return f"runs/{self.attacker_id}"

    def protected(self) -> dict[str, Any]:
        return {
            "victim": full_snapshot(self.victim),
            "outside": full_snapshot(self.dep.outside),
            "data": data_snapshot(self.dep.data),
        }

    def assert_untouched(self) -> None:
        """The victim run, the outside files and the data dir are exactly as before."""
        after = self.protected()
        for part in ("victim", "outside", "data"):
            old, new = self.before[part], after[part]
            changed = {k: (old.get(k), new.get(k)) for k in old.keys() | new.keys()
                       if old.get(k) != new.get(k)}  # fmt: skip
            assert not changed, f"{part} changed: {changed}"

    def as_user(self, who: str | None) -> Guarded:
        return Guarded(self.dep, self.dep.tokens[who] if who else None)

    def url(self, tail: str, runid: str | None = None) -> str:
        return f"/runs/{runid or self.attacker_id}/{tail}"

    def mutate(self, op: str, archive_name: str | None = None, who: str = "mallory") -> Outcome:
        """POST one mutating API call; for a job, wait for its end and read its trigger."""
        client = self.as_user(who)
        body: dict[str, Any] = {}
        if archive_name is not None:
            body["archive_name"] = archive_name
        response = client.post(self.url(f"rq/api/{op}"), json=body)
        payload = response.get_json()
        if response.status_code != 202:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            return Outcome(response.status_code, error.get("code"), error.get("message", ""))
        job_id = payload["job_id"]

        def ended() -> dict[str, Any] | None:
            info: dict[str, Any] = client.get(f"/rq/api/jobinfo/{job_id}").get_json()
            return info if info["status"] in FINAL and info["trigger"] else None

        info = wait_until(ended, timeout=60, step=0.1)
        return Outcome(202, None, info.get("exc_info") or "", info["trigger"])

    def cli(self, *args: str | bytes, timeout: float = 60, **env: str) -> Any:
        done = run_cli(*args, cwd=self.dep.root, timeout=timeout, **env)
        self.dep.secrets.check(done.stdout, f"cli {args} stdout")
        self.dep.secrets.check(done.stderr, f"cli {args} stderr")
        return done


def data_snapshot(data: Path) -> dict[str, Any]:
    """The data dir, exactly; but the accounts database by its accounts tables' rows and its
    files' modes.

    Every request now appends to the audit log in the same database (the attacks included:
    they are recorded), so its file and log change as they should; what an attacker must not
    change is the accounts (users, grants, tokens), the secret key and every other file.
    """
    found = full_snapshot(data)
    for rel, facts in found.items():
        if rel.startswith("runarchive.sqlite3") and facts[0] == "file":
            found[rel] = ("file", "sqlite", facts[2])
    found["<accounts rows>"] = accounts_digest(data / "runarchive.sqlite3")
    return found


def accounts_digest(path: Path) -> str:
    """The SHA-256 of the accounts tables' rows (the audit log aside)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        lines = [line for line in conn.iterdump()
                 if "audit_events" not in line and "sqlite_sequence" not in line]  # fmt: skip
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def make_world(dep: Deployment) -> World:
    tag = uuid.uuid4().hex[:8]
    victim_id, attacker_id = f"victim-{tag}", f"mallory-{tag}"
    victim = make_victim_run(dep.runs, victim_id)
    victim_archive = create_archive(victim, "victim's own").name
    attacker = make_small_run(dep.runs, attacker_id)
    attacker_archive = create_archive(attacker, "first").name
    dep.grant(victim_id, "victor")
    dep.grant(attacker_id, "mallory")
    world = World(dep, victim_id, attacker_id, victim_archive, attacker_archive)
    assert (victim / "archives" / ".runarchive").is_dir() and (
        victim / "archives" / victim_archive
    ).is_file()
    dep.secrets.add((victim / "archives" / victim_archive).read_bytes()[-256:])
    time.sleep(0.01)  # mtimes of anything touched later differ from the snapshot's
    world.before = world.protected()
    return world


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    dep = start_deployment(tmp_path_factory.mktemp("hostile"), redis_url)
    logs = dep.root / "worker-logs"
    logs.mkdir()
    pool = Workers(dep.settings, logs)
    pool.start()  # one long-running worker: each job costs a fork, not a process start
    try:
        yield dep
    finally:
        pool.kill_all()
        stop_deployment(dep)


@pytest.fixture
def world(deployment: Deployment) -> World:
    return make_world(deployment)


def fifo_free(path: Path) -> None:
    """Remove a fifo left behind (so teardown never opens it)."""
    if os.path.lexists(path):
        os.unlink(path)
