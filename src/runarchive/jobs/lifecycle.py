"""How a job ends, whichever way it ends: one final TRIGGER, slot freed, locks freed, run recovered.

Every job starts with ``begin_job``: it holds its run's slot (verified, or claimed if a job was
started outside ``enqueue``), or another job does and it ends at once as failed.
Every path that can see a job end calls ``finish_job``:

=====================================  =========================================================
how the job ended                      who calls ``finish_job``
=====================================  =========================================================
returned / raised (incl. RQ timeout)   the job itself (``tasks``), in the work horse
work horse killed (SIGKILL, OOM)       the worker's horse-killed handler (``on_horse_killed``)
stopped (``send_stop_job_command``)    RQ's ``on_stopped`` callback
abandoned (whole worker died)          RQ's ``on_failure`` callback, from the registry cleanup of
                                       any worker, *and* ``reconcile`` (lease expired), whichever
                                       comes first
canceled while queued, lost by Redis   ``reconcile`` (worker start, every claim, periodically)
=====================================  =========================================================

``finish_job`` first records the job's end in the audit log (``audit.py``: one event id per
job, so every racing path stores the same single row), then claims ``<prefix>:job:<id>:final``
with SET NX and, in the same server-side script, publishes the ``EXCEPTION``/``COMPLETED`` line
and the TRIGGER: only the winner publishes,
and a process killed at any instant has done both or neither, so there is exactly one final
trigger per job however many of these paths race and whenever they die. It then releases the
job's quota reservations (``reservation``) and frees the slot (compare-and-delete on the job
id).

When a job died rather than ended, its run may hold a half-written temp archive or an
interrupted restore: the run id goes into ``<prefix>:recover`` and a process that can see the
run calls the core's ``recover_run`` (at once when it can, else at the next worker start), which
leaves the run exactly as before the restore or exactly as the archive. The job's NoDb locks are
deleted by job id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rq import Queue
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.registry import StartedJobRegistry
from rq.utils import now as rq_now

from runarchive.core import Busy, Outcome, RunArchiveError, recover_run

from .audit import job_end_event, record
from .context import JobsContext, current
from .errors import JobRunning
from .lines import error_line, job_line, trigger_line
from .locks import release_job_locks
from .reservation import release_reservation
from .runs import find_run, run_dir_candidates
from .settings import Settings
from .slot import (
    Slot,
    fetch_job,
    is_local_holder,
    iter_slots,
    read_slot,
    release_slot,
    slot_ttl,
    stale_reason,
    take_slot,
)
from .vocabulary import Event, JobKind

log = logging.getLogger(__name__)


def finish_job(
    ctx: JobsContext,
    runid: str,
    job_id: str,
    kind: JobKind,
    *,
    ok: bool,
    error: str | None = None,
    on_won: Callable[[], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    canceled: bool = False,
    nbytes: int | None = None,
    archive: str | None = None,
    detail: str | None = None,
) -> bool:
    """Record the job's end, publish its final lines if nobody did yet, then free its slot;
    return if we published.

    The audit row (``audit.job_end_event``: ``meta`` is the job's, naming who asked) is
    recorded before the final trigger, so no job is reported done without its row.
    """
    outcome = Outcome.DONE if ok else Outcome.CANCELED if canceled else Outcome.FAILED
    event = job_end_event(
        runid, job_id, kind, outcome, meta=meta, nbytes=nbytes, archive=archive,
        detail=detail if ok else error,
    )  # fmt: skip
    record(ctx.audit(), event)
    data = ctx.clients.data
    keys = ctx.keys
    trigger = kind.trigger(ok)
    lines = []
    if error and not ok:
        lines.append(error_line(error, server_paths(ctx.settings, runid)))
    lines.append(job_line(job_id, Event.COMPLETED if ok else Event.EXCEPTION, kind.call(runid)))
    lines.append(trigger_line(job_id, trigger))
    # Marker and lines in one script: a process killed at any instant has published all of
    # them or none (the slot stays held and a later reconcile publishes them); a Redis error
    # raises with nothing claimed. Nothing after it (RQ's bookkeeping in ``on_won``
    # included) can keep the final trigger from going out.
    won = ctx.stream(runid).publish_final(
        keys.job_final(job_id), trigger.value, ctx.settings.result_ttl, lines
    )
    if won and on_won is not None:
        try:
            on_won()
        except Exception:
            log.exception("job %s: bookkeeping after its final trigger failed", job_id)
    # After the archive is published (or is certain never to be): see reservation's notes.
    release_reservation(data, keys, job_id)
    release_slot(data, keys, runid, job_id)
    data.delete(keys.job_alive(job_id))
    return won


def begin_job(ctx: JobsContext, runid: str, job_id: str, kind: JobKind) -> None:
    """Make the starting job its run's slot holder, or raise JobRunning naming the holder.

    Every job checks when it starts, not only ``enqueue``: a job started another way (``rq
    requeue``, a dashboard's Requeue, ``Queue.enqueue``) finds the slot free and claims it, or
    held by another job and must end at once without touching the run. A job id that ran before
    (a requeue) still has that run's final marker; it is cleared first, so this run publishes
    its own final trigger (exactly one: ``finish_job`` still claims the marker with SET NX).
    """
    data = ctx.clients.data
    data.delete(ctx.keys.job_final(job_id))
    holder = take_slot(data, ctx.keys, runid, job_id, kind.value, ttl=slot_ttl(ctx.settings))
    if holder != job_id:
        raise JobRunning(runid, holder)


def server_paths(settings: Settings, runid: str) -> list[tuple[str, str]]:
    """Return this deployment's paths and the public names ``Error:`` lines show instead.

    The run's directory reads as its run id, the runs root as ``<runs root>``, the data dir as
    ``<data dir>``, a unix-socket Redis as ``<redis>``; as given and as resolved (an OSError
    names the path it was handed, which may be either).
    """
    pairs: list[tuple[Path, str]] = []
    with suppress(RunArchiveError):  # no runs root, or an id naming no directory
        pairs += [(candidate, runid) for candidate in run_dir_candidates(settings, runid)]
    if settings.runs_root is not None:
        pairs.append((Path(settings.runs_root), "<runs root>"))
    pairs.append((Path(settings.data_dir), "<data dir>"))
    url = settings.redis_url or ""
    if url.startswith("unix:"):
        pairs.append((Path(urlsplit(url).path), "<redis>"))
    found: dict[str, str] = {}
    for path, public in pairs:
        for variant in (path.absolute(), Path(os.path.realpath(path))):
            found.setdefault(str(variant), public)
    return list(found.items())


def final_trigger(ctx: JobsContext, job_id: str) -> str | None:
    """Return the trigger published for the job, or None if none was yet."""
    value = ctx.clients.data.get(ctx.keys.job_final(job_id))
    return str(value) if value is not None else None


def mark_failed(ctx: JobsContext, job: Job, reason: str) -> None:
    """Move a job whose process died from STARTED (or taken but QUEUED) to FAILED in RQ.

    The started registry's members are ``<job id>:<execution id>``; they are found by that
    prefix, not through the execution hashes, which RQ may already have expired (a worker
    restarted minutes after the crash): a missing execution counts as removed.
    """
    rq = ctx.clients.rq
    job.ended_at = rq_now()
    registry = StartedJobRegistry(job.origin, connection=rq)
    prefix = f"{job.id}:".encode()
    members = [
        m for m, _ in rq.zscan_iter(registry.key, match=prefix + b"*") if m.startswith(prefix)
    ]
    with rq.pipeline() as pipe:
        if members:
            pipe.zrem(registry.key, *members)
        # a job taken but never started is still in RQ's intermediate queue
        pipe.lrem(Queue(job.origin, connection=rq).intermediate_queue_key, 0, job.id)
        pipe.hset(job.key, "ended_at", job.ended_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        record_job_failure(job, f"Abandoned: {reason}", pipe)
        pipe.execute()


def schedule_recovery(ctx: JobsContext, runid: str) -> None:
    """Note that the run may hold an interrupted operation, and recover it now if visible."""
    ctx.clients.data.sadd(ctx.keys.pending_recovery(), runid)
    recover_pending(ctx, [runid])


def recover_pending(ctx: JobsContext, runids: Iterable[str] | None = None) -> dict[str, str]:
    """Recover the pending runs this host can see; return ``{runid: action}``."""
    data = ctx.clients.data
    key = ctx.keys.pending_recovery()
    wanted = set(runids) if runids is not None else None
    done: dict[str, str] = {}
    for runid in sorted(data.smembers(key)):
        if wanted is not None and runid not in wanted:
            continue
        run = find_run(ctx.settings, runid)
        if run is None:
            continue  # another host may see it; the core also recovers on the next operation
        try:
            result = recover_run(run)
        except Busy:
            continue  # an operation holds the run; it recovers the run itself first
        except RunArchiveError:
            log.exception("could not recover run %s", runid)
            continue
        data.srem(key, runid)
        done[runid] = result.action
        log.info("recovered run %s: %s", runid, result.action)
    return done


@dataclass(frozen=True, slots=True)
class Reaped:
    """A stale slot that ``reconcile`` finished and freed."""

    runid: str
    job_id: str
    kind: str
    reason: str
    published: bool


def _kind(value: Any) -> JobKind:
    try:
        return JobKind(value)
    except ValueError:
        return JobKind.ARCHIVE


def reap(ctx: JobsContext, slot: Slot, reason: str) -> Reaped:
    """Finish a stale slot's job as failed (or completed, if RQ says finished) and free it.

    A dead local operation (the CLI) is no job: its locks and slot are freed and its run
    recovered, and no trigger is published.
    """
    if is_local_holder(slot.job_id):
        release_job_locks(ctx.clients.locks, slot.runid, slot.job_id)
        release_slot(ctx.clients.data, ctx.keys, slot.runid, slot.job_id)
        schedule_recovery(ctx, slot.runid)
        log.warning("freed slot of run %s held by dead %s (%s)", slot.runid, slot.job_id, reason)
        return Reaped(slot.runid, slot.job_id, slot.kind, reason, False)
    job = fetch_job(ctx.clients.rq, slot.job_id)
    status = job.get_status(refresh=False) if job is not None else None
    ok = status == JobStatus.FINISHED
    died = status in {None, JobStatus.STARTED, JobStatus.FAILED, JobStatus.STOPPED}

    def fail_in_rq() -> None:
        # QUEUED here means taken by a worker that died before the start (see stale_reason)
        if job is not None and status in (JobStatus.STARTED, JobStatus.QUEUED):
            mark_failed(ctx, job, reason)

    published = finish_job(
        ctx,
        slot.runid,
        slot.job_id,
        _kind(slot.kind),
        ok=ok,
        error=f"job {slot.job_id} ended without finishing ({reason})",
        on_won=fail_in_rq,
        meta=job.meta if job is not None else None,
    )
    if not ok and died:
        release_job_locks(ctx.clients.locks, slot.runid, slot.job_id)
        schedule_recovery(ctx, slot.runid)
    log.warning("freed stale slot of run %s (job %s: %s)", slot.runid, slot.job_id, reason)
    return Reaped(slot.runid, slot.job_id, slot.kind, reason, published)


def reconcile(ctx: JobsContext, runids: Iterable[str] | None = None) -> list[Reaped]:
    """Free every stale slot (of ``runids``, or all); return what was freed."""
    if runids is None:
        slots: list[Slot] = list(iter_slots(ctx.clients.data, ctx.keys))
    else:
        slots = [s for r in runids if (s := read_slot(ctx.clients.data, ctx.keys, r)) is not None]
    reaped = []
    for slot in slots:
        reason = stale_reason(ctx.clients.data, ctx.clients.rq, ctx.settings, slot)
        if reason is not None:
            reaped.append(reap(ctx, slot, reason))
    return reaped


# --- RQ hooks: run in whichever process sees the end; the job carries runid/kind/prefix -------


def end_abnormally(
    job: Job, error: str, *, ctx: JobsContext | None = None, recover: bool = True
) -> bool:
    """Finish a job that did not finish itself; free its locks and recover its run."""
    runid = job.meta.get("runid")
    if not runid:
        return False  # not one of ours
    ctx = (ctx or current()).with_prefix(job.meta.get("prefix"))
    won = finish_job(
        ctx, runid, job.id, _kind(job.meta.get("kind")), ok=False, error=error, meta=job.meta
    )
    if won and recover:
        release_job_locks(ctx.clients.locks, runid, job.id)
        schedule_recovery(ctx, runid)
    return won


def on_job_failure(job: Job, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ ``on_failure`` callback: a no-op when the job already finished itself."""
    end_abnormally(job, f"job {job.id} failed: {exc_value or getattr(exc_type, '__name__', '')}")


def on_job_stopped(job: Job, connection: Any) -> None:
    """RQ ``on_stopped`` callback."""
    end_abnormally(job, f"job {job.id} was stopped")


def on_horse_killed(job: Job, retpid: int | None, ret_val: int | None, rusage: Any) -> None:
    """Worker hook for a work horse that died without finishing (SIGKILL, OOM killer)."""
    end_abnormally(job, f"job {job.id} was killed (wait status {ret_val})")
