"""Fixtures for the jobs layer: isolation per test on the session's Redis, real workers.

The session's Redis is the root conftest's ``redis_url``. Every test gets its own key prefix,
queue name, runs root and unique run ids, so tests never see each other's keys and no test
ever needs to flush a server (we never flush one we did not start). The helpers these fixtures
build on live in ``tests/support``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runarchive.jobs.context import JobsContext, install
from runarchive.jobs.settings import Settings
from tests.support.channel import Recorder
from tests.support.workers import Workers


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    runs = tmp_path / "runs"
    runs.mkdir()
    return Settings(
        redis_url=redis_url,
        runs_root=runs,
        queue=f"test-{tag}",
        key_prefix=f"ra-test-{tag}",
        heartbeat_ttl=2.0,
        slot_grace=2.0,
        lock_ttl=30,
        data_dir=tmp_path / "data",
        scrub_interval=0,  # the periodic scrub off; its own tests turn it on
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[JobsContext]:
    context = JobsContext.from_settings(settings)
    install(context)  # hooks that run in this process (e.g. cancel) use it
    try:
        yield context
    finally:
        install(None)
        context.close()


@pytest.fixture
def runid() -> str:
    return f"run-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers(settings, logs)
    try:
        yield pool
    finally:
        pool.kill_all()


@pytest.fixture
def record(ctx: JobsContext) -> Iterator[Callable[[str], Recorder]]:
    made: list[Recorder] = []

    def start(runid: str) -> Recorder:
        rec = Recorder(ctx, ctx.keys.status_channel(runid))
        made.append(rec)
        return rec

    try:
        yield start
    finally:
        for rec in made:
            rec.close()
