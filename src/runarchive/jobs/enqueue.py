"""Starting jobs: check, claim the run's slot, enqueue, announce. Used by the CLI and the web API.

``enqueue_archive``/``enqueue_restore``/``enqueue_prune`` do, in order:

1. validate the run id (and the archive name or comment) and resolve the run (InvalidInput,
   NotFound) — once, into a ``JobRequest`` (``archive_request``/``restore_request``; a caller
   that resolved the run already passes its ``RunRef``, an ``ArchiveRef``, a ``Comment``);
   for a restore, check the archive exists (NotFound) and holds every chosen path
   (InvalidInput naming it); for an undo, that the run keeps something to undo
   (NothingToUndo, HTTP 409);
   a restore of an archive the scrub found damaged is refused too (DamagedArchive, HTTP 409,
   the damage named; ``health.refuse_damaged``);
2. refuse while any ``.nodb`` lock of the run is held (Locked, HTTP 409);
3. reconcile the run's slot (a slot whose job died is finished and freed here);
4. claim the slot atomically with a fresh job id (JobRunning, HTTP 409, names the holder);
   for an archive, check the run's quota and reserve the archive's bytes in each owner's
   (``reservation.archive_budget``: QuotaExceeded, HTTP 409, the slot released again); the
   job gets the reserved bytes as its write budget;
5. in one Redis transaction: save and push the RQ job, and publish + retain
   ``rq:<id> ENQUEUED <call>``, so no worker can start the job before the line is out;
   if that fails the slot is released and the error raised (QueueUnavailable, HTTP 503).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from rq import Callback

from runarchive.core import (
    ArchiveRef,
    Comment,
    LinkMode,
    NothingToUndo,
    RestorePaths,
    RunRef,
    archive_ref,
    check_restore_paths,
    check_run,
    open_archive_fd,
    open_run,
    parse_comment,
    parse_link_mode,
    parse_restore_paths,
    undo_info,
    validate_runid,
)

from .audit import META_KEY, job_meta
from .connection import redact
from .context import JobsContext
from .errors import JobRunning, QueueUnavailable
from .health import refuse_damaged
from .lifecycle import on_job_failure, on_job_stopped, reconcile
from .lines import job_line
from .locks import ensure_unlocked
from .reservation import OwnerQuota, archive_budget, release_reservation
from .runs import locate_run
from .slot import Slot, claim_slot, read_slot, release_slot, slot_ttl
from .tasks import archive_rq, prune_rq, restore_archive_rq, undo_restore_rq
from .vocabulary import Event, JobKind


def _unavailable(ctx: JobsContext, exc: Exception) -> QueueUnavailable:
    url = redact(ctx.settings.redis_url or "")
    return QueueUnavailable(detail=f"Redis at {url}: {exc}")


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job to start, every argument parsed once: the kind, the located run, and the
    archive and chosen paths (restore) or the comment and links mode (archive)."""

    kind: JobKind
    run: RunRef
    archive: ArchiveRef | None = None
    comment: Comment | None = None
    links: LinkMode = LinkMode.STORE
    paths: RestorePaths | None = None
    owners: tuple[OwnerQuota, ...] = ()  # an archive's owners whose quotas apply

    @property
    def runid(self) -> str:
        return self.run.runid

    @property
    def call(self) -> str:
        """The job's call as status lines and the RQ description spell it."""
        return self.kind.call(self.runid, self.archive.name if self.archive else None)

    def job(self, budget: int | None = None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """Return the RQ job function and its arguments (plain values: they cross Redis);
        ``budget``: an archive's byte budget, from its quotas."""
        if self.kind is JobKind.PRUNE:
            return prune_rq, (self.runid,)
        if self.kind is JobKind.UNDO:
            return undo_restore_rq, (self.runid,)
        if self.archive is not None:
            if self.paths is not None:
                return restore_archive_rq, (self.runid, self.archive.name, self.paths.as_list())
            return restore_archive_rq, (self.runid, self.archive.name)
        text = self.comment.text if self.comment is not None else ""
        if budget is not None:
            return archive_rq, (self.runid, text or None, self.links.value, budget)
        return archive_rq, (self.runid, text or None, self.links.value)


def archive_request(
    ctx: JobsContext,
    run: str | RunRef,
    comment: str | Comment | None = None,
    links: str | LinkMode | None = None,
    owners: Sequence[OwnerQuota] = (),
) -> JobRequest:
    """Parse an archive job's arguments (InvalidInput, NotFound).

    ``links`` (``store``/``follow``) defaults to the ``links`` setting; it is resolved here, so
    the job does what was asked whatever the worker's setting. ``owners``: whose quotas the
    archive counts against (the web layer knows the owners; the site's per-run quota always
    applies).
    """
    parsed = parse_comment(comment)
    mode = parse_link_mode(ctx.settings.links if links is None else links)
    return JobRequest(
        JobKind.ARCHIVE, _located(ctx, run), comment=parsed, links=mode, owners=tuple(owners)
    )


def restore_request(
    ctx: JobsContext,
    run: str | RunRef,
    archive_name: str | ArchiveRef,
    paths: RestorePaths | list[str] | None = None,
) -> JobRequest:
    """Parse a restore job's arguments (InvalidInput, NotFound); ``paths``: only those."""
    archive = archive_ref(archive_name)  # a bad name is refused before the run is looked up
    chosen = parse_restore_paths(paths)
    return JobRequest(JobKind.RESTORE, _located(ctx, run), archive=archive, paths=chosen)


def undo_request(ctx: JobsContext, run: str | RunRef) -> JobRequest:
    """Parse an undo job's argument, the run (InvalidInput, NotFound)."""
    return JobRequest(JobKind.UNDO, _located(ctx, run))


def prune_request(ctx: JobsContext, run: str | RunRef) -> JobRequest:
    """Parse a prune job's arguments (InvalidInput, NotFound)."""
    return JobRequest(JobKind.PRUNE, _located(ctx, run))


def _located(ctx: JobsContext, run: str | RunRef) -> RunRef:
    """The run a caller located already, else looked up now (once)."""
    return run if isinstance(run, RunRef) else locate_run(ctx.settings, run)


def enqueue_archive(
    ctx: JobsContext,
    run: str | RunRef,
    comment: str | Comment | None = None,
    links: str | LinkMode | None = None,
    owners: Sequence[OwnerQuota] = (),
) -> str:
    """Queue an archive of run ``run`` within its quotas (and ``owners``'); return the job id."""
    return enqueue(ctx, archive_request(ctx, run, comment, links, owners))


def enqueue_restore(
    ctx: JobsContext,
    run: str | RunRef,
    archive_name: str | ArchiveRef,
    paths: RestorePaths | list[str] | None = None,
) -> str:
    """Queue a restore of run ``run`` (or of ``paths`` only) from ``archive_name``; return
    the job id."""
    return enqueue(ctx, restore_request(ctx, run, archive_name, paths))


def enqueue_undo(ctx: JobsContext, run: str | RunRef) -> str:
    """Queue an undo of run ``run``'s last restore; return the job id (NothingToUndo: 409)."""
    return enqueue(ctx, undo_request(ctx, run))


def enqueue_prune(ctx: JobsContext, run: str | RunRef) -> str:
    """Queue a prune of run ``run`` by its retention policy; return the job id."""
    return enqueue(ctx, prune_request(ctx, run))


def enqueue(ctx: JobsContext, request: JobRequest) -> str:
    """Start the job ``request`` describes (steps 2–5 above); return its id."""
    runid = request.runid
    # Refuse now what the job would refuse (409), before a job is queued or a slot taken.
    with open_run(request.run) as run:
        check_run(run)
        if request.archive is not None or request.kind is JobKind.PRUNE:
            run.require_writable()
        if request.archive is not None:
            os.close(open_archive_fd(run, request.archive)[0])  # NotFound when it is not there
            if request.paths is not None:
                check_restore_paths(run, request.archive, request.paths)
        if request.kind is JobKind.UNDO:
            run.require_writable()
            if not undo_info(request.run).available:
                raise NothingToUndo(
                    f"Run {runid} has nothing to undo: no restore since its last archive, "
                    "restore or undo, or what it kept has expired."
                )
    try:
        if request.kind is JobKind.RESTORE:
            assert request.archive is not None
            with open_run(request.run) as run:
                refuse_damaged(ctx, run, request.archive.name)  # 409 naming the damage
        reconcile(ctx, [runid])
        data = ctx.clients.data
        # A job holding the run holds its locks too: name the job, the more useful answer.
        holder = read_slot(data, ctx.keys, runid)
        if holder is not None:
            raise JobRunning(runid, holder.job_id)
        ensure_unlocked(ctx.clients.locks, runid, request.kind.verb)
        job_id = str(uuid.uuid4())
        kind = request.kind.value
        if not claim_slot(data, ctx.keys, runid, job_id, kind, ttl=slot_ttl(ctx.settings)):
            holder = read_slot(data, ctx.keys, runid)
            raise JobRunning(runid, holder.job_id if holder is not None else "unknown")
        try:
            budget = None
            if request.kind is JobKind.ARCHIVE:
                budget = archive_budget(ctx, request.run, request.owners, job_id)
            _push(ctx, request, job_id, budget)
        except BaseException:
            release_reservation(data, ctx.keys, job_id)
            release_slot(data, ctx.keys, runid, job_id)
            raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise _unavailable(ctx, exc) from exc
    return job_id


def _push(ctx: JobsContext, request: JobRequest, job_id: str, budget: int | None) -> None:
    settings = ctx.settings
    func, args = request.job(budget)
    meta: dict[str, Any] = {
        "runid": request.runid, "kind": request.kind.value, "prefix": settings.key_prefix
    }  # fmt: skip
    asked = job_meta()  # who asked (``audit.acting_as``): named again by the end's audit row
    if asked is not None:
        meta[META_KEY] = asked
    with ctx.clients.rq.pipeline() as pipe:
        ctx.queue().enqueue_call(
            func,
            args=args,
            job_id=job_id,
            timeout=settings.job_timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=settings.result_ttl,
            description=request.call,
            meta=meta,
            on_failure=Callback(on_job_failure),
            on_stopped=Callback(on_job_stopped),
            pipeline=pipe,
        )
        ctx.stream(request.runid).add_to(pipe, job_line(job_id, Event.ENQUEUED, request.call))
        pipe.execute()


def running_job(ctx: JobsContext, runid: str) -> Slot | None:
    """Return the job holding the run's slot after freeing a stale one, or None."""
    validate_runid(runid)
    reconcile(ctx, [runid])
    return read_slot(ctx.clients.data, ctx.keys, runid)
