"""The per-run slot: atomic claims, compare-and-delete release, and stale-slot reconcile."""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rq.job import Job, JobStatus

from runarchive.cli.exits import exit_code_of
from runarchive.core import Locked
from runarchive.jobs.cancel import CancelStatus, cancel_job
from runarchive.jobs.connection import make_client
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, running_job
from runarchive.jobs.errors import JobRunning
from runarchive.jobs.keys import Keys
from runarchive.jobs.lifecycle import finish_job, reconcile
from runarchive.jobs.lines import parse_line
from runarchive.jobs.locks import acquire_lock
from runarchive.jobs.settings import Settings
from runarchive.jobs.slot import claim_slot, read_slot, release_slot
from runarchive.jobs.vocabulary import Event, JobKind
from runarchive.web.errors import status_of
from tests.support.runs import make_small_run


def _triggers(ctx: JobsContext, runid: str) -> list[str]:
    lines = [parse_line(x) for x in ctx.stream(runid).recent()]
    return [f"{p.job_id} {p.trigger}" for p in lines if p.event is Event.TRIGGER]


def test_a_slot_is_claimed_once_and_released_only_by_its_job(ctx: JobsContext, runid: str) -> None:
    data = ctx.clients.data
    assert claim_slot(data, ctx.keys, runid, "job-1", "archive", ttl=60)
    assert not claim_slot(data, ctx.keys, runid, "job-2", "restore", ttl=60)
    slot = read_slot(data, ctx.keys, runid)
    assert slot is not None
    assert (slot.job_id, slot.kind) == ("job-1", "archive")
    assert abs(slot.claimed_at - time.time()) < 5
    assert not release_slot(data, ctx.keys, runid, "job-2")
    assert release_slot(data, ctx.keys, runid, "job-1")
    assert read_slot(data, ctx.keys, runid) is None


def test_fifty_concurrent_enqueues_yield_exactly_one_job(settings: Settings, runid: str) -> None:
    make_small_run(Path(str(settings.runs_root)), runid)
    # A pool of 4 connections for 50 threads: callers wait for a connection, none fails.
    with JobsContext.from_settings(replace(settings, max_connections=4)) as ctx:
        barrier = threading.Barrier(50)
        won: list[str] = []
        lost: list[JobRunning] = []
        errors: list[BaseException] = []

        def attempt() -> None:
            barrier.wait()
            try:
                won.append(enqueue_archive(ctx, runid, "race"))
            except JobRunning as exc:
                lost.append(exc)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=attempt) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert len(won) == 1
        assert len(lost) == 49
        assert {exc.job_id for exc in lost} == set(won)
        assert ctx.queue().count == 1
        assert ctx.queue().job_ids == won
        enqueued = [x for x in ctx.stream(runid).recent() if " ENQUEUED " in x]
        assert enqueued == [f"rq:{won[0]} ENQUEUED archive_rq({runid})"]


def _claim_in_process(
    url: str, prefix: str, runid: str, job_id: str, barrier: Any, out: Any
) -> None:
    client = make_client(url, decode=True, max_connections=2)
    barrier.wait()
    out.put((job_id, claim_slot(client, Keys(prefix), runid, job_id, "archive", ttl=60)))
    client.close()


def test_fifty_processes_racing_for_a_slot_yield_exactly_one_winner(
    settings: Settings, runid: str
) -> None:
    mp = multiprocessing.get_context("fork")
    barrier = mp.Barrier(50)
    out = mp.Queue()
    procs = [
        mp.Process(
            target=_claim_in_process,
            args=(settings.redis_url, settings.key_prefix, runid, f"job-{i}", barrier, out),
        )
        for i in range(50)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    winners = [job for job, ok in results if ok]
    assert len(winners) == 1
    with JobsContext.from_settings(settings) as ctx:
        slot = read_slot(ctx.clients.data, ctx.keys, runid)
        assert slot is not None and slot.job_id == winners[0]


def test_enqueue_is_refused_while_a_nodb_file_is_locked(ctx: JobsContext, runid: str) -> None:
    make_small_run(Path(str(ctx.settings.runs_root)), runid, nodb=("wepp.nodb", "soils.nodb"))
    acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60)
    acquire_lock(ctx.clients.locks, runid, "soils.nodb", ttl=60)
    with pytest.raises(Locked) as info:
        enqueue_archive(ctx, runid)
    assert str(info.value) == "Cannot archive while files are locked: soils.nodb, wepp.nodb"
    assert status_of(info.value) == 409 and exit_code_of(info.value) == 3  # the web's, the CLI's
    assert read_slot(ctx.clients.data, ctx.keys, runid) is None
    assert ctx.queue().count == 0


