"""The RQ job functions: thin adapters from a queued job to the core library.

``archive_rq(runid, comment)``, ``restore_archive_rq(runid, archive_name)`` and
``prune_rq(runid)`` each:

1. start a heartbeat thread that renews the job's liveness lease and its NoDb locks;
2. publish ``rq:<id> STARTED <call>``, then hold the run's slot (``lifecycle.begin_job``: ours,
   or free and claimed now for a job started outside ``enqueue``); another job's slot ends this
   one at once (``Error:`` naming the holder, ``TRIGGER … *_FAILED``), the run untouched;
3. locate the run and parse the archive name once (``RunRef``, ``ArchiveRef``: the arguments
   crossed Redis, so the job is an edge of its own), refuse if any ``.nodb`` lock is held
   (checked again here, not only at enqueue time), then take every ``.nodb`` lock of the run
   (for a restore: of the run and of the archive) so no writer can tear the snapshot or race
   the swap. One walk of the run and one central-directory parse per job: an archive locks
   what the core's scan names (``create_archive(on_scan=…)``) before a file is read; a
   restore walks the run for its ``.nodb`` files, opens the archive once for its own and
   hands that reader to ``restore_archive``;
4. call the core with a coalescing progress relay (``Adding``/``Restored``/``PROGRESS`` lines
   and ``job.meta["progress"]``) behind a cancel watch (``cancel.CancelWatch``: a canceled job
   raises ``Canceled`` at its next event, until the core's ``before_swap``/``before_publish``,
   where the job claims its swap); after a restore, run the post-restore hooks;
5. end through ``lifecycle.finish_job``: ``COMPLETED`` + ``TRIGGER … *_COMPLETE``, or on any
   exception (RQ's job timeout included) ``Error:`` + ``EXCEPTION`` + ``TRIGGER … *_FAILED``,
   then re-raise so RQ records the traceback for ``jobinfo``; then forget the cancel key.

A prune (``prune_rq``) checks the ``.nodb`` locks like delete, then removes what the run's
policy (else the site default) does not keep, oldest first, one ``Archive pruned: <name>`` line
per removal; its point of no cancel is its first removal. A successful archive is pruned in
the same job, after ``Archive ready:`` and before its final trigger: the new archive counts,
and it is never the one removed (a non-empty policy always keeps the newest). A prune error
there is published as ``Prune failed: <message>`` and the archive job still completes with
``ARCHIVE_COMPLETE``: the archive was made and published, which is what the job promised;
the archives the prune left are whole and the next archive or prune tries again.

Deaths the function cannot see (SIGKILL, OOM) are finished by ``lifecycle``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from types import TracebackType
from typing import Any

from rq import get_current_job
from rq.job import Job

from runarchive.core import (
    ArchiveReader,
    ArchiveRef,
    AuditAction,
    Outcome,
    Plan,
    ProgressEvent,
    RunArchiveError,
    RunDir,
    RunRef,
    Tree,
    archive_ref,
    create_archive,
    nodb_files,
    open_archive,
    open_run,
    outcome_of,
    parse_restore_paths,
    prune_archives,
    purge_trash,
    restore_archive,
    scan_run,
    undo_nodb_files,
    undo_restore,
)

from .audit import job_end_event, record
from .cancel import CancelWatch
from .context import JobsContext, current
from .errors import Canceled
from .expiry import note_undo
from .health import refuse_damaged
from .hooks import HookContext, load_hook
from .lifecycle import begin_job, finish_job, server_paths
from .lines import (
    archive_pruned_line,
    archive_ready_line,
    job_line,
    prune_failed_line,
    restore_complete_line,
    undo_complete_line,
)
from .locks import RunLocks, archive_nodb_files, ensure_unlocked
from .progress import ProgressRelay
from .runs import locate_run
from .stream import StatusStream
from .vocabulary import Event, JobKind

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the job's liveness lease (and the locks it tracks) from a daemon thread."""

    def __init__(self, ctx: JobsContext, job_id: str) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.locks: list[RunLocks] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runarchive-heartbeat", daemon=True)

    def beat(self) -> None:
        """Renew the lease and every tracked lock once."""
        ttl_ms = int(self.ctx.settings.heartbeat_ttl * 1000)
        self.ctx.clients.data.set(self.ctx.keys.job_alive(self.job_id), "1", px=ttl_ms)
        for held in list(self.locks):
            held.refresh()

    def _run(self) -> None:
        while not self._stop.wait(self.ctx.settings.heartbeat_interval):
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _JobRun:
    """The shared frame of both job functions."""

    def __init__(self, kind: JobKind, runid: str, archive_name: str | None = None) -> None:
        self.kind = kind
        self.runid = runid
        self.job: Job | None = get_current_job()
        prefix = self.job.meta.get("prefix") if self.job is not None else None
        self.ctx = current().with_prefix(prefix)
        self.job_id = self.job.id if self.job is not None else f"sync-{uuid.uuid4().hex}"
        self.cancel = CancelWatch(self.ctx, self.job_id)
        self.stream: StatusStream = self.ctx.stream(runid)
        self.archive_name = archive_name
        self.relay = ProgressRelay(
            self.stream,
            self.job_id,
            kind,
            rate=self.ctx.settings.status_rate,
            meta_sink=self._save_progress if self.job is not None else None,
        )

    def progress(self, event: ProgressEvent) -> None:
        """The core's progress callback: stop here if canceled, else relay the event."""
        self.cancel(event)
        self.relay(event)

    def _save_progress(self, progress: dict[str, Any]) -> None:
        assert self.job is not None
        self.job.meta["progress"] = progress
        self.job.save_meta()  # type: ignore[no-untyped-call]

    def locks(self, relpaths: list[str]) -> RunLocks:
        return RunLocks(
            self.ctx.clients.locks,
            self.runid,
            relpaths,
            verb=self.kind.verb,
            ttl=self.ctx.settings.lock_ttl,
            job_id=self.job_id,
        )

    def begin(self) -> None:
        """Hold the run's slot or raise JobRunning; label a job queued without our meta.

        A job canceled while queued that a worker dequeued all the same ends here, before it
        touches its slot, its final marker or its run.
        """
        self.cancel.check()
        begin_job(self.ctx, self.runid, self.job_id, self.kind)
        if self.job is not None and self.job.meta.get("runid") != self.runid:
            prefix = self.ctx.settings.key_prefix
            self.job.meta.update(runid=self.runid, kind=self.kind.value, prefix=prefix)
            self.job.save_meta()  # type: ignore[no-untyped-call]

    def started(self) -> None:
        self.stream.publish(
            job_line(self.job_id, Event.STARTED, self.kind.call(self.runid, self.archive_name))
        )

    @property
    def meta(self) -> dict[str, Any] | None:
        """The job's meta (who asked for it, for the audit row of its end)."""
        return self.job.meta if self.job is not None else None

    def failed(self, exc: BaseException) -> None:
        self.relay.flush()
        message = str(exc) or type(exc).__name__
        try:
            finish_job(
                self.ctx, self.runid, self.job_id, self.kind, ok=False, error=message,
                meta=self.meta, canceled=isinstance(exc, Canceled),
            )  # fmt: skip
        except Exception:
            log.exception("could not publish the end of job %s", self.job_id)
            return
        self.cancel.clear()

    def completed(
        self, nbytes: int | None = None, archive: str | None = None, detail: str | None = None
    ) -> None:
        finish_job(
            self.ctx, self.runid, self.job_id, self.kind, ok=True, meta=self.meta,
            nbytes=nbytes, archive=archive, detail=detail,
        )  # fmt: skip
        self.cancel.clear()


