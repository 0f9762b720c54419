"""What pollers see of a job: its RQ status, times and progress (the web's jobstatus/jobinfo)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rq.job import JobStatus
from rq.results import Result

from runarchive.core import NotFound, iso_utc

from .context import JobsContext
from .lifecycle import final_trigger, reconcile
from .slot import fetch_job

# Every state ``job_status`` may report (RQ's), for clients that keep them as constants.
JOB_STATES: tuple[str, ...] = tuple(s.value for s in JobStatus)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_utc(moment)


def job_status(ctx: JobsContext, job_id: str, *, with_exc_info: bool = False) -> dict[str, Any]:
    """Return ``{id, runid, kind, status, started_at, ended_at, progress, trigger}``.

    ``status`` is RQ's (queued, started, finished, failed, stopped, canceled …); ``trigger`` is
    the final trigger once published. ``exc_info`` (the traceback) is added on request only,
    since it may reveal paths: the web layer shows it to users who may write the run.
    """
    job = fetch_job(ctx.clients.rq, job_id)
    if job is None:
        raise NotFound(f"Job not found: {job_id}")
    meta = job.get_meta(refresh=False)
    status = job.get_status(refresh=False)
    runid = meta.get("runid")
    job_ctx = ctx.with_prefix(meta.get("prefix"))
    # A page polling a job whose worker died learns it as soon as the job's lease has
    # expired, not at the next maintenance of some worker a minute later.
    unended = isinstance(runid, str) and final_trigger(job_ctx, job.id) is None
    if unended and reconcile(job_ctx, [str(runid)]):
        job = fetch_job(ctx.clients.rq, job_id) or job
        status = job.get_status(refresh=False)
    info: dict[str, Any] = {
        "id": job.id,
        "runid": meta.get("runid"),
        "kind": meta.get("kind"),
        "status": getattr(status, "value", status),
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
        "progress": meta.get("progress"),
        "trigger": final_trigger(job_ctx, job.id),
    }
    if with_exc_info:
        result = job.latest_result()
        failed = result is not None and result.type == Result.Type.FAILED
        info["exc_info"] = result.exc_string if failed and result is not None else None
    return info
