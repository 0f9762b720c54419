"""Starting jobs: check, claim the run's slot, enqueue, announce. Used by the CLI and the web API.

``enqueue_archive``/``enqueue_restore`` do, in order:

1. validate the run id (and the archive name or comment) and resolve the run (InvalidInput,
   NotFound); for a restore, check the archive exists (NotFound);
2. refuse while any ``.nodb`` lock of the run is held (Locked, HTTP 409);
3. reconcile the run's slot (a slot whose job died is finished and freed here);
4. claim the slot atomically with a fresh job id (JobRunning, HTTP 409, names the holder);
5. in one Redis transaction: save and push the RQ job, and publish + retain
   ``rq:<id> ENQUEUED <call>``, so no worker can start the job before the line is out;
   if that fails the slot is released and the error raised (QueueUnavailable, HTTP 503).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import redis
from rq import Callback

from runarchive.core import (
    Comment,
    check_run,
    normalize_comment,
    open_archive_fd,
    open_run,
    parse_link_mode,
    validate_archive_name,
    validate_runid,
)

from .connection import redact
from .context import JobsContext
from .errors import JobRunning, QueueUnavailable
from .lifecycle import on_job_failure, on_job_stopped, reconcile
from .lines import job_line
from .locks import ensure_unlocked
from .runs import resolve_run
from .slot import Slot, claim_slot, read_slot, release_slot, slot_ttl
from .tasks import archive_rq, restore_archive_rq
from .vocabulary import Event, JobKind


def _unavailable(ctx: JobsContext, exc: Exception) -> QueueUnavailable:
    url = redact(ctx.settings.redis_url or "")
    return QueueUnavailable(detail=f"Redis at {url}: {exc}")


def enqueue_archive(
    ctx: JobsContext, runid: str, comment: str | Comment | None = None, links: str | None = None
) -> str:
    """Queue an archive of run ``runid``; return the job id.

    ``links`` (``store``/``follow``, InvalidInput otherwise) defaults to the ``links``
    setting; it is resolved here, so the job does what was asked whatever the worker's setting.
    """
    text = normalize_comment(comment)
    mode = parse_link_mode(ctx.settings.links if links is None else links)
    args = (runid, text or None, mode.value)
    return _enqueue(ctx, JobKind.ARCHIVE, runid, archive_rq, args, None)


def enqueue_restore(ctx: JobsContext, runid: str, archive_name: str) -> str:
    """Queue a restore of run ``runid`` from ``archive_name``; return the job id."""
    validate_archive_name(archive_name)
    return _enqueue(
        ctx, JobKind.RESTORE, runid, restore_archive_rq, (runid, archive_name), archive_name
    )


def _enqueue(
    ctx: JobsContext,
    kind: JobKind,
    runid: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    archive_name: str | None,
) -> str:
    validate_runid(runid)
    run_dir = resolve_run(ctx.settings, runid)
    # Refuse now what the job would refuse (409), before a job is queued or a slot taken.
    with open_run(run_dir) as run:
        check_run(run)
        if archive_name is not None:
            run.require_writable()
            os.close(open_archive_fd(run, archive_name)[0])  # NotFound when it is not there
    try:
        reconcile(ctx, [runid])
        data = ctx.clients.data
        # A job holding the run holds its locks too: name the job, the more useful answer.
        holder = read_slot(data, ctx.keys, runid)
        if holder is not None:
            raise JobRunning(runid, holder.job_id)
        ensure_unlocked(ctx.clients.locks, runid, kind.verb)
        job_id = str(uuid.uuid4())
        if not claim_slot(data, ctx.keys, runid, job_id, kind.value, ttl=slot_ttl(ctx.settings)):
            holder = read_slot(data, ctx.keys, runid)
            raise JobRunning(runid, holder.job_id if holder is not None else "unknown")
        try:
            _push(ctx, kind, runid, func, args, archive_name, job_id)
        except BaseException:
            release_slot(data, ctx.keys, runid, job_id)
            raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise _unavailable(ctx, exc) from exc
    return job_id


def _push(
    ctx: JobsContext,
    kind: JobKind,
    runid: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    archive_name: str | None,
    job_id: str,
) -> None:
    settings = ctx.settings
    call = kind.call(runid, archive_name)
    with ctx.clients.rq.pipeline() as pipe:
        ctx.queue().enqueue_call(
            func,
            args=args,
            job_id=job_id,
            timeout=settings.job_timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=settings.result_ttl,
            description=call,
            meta={"runid": runid, "kind": kind.value, "prefix": settings.key_prefix},
            on_failure=Callback(on_job_failure),
            on_stopped=Callback(on_job_stopped),
            pipeline=pipe,
        )
        ctx.stream(runid).add_to(pipe, job_line(job_id, Event.ENQUEUED, call))
        pipe.execute()


def running_job(ctx: JobsContext, runid: str) -> Slot | None:
    """Return the job holding the run's slot after freeing a stale one, or None."""
    validate_runid(runid)
    reconcile(ctx, [runid])
    return read_slot(ctx.clients.data, ctx.keys, runid)
