"""Real post-fork hooks for the tests: one that holds a fork while its new run is staged,
one that fails. Configured like any hook (``RUNARCHIVE_POST_FORK_HOOKS=tests.jobs.forkhooks:…``).
"""

from __future__ import annotations

import time

from runarchive.jobs.hooks import ForkHookContext

HOLD = "tests.jobs.forkhooks:hold"
FAIL = "tests.jobs.forkhooks:fail"
WAIT = 60.0


def paused_key(new_runid: str) -> str:
    return f"test-fork-pause:{new_runid}:paused"


def go_key(new_runid: str) -> str:
    return f"test-fork-pause:{new_runid}:go"


def hold(ctx: ForkHookContext) -> None:
    """Say ``paused`` (the run staged, not visible yet) and wait for ``go``."""
    client = ctx.data_client
    client.set(paused_key(ctx.runid), str(ctx.stage_dir), ex=300)
    deadline = time.monotonic() + WAIT
    while not client.exists(go_key(ctx.runid)) and time.monotonic() < deadline:
        time.sleep(0.02)


def fail(ctx: ForkHookContext) -> None:
    raise RuntimeError("the host could not rewrite its state files")
