"""A real post-restore hook that holds a restore after its swap until the test lets it go.

Configured like any hook (``RUNARCHIVE_POST_RESTORE_HOOKS=tests.jobs.pausehook:hold``), it
makes the window between a restore's swap and its end as long as a test needs: it says
``paused`` in Redis, then waits (at most ``WAIT`` seconds) for ``go``.
"""

from __future__ import annotations

import time

from runarchive.jobs.hooks import HookContext

SPEC = "tests.jobs.pausehook:hold"
WAIT = 60.0


def paused_key(runid: str) -> str:
    return f"test-pause:{runid}:paused"


def go_key(runid: str) -> str:
    return f"test-pause:{runid}:go"


def hold(ctx: HookContext) -> None:
    """Say ``paused`` and wait for ``go``."""
    client = ctx.data_client
    client.set(paused_key(ctx.runid), "1", ex=300)
    deadline = time.monotonic() + WAIT
    while not client.exists(go_key(ctx.runid)) and time.monotonic() < deadline:
        time.sleep(0.02)
