"""The worker: RQ's forking worker on the runarchive queue (then the scrub's), plus crash recovery.

On start (and then with RQ's maintenance, every ``MAINTENANCE_INTERVAL`` seconds while the
worker loop runs) the worker reconciles every stale slot of the deployment and recovers the
pending runs it can see (interrupted restores, half-written archives of jobs that died), and
drops the undos that expired (``expiry.expire_undos``) and removes the stages of forks whose
process died (``core.recover_forks_in`` on the runs root and its shards). A work
horse that dies without finishing (SIGKILL, OOM killer) is finished by the worker at once
(``lifecycle.on_horse_killed``); a worker that dies whole is noticed by the liveness lease
(``reconcile``) or, later, by RQ's abandoned-job cleanup in any other worker.

Several workers on several hosts may share one Redis and the runs filesystem: the slot keeps
one job per run deployment-wide, the core's run lock keeps one operation per run, and every
reconciler is idempotent (compare-and-delete slot, SET NX final marker).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from types import FrameType
from typing import Any

from rq import Worker

from runarchive.core import recover_forks_in

from .connection import EmbeddedRedis
from .context import JobsContext, current, install
from .expiry import expire_undos
from .lifecycle import on_horse_killed, reconcile, recover_pending
from .runs import fork_holders
from .scrub import schedule_scrub
from .settings import Settings

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 60


class RunArchiveWorker(Worker):
    """RQ's ``Worker`` that finishes killed horses and reconciles slots in its maintenance."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("work_horse_killed_handler", on_horse_killed)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        super().__init__(*args, **kwargs)

    def run_maintenance_tasks(self) -> None:
        """Run RQ's maintenance (abandoned jobs …), then free stale slots and recover runs."""
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        startup_recovery(current())


def worker_count(ctx: JobsContext) -> int:
    """Return how many workers listen on the deployment's queue (for health checks)."""
    return int(Worker.count(queue=ctx.queue()))


def startup_recovery(ctx: JobsContext) -> None:
    """Free stale slots, recover the pending runs and drop expired undos this host can see,
    and start the scrub's pass when one is due; never raises."""
    try:
        for reaped in reconcile(ctx):
            log.warning(
                "freed slot of run %s: job %s %s", reaped.runid, reaped.job_id, reaped.reason
            )
        for runid, action in recover_pending(ctx).items():
            log.warning("recovered run %s: %s", runid, action)
        for runid, dropped in expire_undos(ctx).items():
            if dropped:
                log.info("dropped the expired undo of run %s", runid)
        schedule_scrub(ctx)  # at most one pass per interval, however many workers ask
        for folder in fork_holders(ctx.settings):  # stages of forks whose process died
            if removed := recover_forks_in(folder):
                log.warning("removed %d stage(s) of dead forks in %s", removed, folder)
    except Exception:
        log.exception("reconcile failed; will retry at the next maintenance")


def make_worker(ctx: JobsContext, name: str | None = None) -> RunArchiveWorker:
    """The deployment's worker on its queue, then the scrub's, on the RQ client's pool."""
    # The scrub's queue last: RQ takes from the first non-empty queue, so user jobs go first.
    queues = [ctx.queue(), ctx.scrub_queue()]
    worker = RunArchiveWorker(queues, connection=ctx.clients.rq, name=name)
    # RQ raises the pool's socket timeout above its blocking pop's (dequeue timeout + 10 s),
    # but only for connections made after: one opened before (by the start-up recovery) kept
    # the client's 5 s, so the 405 s BLPOP read through it timed out every ~37 s (7 tries of
    # 5 s), logged "could not connect to Redis" and left a moment in which the server pops a
    # job for a client that has just given up on it. Closing and forgetting them (a pool
    # reconnects a connection it keeps with that connection's own timeout) makes each anew.
    pool = ctx.clients.rq.connection_pool
    pool.disconnect()
    pool.reset()
    return worker


def _work(settings: Settings, burst: bool, name: str | None) -> bool:
    ctx = JobsContext.from_settings(settings)
    install(ctx)
    try:
        startup_recovery(ctx)
        worker = make_worker(ctx, name)
        return bool(worker.work(burst=burst, logging_level="INFO"))
    finally:
        install(None)
        ctx.close()


def _child(settings: Settings, burst: bool, name: str | None) -> None:
    os._exit(0 if _work(settings, burst, name) or burst else 1)


def run_worker(
    settings: Settings, *, burst: bool = False, workers: int = 1, name: str | None = None
) -> bool:
    """Run ``workers`` worker processes until stopped (or, with ``burst``, the queue is empty).

    Without a Redis URL, start (or join) the embedded server in ``settings.data_dir`` first.
    Return whether any job was processed (single worker) or all workers exited cleanly.
    """
    embedded: EmbeddedRedis | None = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir)
        settings = settings.with_overrides(redis_url=embedded.start())
    try:
        if workers <= 1:
            return _work(settings, burst, name)
        return _run_pool(settings, burst, workers, name)
    finally:
        if embedded is not None:
            embedded.stop()


def _run_pool(settings: Settings, burst: bool, workers: int, name: str | None) -> bool:
    mp = multiprocessing.get_context("fork")
    procs = [
        mp.Process(
            target=_child,
            args=(settings, burst, f"{name}-{i}" if name else None),
            name=f"runarchive-worker-{i}",
        )
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()

    def forward(signum: int, frame: FrameType | None) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for proc in procs:
            proc.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return all(proc.exitcode == 0 for proc in procs)