def archive_rq(
    runid: str, comment: str | None = None, links: str = "store", budget: int | None = None
) -> dict[str, Any]:
    """RQ job: snapshot run ``runid`` into a new archive, publishing its status lines.

    ``budget``: the bytes its quotas reserved (``reservation``); the core aborts the archive,
    keeping nothing, as soon as it would pass them.
    """
    frame = _JobRun(JobKind.ARCHIVE, runid)
    with Heartbeat(frame.ctx, frame.job_id) as heartbeat:
        frame.started()
        try:
            frame.begin()
            run = locate_run(frame.ctx.settings, runid)  # the job's edge: its arguments
            if budget is not None and (type(budget) is not int or budget < 0):
                raise RunArchiveError(f"Invalid archive budget {budget!r}.")
            ensure_unlocked(frame.ctx.clients.locks, runid, JobKind.ARCHIVE.verb)
            with ExitStack() as held:

                def lock_nodb(tree: Tree) -> None:
                    # The core's one walk of the run names the .nodb files: they are locked
                    # before any file is read, and stay locked until the archive is published.
                    heartbeat.locks.append(held.enter_context(frame.locks(nodb_files(tree))))

                result = create_archive(
                    run, comment, progress=frame.progress, before_publish=frame.cancel.commit,
                    links=links, on_scan=lock_nodb, budget=budget,
                )  # fmt: skip
                frame.relay.flush()
            frame.stream.publish(archive_ready_line(result.name))
            _prune_after_archive(frame, run)
        except BaseException as exc:
            frame.failed(exc)
            raise
        frame.completed(result.size, result.name)
    # The archive ended the run's undo (parked as trash): delete it off the critical path.
    purge_trash(run)
    note_undo(frame.ctx, run)
    return {
        "name": result.name,
        "size": result.size,
        "files": result.files,
        "links": result.links,
        "followed": result.followed,
        "warnings": result.warnings,
    }


