"""Prune as a job and after each archive: real worker processes, real valkey, real runs."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from runarchive.core import (
    Locked,
    Policy,
    ReadOnlyRun,
    list_archives,
    set_pinned,
    set_run_policy,
)
from runarchive.jobs import enqueue_archive, enqueue_prune, job_status, running_job
from runarchive.jobs.context import JobsContext
from runarchive.jobs.locks import acquire_lock
from runarchive.jobs.settings import Settings
from tests.support.channel import Recorder
from tests.support.runs import copy_archives, make_small_run
from tests.support.waiting import wait_until
from tests.support.workers import Workers, children

pytestmark = pytest.mark.slow

STAMPS = [f"202601{d:02d}T120000Z" for d in range(1, 7)]


def _trigger(job_id: str) -> Callable[[str], bool]:
    return lambda line: line.startswith(f"rq:{job_id} TRIGGER")


def _files(run: Path) -> set[str]:
    return {p.name for p in (run / "archives").iterdir() if p.suffix == ".zip"}


def _skeleton(lines: list[str]) -> list[str]:
    return [x for x in lines if not x.startswith("Adding ") and " PROGRESS " not in x]


def test_a_prune_job_removes_what_the_policy_drops_one_line_each_and_one_trigger(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    names = copy_archives(run, STAMPS)
    set_run_policy(run, Policy(keep_last=2))
    set_pinned(run, names[0], True)
    rec = record(runid)
    job_id = enqueue_prune(ctx, runid)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_trigger(job_id))
    assert rec.lines == [
        f"rq:{job_id} ENQUEUED prune_rq({runid})",
        f"rq:{job_id} STARTED prune_rq({runid})",
        *(f"Archive pruned: {n}" for n in names[1:4]),  # oldest first; the pin stays
        f"rq:{job_id} COMPLETED prune_rq({runid})",
        f"rq:{job_id} TRIGGER   archive PRUNE_COMPLETE",
    ]
    assert rec.triggers(job_id) == ["PRUNE_COMPLETE"]
    assert _files(run) == {names[0], names[4], names[5]}
    status = job_status(ctx, job_id)
    assert status["status"] == "finished" and status["trigger"] == "PRUNE_COMPLETE"
    assert running_job(ctx, runid) is None


def test_an_archive_job_applies_the_policy_after_its_archive_and_keeps_the_new_one(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    names = copy_archives(run, STAMPS[:3])
    set_run_policy(run, Policy(keep_last=2))
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid, "newest")
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_trigger(job_id))
    newest = list_archives(run)[0]
    assert newest.comment == "newest"
    assert _skeleton(rec.lines) == [
        f"rq:{job_id} ENQUEUED archive_rq({runid})",
        f"rq:{job_id} STARTED archive_rq({runid})",
        f"Archive ready: {newest.name}",
        f"Archive pruned: {names[0]}",
        f"Archive pruned: {names[1]}",
        f"rq:{job_id} COMPLETED archive_rq({runid})",
        f"rq:{job_id} TRIGGER   archive ARCHIVE_COMPLETE",
    ]
    assert _files(run) == {newest.name, names[2]}


def test_a_failing_prune_after_an_archive_is_a_line_and_the_archive_still_completes(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    names = copy_archives(run, STAMPS[:3])
    set_run_policy(run, Policy(keep_last=1))
    (run / "archives" / ".runarchive" / "pins.json").write_text("planted")
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_trigger(job_id))
    failed = [x for x in rec.lines if x.startswith("Prune failed: ")]
    assert len(failed) == 1 and "pins.json" in failed[0] and str(run) not in failed[0]
    assert rec.triggers(job_id) == ["ARCHIVE_COMPLETE"]
    assert _files(run) == {*names, list_archives(run)[0].name}  # nothing was removed


def test_the_site_default_prunes_a_run_without_its_own_policy(
    ctx: JobsContext,
    settings: Settings,
    runid: str,
    tmp_path: Path,
    record: Callable[[str], Recorder],
) -> None:
    site = dataclasses.replace(settings, keep_daily=2)
    logs = tmp_path / "site-logs"
    logs.mkdir()
    pool = Workers(site, logs)
    try:
        run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
        names = copy_archives(run, STAMPS[:4])
        rec = record(runid)
        job_id = enqueue_prune(ctx, runid)
        assert pool.burst() == 0, pool.log_text()
        rec.wait_for(_trigger(job_id))
    finally:
        pool.kill_all()
    assert _files(run) == set(names[2:])


def test_a_prune_is_refused_on_a_read_only_run_and_while_a_nodb_lock_is_held(
    ctx: JobsContext, runid: str
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    names = copy_archives(run, STAMPS[:2])
    acquire_lock(ctx.clients.locks, runid, "wepp.nodb", owner="host", ttl=60)
    with pytest.raises(Locked, match=r"Cannot prune while files are locked: wepp\.nodb"):
        enqueue_prune(ctx, runid)
    (run / "READONLY").write_text("")
    with pytest.raises(ReadOnlyRun):
        enqueue_prune(ctx, runid)
    assert running_job(ctx, runid) is None
    assert _files(run) == set(names)


HOLD = Path(__file__).parent / "holdline"


def test_a_worker_killed_mid_prune_leaves_whole_archives_and_one_prune_failed(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    names = copy_archives(run, STAMPS)
    before = {n: (run / "archives" / n).read_bytes() for n in names}
    set_run_policy(run, Policy(keep_last=2))
    rec = record(runid)
    job_id = enqueue_prune(ctx, runid)
    hold = {"PYTHONPATH": os.pathsep.join([str(HOLD), os.environ.get("PYTHONPATH", "")]),
            "RUNARCHIVE_TEST_HOLD_AFTER": "Archive pruned: "}  # fmt: skip
    proc = workers.start("--burst", env=hold)
    rec.wait_for(lambda x: x == f"Archive pruned: {names[0]}")  # the job holds right after
    horses = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)

    left = _files(run)
    assert left == set(names[1:])  # the oldest went, the rest whole and listed
    assert {i.name for i in list_archives(run)} == left
    assert all((run / "archives" / n).read_bytes() == before[n] for n in left)
    assert rec.triggers(job_id) == []
    wait_until(lambda: not ctx.clients.data.exists(ctx.keys.job_alive(job_id)), timeout=10)
    assert workers.burst() == 0, workers.log_text()  # reaps the dead job: its one trigger
    rec.wait_for(_trigger(job_id))
    assert rec.triggers(job_id) == ["PRUNE_FAILED"]
    assert running_job(ctx, runid) is None

    again = enqueue_prune(ctx, runid)  # and a later prune finishes the work
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_trigger(again))
    assert _files(run) == set(names[-2:])
    assert rec.triggers(job_id) == ["PRUNE_FAILED"]
