"""Jobs started outside ``enqueue``: ``Queue.enqueue`` straight, and RQ's requeue of an ended job.

The job function checks the run's slot itself when it starts, so such a job claims a free slot
(and frees it at the end), and refuses at once, touching nothing, while another job holds it.
Every run of a job id publishes exactly one final trigger; triggers are counted on the channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry

from runarchive.core import create_archive, list_archives
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, enqueue_restore
from runarchive.jobs.locks import acquire_lock, lock_statuses, release_lock
from runarchive.jobs.slot import read_slot
from runarchive.jobs.tasks import archive_rq, restore_archive_rq
from tests.support.channel import Recorder
from tests.support.runs import make_small_run
from tests.support.tree import snapshot
from tests.support.workers import Workers

pytestmark = pytest.mark.slow


def _wait_triggers(rec: Recorder, job_id: str, count: int) -> list[str]:
    rec.wait_for(lambda _: len(rec.triggers(job_id)) >= count)
    return rec.triggers(job_id)


def test_a_job_queued_straight_with_rq_claims_the_free_slot_runs_and_frees_it(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    rec = record(runid)
    job = ctx.queue().enqueue(archive_rq, runid, "straight from rq")
    assert read_slot(ctx.clients.data, ctx.keys, runid) is None
    assert workers.burst() == 0, workers.log_text()

    assert _wait_triggers(rec, job.id, 1) == ["ARCHIVE_COMPLETE"]
    [info] = list_archives(run)
    assert info.comment == "straight from rq"
    assert f"rq:{job.id} STARTED archive_rq({runid})" in rec.lines
    assert read_slot(ctx.clients.data, ctx.keys, runid) is None
    assert job.get_status() == JobStatus.FINISHED
    assert job.get_meta()["runid"] == runid  # labelled, so every end path can find its run


def test_a_job_queued_straight_while_another_holds_the_slot_refuses_without_touching_the_run(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    name = create_archive(run).name
    (run / "wepp.nodb").write_text('{"state": 2}\n')
    # The holder: a real job, queued where no worker of this test looks, so it stays queued.
    elsewhere = JobsContext(replace(ctx.settings, queue=f"{ctx.settings.queue}-idle"), ctx.clients)
    holder = enqueue_archive(elsewhere, runid)
    before = snapshot(run, with_dir_times=False)
    rec = record(runid)
    job = ctx.queue().enqueue(restore_archive_rq, runid, name)
    assert workers.burst() == 0, workers.log_text()

    assert _wait_triggers(rec, job.id, 1) == ["RESTORE_FAILED"]
    mine = [x for x in rec.lines if x.startswith(f"rq:{job.id} ")]
    assert [x.split(" ", 2)[1] for x in mine] == ["STARTED", "EXCEPTION", "TRIGGER"]
    errors = [x for x in rec.lines if x.startswith("Error: ")]
    assert errors == [f"Error: A job is already running for run {runid}: {holder}. Wait for it "
                      "to finish."]  # fmt: skip
    assert not any(x.startswith("Restored ") for x in rec.lines)
    assert snapshot(run, with_dir_times=False) == before
    slot = read_slot(ctx.clients.data, ctx.keys, runid)
    assert slot is not None and slot.job_id == holder  # still the holder's
    assert lock_statuses(ctx.clients.locks, runid) == {}
    assert job.get_status() == JobStatus.FAILED


def test_requeuing_a_failed_job_runs_it_again_with_its_own_final_trigger(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid, "second try")
    token = acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60)
    assert token is not None
    assert workers.burst() == 0, workers.log_text()
    assert _wait_triggers(rec, job_id, 1) == ["ARCHIVE_FAILED"]
    assert release_lock(ctx.clients.locks, runid, "wepp.nodb", token)

    Job.fetch(job_id, connection=ctx.clients.rq).requeue()  # what `rq requeue` does
    assert workers.burst() == 0, workers.log_text()

    assert _wait_triggers(rec, job_id, 2) == ["ARCHIVE_FAILED", "ARCHIVE_COMPLETE"]
    assert [info.comment for info in list_archives(run)] == ["second try"]
    assert read_slot(ctx.clients.data, ctx.keys, runid) is None


def test_requeuing_a_finished_job_while_another_holds_the_slot_refuses_once(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    name = create_archive(run).name
    rec = record(runid)
    job_id = enqueue_restore(ctx, runid, name)
    assert workers.burst() == 0, workers.log_text()
    assert _wait_triggers(rec, job_id, 1) == ["RESTORE_COMPLETE"]
    elsewhere = JobsContext(replace(ctx.settings, queue=f"{ctx.settings.queue}-idle"), ctx.clients)
    holder = enqueue_archive(elsewhere, runid)
    (run / "wepp.nodb").write_text('{"state": 3}\n')
    before = snapshot(run, with_dir_times=False)

    FinishedJobRegistry(ctx.settings.queue, connection=ctx.clients.rq).requeue(job_id)
    assert workers.burst() == 0, workers.log_text()

    assert _wait_triggers(rec, job_id, 2) == ["RESTORE_COMPLETE", "RESTORE_FAILED"]
    assert f"Error: A job is already running for run {runid}: {holder}. Wait for it to finish." in (
        rec.lines
    )
    assert snapshot(run, with_dir_times=False) == before
    slot = read_slot(ctx.clients.data, ctx.keys, runid)
    assert slot is not None and slot.job_id == holder
