"""When each run's kept undo expires, so the worker's maintenance can drop it on time.

The core keeps a restore's replaced tree until the next archive, restore or undo of the run,
or until it expires, and drops an expired one lazily whenever the run is touched. A run
nobody touches would keep it for ever, so every job notes the run's undo in one sorted set
(``Keys.undo_expiry``: run id → expiry, Unix seconds) and the maintenance of any worker that
sees the run asks the core to drop the expired ones (``core.expire_run_undo``: under the
run's lock; a busy run is retried at the next maintenance). The set is a schedule, never the
authority: the record in the run decides (``core.undo_info``).
"""

from __future__ import annotations

import logging
import time

from runarchive.core import RunArchiveError, RunRef, expire_run_undo, undo_info

from .context import JobsContext
from .runs import find_run

log = logging.getLogger(__name__)


def note_undo(ctx: JobsContext, run: RunRef) -> None:
    """Schedule the run's undo expiry, or forget it when the run keeps none; never raises."""
    try:
        info = undo_info(run)
        key = ctx.keys.undo_expiry()
        if info.available and info.expires is not None:
            ctx.clients.data.zadd(key, {run.runid: info.expires.timestamp()})
        else:
            ctx.clients.data.zrem(key, run.runid)
    except Exception:
        log.warning("could not note the undo of run %s", run.runid, exc_info=True)


def expire_undos(ctx: JobsContext, now: float | None = None) -> dict[str, bool]:
    """Drop the expired undos of the runs this host can see; return ``{runid: dropped}``."""
    key = ctx.keys.undo_expiry()
    due = ctx.clients.data.zrangebyscore(key, "-inf", time.time() if now is None else now)
    done: dict[str, bool] = {}
    for runid in due:
        run = find_run(ctx.settings, runid)
        if run is None:
            continue  # another host may see it; the core also drops it on the next operation
        try:
            done[runid] = expire_run_undo(run)
        except RunArchiveError:
            log.warning("could not expire the undo of run %s", runid, exc_info=True)
            continue
        note_undo(ctx, run)
    return done