def restore_archive_rq(
    runid: str, archive_name: str, paths: list[str] | None = None
) -> dict[str, Any]:
    """RQ job: replace run ``runid``'s content (or only ``paths``) with archive ``archive_name``.

    The archive is opened once: its central directory names the ``.nodb`` files it would
    restore (locked with the run's own before anything changes), and the same open reader is
    handed to the core; the post-restore hooks get the restored ``.nodb`` files from the core.
    What the restore replaced is kept for an undo (``undo_restore_rq``).
    """
    frame = _JobRun(JobKind.RESTORE, runid, archive_name)
    with Heartbeat(frame.ctx, frame.job_id) as heartbeat:
        frame.started()
        try:
            frame.begin()
            settings = frame.ctx.settings
            run = locate_run(settings, runid)  # the job's edge: its arguments
            archive = archive_ref(archive_name)
            chosen = parse_restore_paths(paths)  # crossed Redis: parsed again, once
            ensure_unlocked(frame.ctx.clients.locks, runid, JobKind.RESTORE.verb)
            with open_run(run) as opened, _open_reader(opened, archive) as reader:
                refuse_damaged(frame.ctx, opened, archive.name)  # found since it was queued
                nodb = nodb_files(scan_run(opened))  # the job's one walk of the run
                if reader is not None:
                    nodb += archive_nodb_files(reader)
                with frame.locks(nodb) as held:
                    heartbeat.locks.append(held)
                    result = restore_archive(
                        run,
                        archive,
                        progress=frame.progress,
                        defer_delete=True,
                        before_swap=frame.cancel.commit,
                        reader=reader,
                        paths=chosen,
                    )
                    frame.relay.flush()
                    _run_hooks(frame, run, archive.name, result.nodb_files)
            frame.stream.publish(restore_complete_line(result.name))
        except BaseException as exc:
            frame.failed(exc)
            raise
        frame.completed(result.bytes_total, result.name)
    # An earlier undo this restore replaced is deleted after the final trigger, off the
    # user's critical path; this restore's own replaced tree is kept for undo.
    purge_trash(run)
    note_undo(frame.ctx, run)
    return {"name": result.name, "files": result.files, "warnings": list(result.warnings),
            "paths": result.paths}  # fmt: skip


def undo_restore_rq(runid: str) -> dict[str, Any]:
    """RQ job: put back exactly what run ``runid``'s last restore replaced.

    Locks the run's ``.nodb`` files and those the kept tree would put back, swaps through the
    core's journal (``undo_restore``: a kill anywhere is finished by recover), runs the
    post-restore hooks (the host's caches hold the restored state), then ``UNDO_COMPLETE``.
    """
    frame = _JobRun(JobKind.UNDO, runid)
    with Heartbeat(frame.ctx, frame.job_id) as heartbeat:
        frame.started()
        try:
            frame.begin()
            run = locate_run(frame.ctx.settings, runid)  # the job's edge: its arguments
            ensure_unlocked(frame.ctx.clients.locks, runid, JobKind.UNDO.verb)
            with open_run(run) as opened:
                nodb = nodb_files(scan_run(opened))
            nodb = sorted({*nodb, *undo_nodb_files(run)})
            with frame.locks(nodb) as held:
                heartbeat.locks.append(held)
                result = undo_restore(
                    run, progress=frame.progress, defer_delete=True,
                    before_swap=frame.cancel.commit,
                )  # fmt: skip
                frame.relay.flush()
                _run_hooks(frame, run, result.restored, result.nodb_files)
            frame.stream.publish(undo_complete_line(result.restored))
        except BaseException as exc:
            frame.failed(exc)
            raise
        frame.completed(archive=result.restored)
    purge_trash(run)  # what the undo replaced, after the final trigger
    note_undo(frame.ctx, run)
    return {"restored": result.restored, "partial": result.partial, "paths": result.paths}


