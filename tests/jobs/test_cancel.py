"""Canceling jobs against a real valkey and real worker processes.

A queued job ends at once; a running one at its next progress event, leaving the run exactly
as it was; a restore past its swap is refused and finishes. Each case checks the one final
trigger, its ``Error: Canceled by <user>`` line, the run on disk and the run's slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from rq.job import Job, JobStatus

from runarchive.cli.exits import exit_code_of
from runarchive.core import NotFound, create_archive, list_archives, recover_run
from runarchive.jobs.cancel import SWAP_MARKER, CancelStatus, cancel_job
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, enqueue_restore, running_job
from runarchive.jobs.errors import NotCancelable
from runarchive.jobs.locks import lock_statuses
from runarchive.jobs.settings import Settings
from runarchive.web.errors import status_of
from tests.support.channel import Recorder
from tests.support.journal import leftovers
from tests.support.runs import make_many_files_run, make_small_run
from tests.support.tree import archive_files, snapshot
from tests.support.waiting import wait_until
from tests.support.workers import Workers

from . import pausehook

FILES = 5000  # a restore of these takes seconds: a cancel lands mid-extraction

Tree = dict[str, tuple[object, ...]]


def _lines(ctx: JobsContext, runid: str) -> list[str]:
    return ctx.stream(runid).recent()


def _triggers(ctx: JobsContext, runid: str, job_id: str) -> list[str]:
    prefix = f"rq:{job_id} TRIGGER   archive "
    return [x[len(prefix) :] for x in _lines(ctx, runid) if x.startswith(prefix)]


def _errors(ctx: JobsContext, runid: str) -> list[str]:
    return [x for x in _lines(ctx, runid) if x.startswith("Error: ")]


def _restorable(ctx: JobsContext, runid: str, files: int) -> tuple[Path, str, Tree]:
    """A run with an archive of its first state, then changed: (run, name, archived state)."""
    run = make_many_files_run(Path(str(ctx.settings.runs_root)), runid, files)
    archived = snapshot(run, with_dir_times=False)
    name = create_archive(run).name
    for path in sorted((run / "d000").iterdir())[:10]:
        path.unlink()
    (run / "d001" / "f00050.txt").write_text("changed after the archive")
    (run / "added.txt").write_text("new file")
    return run, name, archived


def _assert_ended_free(ctx: JobsContext, runid: str) -> None:
    assert running_job(ctx, runid) is None
    assert lock_statuses(ctx.clients.locks, runid) == {}


@pytest.mark.parametrize("kind", ["archive", "restore"])
def test_canceling_a_queued_job_ends_it_at_once_with_one_failed_trigger_naming_the_user(
    ctx: JobsContext, runid: str, workers: Workers, kind: str
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    name = create_archive(run).name
    (run / "README.md").write_text("changed after the archive\n")
    before = snapshot(run)
    job_id = enqueue_archive(ctx, runid) if kind == "archive" else enqueue_restore(ctx, runid, name)

    assert cancel_job(ctx, job_id, "alice") == CancelStatus.CANCELED

    failed = "ARCHIVE_FAILED" if kind == "archive" else "RESTORE_FAILED"
    assert _triggers(ctx, runid, job_id) == [failed]
    assert _errors(ctx, runid) == ["Error: Canceled by alice"]
    assert Job.fetch(job_id, connection=ctx.clients.rq).get_status() == JobStatus.CANCELED
    _assert_ended_free(ctx, runid)
    assert workers.burst() == 0  # nothing left to run: the job is off the queue
    assert _triggers(ctx, runid, job_id) == [failed]
    assert snapshot(run) == before
    assert [a.name for a in list_archives(run)] == [name]
    assert enqueue_archive(ctx, runid)  # the run is free again


def test_a_queued_job_canceled_as_a_worker_takes_it_ends_before_touching_the_run(
    ctx: JobsContext, runid: str, workers: Workers
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    before = snapshot(run)
    job_id = enqueue_archive(ctx, runid)
    # The canceler's first step, written as it writes it; the worker starts the job before
    # the canceler takes it off the queue.
    ctx.clients.data.set(ctx.keys.job_cancel(job_id), "bob")
    assert workers.burst() == 0, workers.log_text()

    assert _triggers(ctx, runid, job_id) == ["ARCHIVE_FAILED"]
    assert _errors(ctx, runid) == ["Error: Canceled by bob"]
    assert list_archives(run) == []
    assert snapshot(run) == before
    _assert_ended_free(ctx, runid)
    assert ctx.clients.data.exists(ctx.keys.job_cancel(job_id)) == 0  # forgotten at the end
    # The canceler's own finish then publishes nothing more.
    with pytest.raises(NotCancelable, match="already ended"):
        cancel_job(ctx, job_id, "bob")
    assert _triggers(ctx, runid, job_id) == ["ARCHIVE_FAILED"]


def test_canceling_a_restore_mid_extraction_leaves_the_run_byte_identical_and_no_stage(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run, name, archived = _restorable(ctx, runid, FILES)
    before = snapshot(run, with_dir_times=False)
    rec = record(runid)
    job_id = enqueue_restore(ctx, runid, name)
    proc = workers.start("--burst")
    rec.wait_for(lambda x: x.startswith("Restored "))

    assert cancel_job(ctx, job_id, "alice") == CancelStatus.CANCELING
    assert proc.wait(timeout=60) == 0, workers.log_text()

    rec.wait_for(lambda x: x.startswith(f"rq:{job_id} TRIGGER"))
    assert _triggers(ctx, runid, job_id) == ["RESTORE_FAILED"]
    assert _errors(ctx, runid) == ["Error: Canceled by alice"]
    assert not any(x.startswith("Restore complete") for x in _lines(ctx, runid))
    assert snapshot(run, with_dir_times=False) == before != archived
    assert leftovers(run) == []
    assert recover_run(run).action == "none"
    assert Job.fetch(job_id, connection=ctx.clients.rq).get_status() == JobStatus.FAILED
    _assert_ended_free(ctx, runid)
    assert ctx.clients.data.exists(ctx.keys.job_cancel(job_id)) == 0


def test_canceling_a_running_archive_leaves_no_archive_and_no_temp_file(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_many_files_run(Path(str(ctx.settings.runs_root)), runid, FILES)
    before = snapshot(run)
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid)
    proc = workers.start("--burst")
    rec.wait_for(lambda x: x.startswith("Adding "))

    assert cancel_job(ctx, job_id, "alice") == CancelStatus.CANCELING
    assert proc.wait(timeout=60) == 0, workers.log_text()

    assert _triggers(ctx, runid, job_id) == ["ARCHIVE_FAILED"]
    assert _errors(ctx, runid) == ["Error: Canceled by alice"]
    assert list_archives(run) == []
    assert archive_files(run / "archives") == []  # no temp file either
    assert snapshot(run) == before
    _assert_ended_free(ctx, runid)


def test_a_cancel_after_the_swap_began_is_refused_and_the_restore_completes(
    ctx: JobsContext, settings: Settings, runid: str, tmp_path: Path
) -> None:
    run, name, archived = _restorable(ctx, runid, 200)
    held = tmp_path / "held-logs"
    held.mkdir()
    workers = Workers(replace(settings, post_restore_hooks=(pausehook.SPEC,)), held)
    data = ctx.clients.data
    try:
        job_id = enqueue_restore(ctx, runid, name)
        proc = workers.start("--burst")
        wait_until(lambda: data.exists(pausehook.paused_key(runid)), timeout=60)
        assert data.get(ctx.keys.job_cancel(job_id)) == SWAP_MARKER  # the job claimed its swap

        with pytest.raises(NotCancelable, match="already swapping in; it will finish"):
            cancel_job(ctx, job_id, "alice")
        refused = NotCancelable()
        assert exit_code_of(refused) == 3 and status_of(refused) == 409  # the CLI's, the web's

        data.set(pausehook.go_key(runid), "1", ex=60)
        assert proc.wait(timeout=60) == 0, workers.log_text()
    finally:
        workers.kill_all()
    assert _triggers(ctx, runid, job_id) == ["RESTORE_COMPLETE"]
    assert _errors(ctx, runid) == []
    assert snapshot(run, with_dir_times=False) == archived
    _assert_ended_free(ctx, runid)


def test_canceling_a_finished_job_is_refused_and_changes_nothing(
    ctx: JobsContext, runid: str, workers: Workers
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    job_id = enqueue_archive(ctx, runid)
    assert workers.burst() == 0, workers.log_text()
    [archive] = list_archives(run)

    with pytest.raises(NotCancelable, match="already ended \\(ARCHIVE_COMPLETE\\)"):
        cancel_job(ctx, job_id, "alice")

    assert _triggers(ctx, runid, job_id) == ["ARCHIVE_COMPLETE"]
    assert [a.name for a in list_archives(run)] == [archive.name]
    assert ctx.clients.data.exists(ctx.keys.job_cancel(job_id)) == 0


def test_canceling_an_unknown_job_is_not_found(ctx: JobsContext) -> None:
    with pytest.raises(NotFound):
        cancel_job(ctx, "no-such-job", "alice")
