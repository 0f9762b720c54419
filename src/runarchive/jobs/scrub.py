"""The periodic scrub: every archive of every run verified once per interval, gently.

**Schedule.** Every worker asks at start and at each maintenance (``worker.startup_recovery``,
every minute) whether a pass is due (``schedule_scrub``). The pass is claimed deployment-wide by
compare-and-set on one key (``Keys.scrub_pass``: ``WATCH``, then in one ``MULTI``: set it to
``<pass id> <started>`` with the interval as its expiry, and enqueue the pass's first step), so
however many workers ask, exactly one pass starts per interval (``RUNARCHIVE_SCRUB_INTERVAL``
seconds, default a week; 0: never), and no claim is ever left without its job.

**Low priority, never long in the way.** Steps go to their own queue (``<queue>-scrub``), which
workers listen to *after* the main one, so a user's job always goes first. A pass is a chain of
steps (``scrub_rq``): each checks archives one at a time, in run id then name order, for at
most ``STEP_BUDGET`` seconds (the archive being checked when it runs out is finished), then
queues the next step with its cursor and returns: a worker is never taken from user jobs for
longer than one step. A step holds no slot and no run lock: it opens each archive by handle
and keeps its result only if the name still denotes the same unchanged file
(``core.check_archive``); an archive deleted mid-check is skipped. Reads are paced to
``RUNARCHIVE_SCRUB_RATE`` bytes per second (default 50 MiB/s; 0: unbounded).

**Failure.** A step whose pass is no longer the current one (the key expired and a newer pass
was claimed, or it was cleared) stops at once. A worker killed mid-step ends its chain: no
result was half-written (each is one ``HSET``), and the next interval's pass goes on from the
start (archives already checked in the current pass are skipped, ``health.is_fresh``).
Results and the damage line are ``jobs.health``'s.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis
from rq import get_current_job

from runarchive.core import RunArchiveError, archive_names, check_archive, open_run, runs_under

from .context import JobsContext, current
from .health import forget_missing, is_fresh, record_result

log = logging.getLogger(__name__)

STEP_BUDGET = 30.0  # seconds of checking per step before the next step is queued


def _current_pass(ctx: JobsContext) -> tuple[str, float] | None:
    raw = ctx.clients.data.get(ctx.keys.scrub_pass())
    if not isinstance(raw, str):
        return None
    pass_id, _, started = raw.partition(" ")
    try:
        return pass_id, float(started)
    except ValueError:
        return None


def schedule_scrub(ctx: JobsContext, now: float | None = None) -> str | None:
    """Start a scrub pass if none was started this interval; return its id, or None.

    Compare-and-set: the key is watched, found absent, then set and the first step enqueued
    in one transaction; a concurrent claim makes the transaction fail and this call return None.
    """
    interval = ctx.settings.scrub_interval
    if interval <= 0:
        return None
    key = ctx.keys.scrub_pass()
    pass_id = uuid.uuid4().hex
    started = time.time() if now is None else now
    with ctx.clients.rq.pipeline() as pipe:
        try:
            pipe.watch(key)
            if pipe.exists(key):
                return None
            pipe.multi()
            pipe.set(key, f"{pass_id} {started!r}", ex=interval)
            _enqueue_step(ctx, pass_id, None, None, pipe)
            pipe.execute()
        except redis.exceptions.WatchError:
            return None
    log.info("scrub pass %s started", pass_id)
    return pass_id


def _enqueue_step(
    ctx: JobsContext, pass_id: str, after_run: str | None, after_name: str | None, pipe: Any
) -> None:
    ctx.scrub_queue().enqueue_call(
        scrub_rq,
        args=(pass_id, after_run, after_name),
        timeout=ctx.settings.job_timeout,
        result_ttl=ctx.settings.result_ttl,
        failure_ttl=ctx.settings.result_ttl,
        description=f"scrub_rq({pass_id})",
        meta={"prefix": ctx.settings.key_prefix, "scrub": pass_id},  # no runid: holds no run
        pipeline=pipe,
    )


def scrub_rq(
    pass_id: str, after_run: str | None = None, after_name: str | None = None
) -> dict[str, Any]:
    """RQ job: one step of scrub pass ``pass_id``, after archive ``after_name`` of run
    ``after_run`` (None: from the start); queues the next step when its budget runs out."""
    job = get_current_job()
    prefix = job.meta.get("prefix") if job is not None else None
    ctx = current().with_prefix(prefix)
    return run_step(ctx, pass_id, after_run, after_name)


def run_step(
    ctx: JobsContext,
    pass_id: str,
    after_run: str | None = None,
    after_name: str | None = None,
    budget: float = STEP_BUDGET,
) -> dict[str, Any]:
    """Check archives of the pass from the cursor on, for about ``budget`` seconds."""
    claimed = _current_pass(ctx)
    if claimed is None or claimed[0] != pass_id:
        return {"pass": pass_id, "stopped": "superseded", "checked": 0, "damaged": 0}
    started = claimed[1]
    settings = ctx.settings
    deadline = time.monotonic() + budget
    checked = damaged = 0
    if settings.runs_root is None:
        return {"pass": pass_id, "done": True, "checked": 0, "damaged": 0}
    for path in runs_under(settings.runs_root, settings.run_layout):
        runid = path.name
        if after_run is not None and runid < after_run:
            continue
        try:
            with open_run(path) as run:
                names = sorted(archive_names(run))
                forget_missing(ctx, runid, names)
                for name in names:
                    if runid == after_run and after_name is not None and name <= after_name:
                        continue
                    if is_fresh(ctx, run, name, started):
                        continue
                    if _current_pass(ctx) != claimed:
                        return {"pass": pass_id, "stopped": "superseded", "checked": checked,
                                "damaged": damaged}  # fmt: skip
                    result = check_archive(run, name, rate=settings.scrub_rate)
                    if result is not None:
                        checked += 1
                        damaged += not result.ok
                        record_result(ctx, runid, result)
                    if time.monotonic() >= deadline:
                        with ctx.clients.rq.pipeline() as pipe:
                            _enqueue_step(ctx, pass_id, runid, name, pipe)
                            pipe.execute()
                        return {"pass": pass_id, "next": [runid, name], "checked": checked,
                                "damaged": damaged}  # fmt: skip
        except (RunArchiveError, OSError) as exc:
            log.warning("scrub of run %s skipped: %s", runid, exc)
    log.info("scrub pass %s done", pass_id)
    return {"pass": pass_id, "done": True, "checked": checked, "damaged": damaged}