def _run_hooks(frame: _JobRun, run: RunRef, archive_name: str, nodb: list[str]) -> None:
    """Run the post-restore hooks (after a restore or an undo), publishing their lines."""
    hook_ctx = HookContext(
        runid=frame.runid,
        run_dir=run.path,
        archive_name=archive_name,
        cache_client=frame.ctx.clients.cache,
        data_client=frame.ctx.clients.data,
        nodb_files=tuple(nodb),
    )
    for spec in frame.ctx.settings.post_restore_hooks:
        line = _run_hook(spec, hook_ctx)
        if line:
            frame.stream.publish(line)


def prune_rq(runid: str) -> dict[str, Any]:
    """RQ job: remove the archives run ``runid``'s retention policy does not keep."""
    frame = _JobRun(JobKind.PRUNE, runid)
    with Heartbeat(frame.ctx, frame.job_id):
        frame.started()
        try:
            frame.begin()
            run = locate_run(frame.ctx.settings, runid)  # the job's edge: its arguments
            ensure_unlocked(frame.ctx.clients.locks, runid, JobKind.PRUNE.verb)
            plan = _prune(frame, run, before_remove=frame.cancel.commit)
        except BaseException as exc:
            frame.failed(exc)
            raise
        frame.completed(plan.bytes_freed, detail=_removed(plan))
    return plan.to_dict()


def _prune(frame: _JobRun, run: RunRef, before_remove: Callable[[], None] | None = None) -> Plan:
    """Prune the run by its policy (else the site's), one status line per removal."""

    def removed(name: str, size: int) -> None:
        frame.stream.publish(archive_pruned_line(name))

    return prune_archives(
        run,
        site_default=frame.ctx.settings.site_policy,
        on_removed=removed,
        before_remove=before_remove,
    )


def _prune_after_archive(frame: _JobRun, run: RunRef) -> None:
    """Apply the retention policy after a successful archive; a failure is a line, not a
    failed archive (see the module's notes)."""
    try:
        ensure_unlocked(frame.ctx.clients.locks, frame.runid, JobKind.PRUNE.verb)
        plan = _prune(frame, run)
    except Exception as exc:
        log.warning("prune after archive of run %s failed", frame.runid, exc_info=True)
        message = str(exc) or type(exc).__name__
        frame.stream.publish(
            prune_failed_line(message, server_paths(frame.ctx.settings, frame.runid))
        )
        _record_auto_prune(frame, outcome_of(exc), None, f"after archive: {message}")
        return
    if plan.remove:
        detail = f"after archive; {_removed(plan)}"
        _record_auto_prune(frame, Outcome.DONE, plan.bytes_freed, detail)


def _removed(plan: Plan) -> str | None:
    """A prune's audit detail: the archives it removed (None: none)."""
    names = [c.name for c in plan.remove]
    return "removed: " + ", ".join(names) if names else None


def _record_auto_prune(frame: _JobRun, outcome: Outcome, nbytes: int | None, detail: str) -> None:
    """Record the prune an archive job ran after its archive: a row of its own (same job, same
    actor), before the job's own end."""
    end = job_end_event(
        frame.runid, frame.job_id, JobKind.PRUNE, outcome, meta=frame.meta, nbytes=nbytes,
        detail=detail,
    )  # fmt: skip
    record(frame.ctx.audit(), replace(end, action=AuditAction.PRUNE, archive=None,
                                      event_id=f"prune-{frame.job_id}"))  # fmt: skip


@contextmanager
def _open_reader(run: RunDir, archive: ArchiveRef) -> Iterator[ArchiveReader | None]:
    """Open the archive, or yield None when it cannot be read: ``restore_archive`` then opens
    it itself and reports the problem with its own, better message."""
    try:
        reader = open_archive(run, archive)
    except RunArchiveError:
        yield None
        return
    with reader:
        yield reader


def _run_hook(spec: str, hook_ctx: HookContext) -> str | None:
    try:
        return load_hook(spec)(hook_ctx)
    except Exception as exc:
        raise RunArchiveError(
            f"Restored {hook_ctx.archive_name}, but post-restore hook {spec} failed: {exc}. "
            "The host application may still hold cached pre-restore state."
        ) from exc
