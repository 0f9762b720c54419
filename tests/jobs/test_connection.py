"""Connections: the embedded server, its rendezvous file, and the bounded blocking pool."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rq import Queue
from rq.exceptions import DequeueTimeout

from runarchive.core import list_archives
from runarchive.jobs.connection import (
    SOCKET_TIMEOUT,
    EmbeddedRedis,
    RedisClients,
    redact,
    resolve_url,
)
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive
from runarchive.jobs.errors import QueueUnavailable
from runarchive.jobs.settings import Settings
from runarchive.jobs.worker import make_worker, startup_recovery
from tests.support.runs import make_small_run
from tests.support.workers import Workers


def test_the_embedded_server_is_found_by_other_processes_through_its_data_dir(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    with pytest.raises(QueueUnavailable, match="REDIS_URL"):
        resolve_url(settings)
    with EmbeddedRedis(data) as server:
        assert server.owned and server.url is not None
        assert server.url.startswith("unix://")
        assert resolve_url(settings) == server.url
        joined = EmbeddedRedis(data)
        assert joined.start() == server.url and not joined.owned
        joined.stop()  # a joiner never stops the owner's server
        with RedisClients(server.url) as clients:
            clients.ping()
    with pytest.raises(QueueUnavailable):
        resolve_url(settings)


def test_a_long_data_dir_falls_back_to_a_loopback_port(tmp_path: Path) -> None:
    data = tmp_path / ("x" * 60) / ("y" * 60)
    with EmbeddedRedis(data) as server:
        assert server.url is not None and server.url.startswith("redis://127.0.0.1:")
        with RedisClients(server.url) as clients:
            clients.ping()


@pytest.mark.slow
def test_a_worker_without_redis_url_joins_the_embedded_server(
    settings: Settings, runid: str, workers: Workers, tmp_path: Path
) -> None:
    data = tmp_path / "embedded"
    with EmbeddedRedis(data) as server:
        own = replace(settings, redis_url=None, data_dir=data)
        run = make_small_run(Path(str(own.runs_root)), runid)
        with JobsContext.from_settings(own) as ctx:
            assert ctx.settings.redis_url == server.url
            enqueue_archive(ctx, runid)
        workers.settings = own  # no REDIS_URL in the worker's environment
        proc = workers.start("--burst", "--data-dir", str(data))
        assert proc.wait(timeout=90) == 0, workers.log_text()
        assert len(list_archives(run)) == 1


def test_a_small_pool_makes_callers_wait_instead_of_failing(settings: Settings) -> None:
    with RedisClients(str(settings.redis_url), max_connections=2) as clients:
        client = clients.data
        errors: list[BaseException] = []

        def block() -> None:
            try:
                client.blpop([f"{settings.key_prefix}:nothing"], timeout=0.2)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=block) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == []


def test_an_unreachable_redis_is_reported_as_queue_unavailable(tmp_path: Path) -> None:
    sock = tmp_path / "nobody.sock"
    with RedisClients(f"unix://{sock}") as clients, pytest.raises(QueueUnavailable):
        clients.ping()


def test_passwords_never_reach_messages() -> None:
    assert redact("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"


@pytest.mark.slow
def test_the_workers_blocking_pop_waits_its_time_on_a_connection_made_before_the_worker(
    ctx: JobsContext,
) -> None:
    # A worker starts by recovering runs, which opens connections of the RQ client at its
    # socket timeout; RQ's long BLPOP then went through one of those and timed out (the
    # worker logged "could not connect to Redis" every ~37 s while idle).
    startup_recovery(ctx)
    ctx.clients.rq.ping()
    worker = make_worker(ctx)
    wait = int(SOCKET_TIMEOUT) + 3
    started = time.monotonic()
    with pytest.raises(DequeueTimeout):
        Queue.dequeue_any(worker.queues, wait, connection=worker.connection)
    took = time.monotonic() - started
    assert wait - 0.5 < took < wait + 3, took
