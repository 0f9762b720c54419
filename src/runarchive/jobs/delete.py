"""Deleting an archive: synchronous (no job), but under the same refusals as the jobs."""

from __future__ import annotations

from runarchive.core import delete_archive as core_delete_archive
from runarchive.core import validate_archive_name

from .context import JobsContext
from .enqueue import running_job
from .errors import JobRunning
from .lines import archive_deleted_line
from .locks import ensure_unlocked
from .runs import resolve_run


def delete_archive(ctx: JobsContext, runid: str, archive_name: str) -> None:
    """Delete ``archive_name`` of run ``runid`` and announce it on the run's channel.

    Refused (before touching anything) for a bad name (InvalidInput), an unknown run or archive
    (NotFound), a ``.nodb`` lock held (Locked: ``Cannot delete while files are locked: …``) or a
    job holding the run's slot (JobRunning).
    """
    validate_archive_name(archive_name)
    run_dir = resolve_run(ctx.settings, runid)
    ensure_unlocked(ctx.clients.locks, runid, "delete")
    holder = running_job(ctx, runid)
    if holder is not None:
        raise JobRunning(runid, holder.job_id)
    core_delete_archive(run_dir, archive_name)
    ctx.stream(runid).publish(archive_deleted_line(archive_name))