def test_finishing_twice_publishes_one_trigger(ctx: JobsContext, runid: str) -> None:
    claim_slot(ctx.clients.data, ctx.keys, runid, "j", "archive", ttl=60)
    assert finish_job(ctx, runid, "j", JobKind.ARCHIVE, ok=False, error="boom")
    assert not finish_job(ctx, runid, "j", JobKind.ARCHIVE, ok=True)
    assert _triggers(ctx, runid) == ["j ARCHIVE_FAILED"]
    assert ctx.stream(runid).recent() == [
        "Error: boom",
        f"rq:j EXCEPTION archive_rq({runid})",
        "rq:j TRIGGER   archive ARCHIVE_FAILED",
    ]
    assert read_slot(ctx.clients.data, ctx.keys, runid) is None


def test_a_slot_whose_job_is_missing_is_freed_after_the_grace_period(
    ctx: JobsContext, runid: str
) -> None:
    data = ctx.clients.data
    claim_slot(data, ctx.keys, runid, "ghost", "archive", ttl=60)
    assert reconcile(ctx, [runid]) == []  # may still be mid-enqueue
    data.hset(ctx.keys.slot(runid), "claimed_at", time.time() - 60)
    [reaped] = reconcile(ctx, [runid])
    assert (reaped.job_id, reaped.reason) == ("ghost", "job missing")
    assert read_slot(data, ctx.keys, runid) is None
    assert _triggers(ctx, runid) == ["ghost ARCHIVE_FAILED"]


def test_a_canceled_queued_job_frees_the_slot_with_a_failed_trigger(
    ctx: JobsContext, runid: str
) -> None:
    make_small_run(Path(str(ctx.settings.runs_root)), runid)
    job_id = enqueue_archive(ctx, runid)
    assert cancel_job(ctx, job_id, "tester") == CancelStatus.CANCELED
    assert running_job(ctx, runid) is None
    assert _triggers(ctx, runid) == [f"{job_id} ARCHIVE_FAILED"]
    assert Job.fetch(job_id, connection=ctx.clients.rq).get_status() == JobStatus.CANCELED
    assert enqueue_archive(ctx, runid)  # the run is free again


def test_a_started_job_whose_lease_expired_is_failed_in_rq_and_freed(
    ctx: JobsContext, runid: str
) -> None:
    make_small_run(Path(str(ctx.settings.runs_root)), runid)
    job_id = enqueue_archive(ctx, runid)
    job = Job.fetch(job_id, connection=ctx.clients.rq)
    # What a worker leaves behind when it dies mid-job: STARTED, no liveness lease.
    job.set_status(JobStatus.STARTED)
    ctx.clients.rq.hset(job.key, "started_at", "2000-01-01T00:00:00.000000Z")
    ctx.clients.data.set(ctx.keys.job_alive(job_id), "1", ex=30)
    assert reconcile(ctx) == []  # alive: left alone
    ctx.clients.data.delete(ctx.keys.job_alive(job_id))
    [reaped] = reconcile(ctx)
    assert reaped.reason == "job process died" and reaped.published
    assert Job.fetch(job_id, connection=ctx.clients.rq).get_status() == JobStatus.FAILED
    assert _triggers(ctx, runid) == [f"{job_id} ARCHIVE_FAILED"]
    assert reconcile(ctx) == []
    assert running_job(ctx, runid) is None


def test_a_finished_job_left_holding_its_slot_is_completed(ctx: JobsContext, runid: str) -> None:
    make_small_run(Path(str(ctx.settings.runs_root)), runid)
    job_id = enqueue_archive(ctx, runid)
    Job.fetch(job_id, connection=ctx.clients.rq).set_status(JobStatus.FINISHED)
    [reaped] = reconcile(ctx, [runid])
    assert reaped.reason == "job finished"
    assert _triggers(ctx, runid) == [f"{job_id} ARCHIVE_COMPLETE"]
