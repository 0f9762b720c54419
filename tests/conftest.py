"""Shared fixtures: a fresh run directory per test (named like a real run id); the Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import serve_redis

# The scrub is periodic: left on, every worker a test starts would queue a pass over its runs
# and read their archives in the background. Its own tests (and benchmarks) turn it on.
os.environ["RUNARCHIVE_SCRUB_INTERVAL"] = "0"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs" / "ambitious-pinecone"
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One embedded valkey per session (started on first use), or ``RUNARCHIVE_TEST_REDIS_URL``."""
    yield from serve_redis(tmp_path_factory.mktemp("valkey"))
