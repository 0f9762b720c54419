"""Deleting an archive: synchronous (no job), but under the same refusals as the jobs."""

from __future__ import annotations

from runarchive.core import ArchiveRef, RunRef, archive_ref
from runarchive.core import delete_archive as core_delete_archive

from .context import JobsContext
from .enqueue import running_job
from .errors import JobRunning
from .lines import archive_deleted_line
from .locks import ensure_unlocked
from .runs import locate_run


def delete_archive(ctx: JobsContext, run: str | RunRef, archive_name: str | ArchiveRef) -> int:
    """Delete ``archive_name`` of run ``runid`` and announce it on the run's channel; return
    the bytes it held.

    Refused (before touching anything) for a bad name (InvalidInput), an unknown run or archive
    (NotFound), a ``.nodb`` lock held (Locked: ``Cannot delete while files are locked: …``) or a
    job holding the run's slot (JobRunning).
    """
    name = archive_ref(archive_name).name
    located = locate_run(ctx.settings, run)
    runid = located.runid
    ensure_unlocked(ctx.clients.locks, runid, "delete")
    holder = running_job(ctx, runid)
    if holder is not None:
        raise JobRunning(runid, holder.job_id)
    freed = core_delete_archive(located.path, name)
    ctx.stream(runid).publish(archive_deleted_line(name))
    return freed
