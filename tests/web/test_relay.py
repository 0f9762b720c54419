"""The relay on a real Redis: subscribe on demand, fan out, linger, slow peers, lost connections."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import simple_websocket

from runarchive.jobs import JobsContext, Settings
from runarchive.web import create_app, shutdown
from runarchive.web.accounts import create_token, create_user, grant_run
from runarchive.web.db import db
from runarchive.web.relay import Relay
from runarchive.web.settings import WebSettings
from runarchive.web.websocket import RELAY
from tests.support.runs import make_small_run
from tests.support.waiting import wait_until
from tests.support.web import LiveServer, upgrade_status


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def relay(redis_url: str) -> Iterator[Relay]:
    hub = Relay(lambda: redis_url, max_sockets=3, queue_size=4, linger=0.2)
    try:
        yield hub
    finally:
        hub.stop()


def channel() -> str:
    return f"run-{uuid.uuid4().hex[:8]}:archive"


def numsub(client: redis.Redis, name: str) -> int:
    return int(dict(client.pubsub_numsub(name))[name])


def test_it_subscribes_on_first_join_and_fans_out(relay: Relay, client: redis.Redis) -> None:
    name = channel()
    first, second = relay.join(name), relay.join(name)
    assert first.ready.wait(5) and second.ready.wait(5)
    client.publish(name, "line one")
    assert first.get(5) == "line one"
    assert second.get(5) == "line one"
    assert numsub(client, name) == 1


def test_it_unsubscribes_a_channel_after_its_last_viewer_lingered_out(
    relay: Relay, client: redis.Redis
) -> None:
    name = channel()
    sub = relay.join(name)
    assert sub.ready.wait(5)
    relay.leave(sub)
    assert numsub(client, name) == 1  # lingers for a reload
    wait_until(lambda: numsub(client, name) == 0, timeout=5)
    again = relay.join(name)
    assert again.ready.wait(5)
    client.publish(name, "back")
    assert again.get(5) == "back"


def test_a_viewer_that_stops_reading_is_hung_up_not_waited_for(
    relay: Relay, client: redis.Redis
) -> None:
    name = channel()
    slow, fast = relay.join(name), relay.join(name)
    assert slow.ready.wait(5) and fast.ready.wait(5)
    for i in range(6):
        client.publish(name, f"line {i}")
        assert fast.get(5) == f"line {i}"
    wait_until(lambda: slow.hangup == "too slow", timeout=5)
    assert fast.hangup is None


def test_a_lost_redis_connection_hangs_up_viewers_and_recovers(
    relay: Relay, client: redis.Redis
) -> None:
    name = channel()
    sub = relay.join(name)
    assert sub.ready.wait(5)
    ids = [c["id"] for c in client.client_list() if c.get("name") == relay.client_name]
    assert len(ids) == 1
    client.execute_command("CLIENT", "KILL", "ID", ids[0])
    wait_until(lambda: sub.hangup == "connection to Redis lost", timeout=10)
    assert sub.get(0.1) is None
    again = relay.join(name)
    assert again.ready.wait(10)
    client.publish(name, "after reconnect")
    assert again.get(5) == "after reconnect"


def test_the_socket_budget_is_counted(relay: Relay) -> None:
    assert [relay.reserve() for _ in range(4)] == [True, True, True, False]
    relay.release()
    assert relay.reserve() is True
    relay.stop()
    relay.release()
    assert relay.reserve() is False  # stopping: no new sockets


def test_stopping_the_server_closes_every_socket_with_going_away_not_hangup(
    redis_url: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    runid = f"run-{uuid.uuid4().hex[:8]}"
    make_small_run(runs, runid)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=redis_url,
        runs_root=runs,
        queue=f"q-{tag}",
        key_prefix=f"ra-relay-{tag}",
        data_dir=tmp_path / "data",
    )
    websettings = WebSettings(database_url=f"sqlite:///{tmp_path}/a.db")
    app = create_app({"TESTING": True, "JOBS_SETTINGS": settings, "WEB_SETTINGS": websettings})
    with app.app_context():
        user = create_user(db().session, "owner", "password-123")
        grant_run(db().session, runid, user)
        token = create_token(db().session, user)
    live = LiveServer(app)
    ws = simple_websocket.Client.connect(
        live.ws_url(runid) + "?since=0", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with JobsContext.from_settings(settings) as ctx:
            ctx.stream(runid).publish("before stop")
        frames = []
        while len(frames) < 1:
            raw = ws.receive(timeout=5)
            assert raw is not None
            frames.append(json.loads(raw))
        app.extensions[RELAY].stop()
        after: list[dict[str, Any]] = []
        with contextlib.suppress(simple_websocket.ConnectionClosed):
            while (raw := ws.receive(timeout=5)) is not None:
                after.append(json.loads(raw))
        wait_until(lambda: not ws.connected, timeout=5)
        assert ws.close_reason == 1001  # going away: the client comes back
        assert {"type": "hangup"} not in after
        status, body = upgrade_status(live, runid, {"Authorization": f"Bearer {token}"})
        assert status == 503 and body["error"]["code"] == "too_many_sockets"
    finally:
        if ws.connected:
            ws.close()
        live.stop()
        shutdown(app)
