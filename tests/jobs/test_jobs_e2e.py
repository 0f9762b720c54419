"""End to end: enqueue here, a separate ``runarchive worker`` process runs the job."""

from __future__ import annotations

import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from rq.job import Job, JobStatus

from runarchive.core import (
    InvalidInput,
    NotFound,
    UnsafeRun,
    create_archive,
    list_archives,
    verify_archive,
)
from runarchive.core.create import FORK_MIN_ENTRIES
from runarchive.core.manifest import MANIFEST_NAME
from runarchive.jobs import delete_archive, job_status
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, enqueue_restore, running_job
from runarchive.jobs.errors import JobRunning
from runarchive.jobs.locks import acquire_lock, lock_statuses
from runarchive.jobs.slot import claim_slot, read_slot
from tests.support.channel import Recorder
from tests.support.runs import make_many_files_run, make_small_run
from tests.support.tree import snapshot, tree_bytes
from tests.support.workers import Workers

pytestmark = pytest.mark.slow


def _is_trigger(job_id: str) -> Callable[[str], bool]:
    return lambda line: line.startswith(f"rq:{job_id} TRIGGER")


def _skeleton(lines: list[str]) -> list[str]:
    """The lines without the rate-limited, run-dependent middle (Adding/Restored/PROGRESS)."""
    return [
        x for x in lines if not x.startswith(("Adding ", "Restored ")) and " PROGRESS " not in x
    ]


def test_an_archive_job_runs_in_a_worker_process_and_streams_the_exact_lines(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid, "  first snapshot  ")
    assert running_job(ctx, runid) is not None
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))

    [info] = list_archives(run)
    assert info.comment == "first snapshot" and info.readable
    assert _skeleton(rec.lines) == [
        f"rq:{job_id} ENQUEUED archive_rq({runid})",
        f"rq:{job_id} STARTED archive_rq({runid})",
        f"Archive ready: {info.name}",
        f"rq:{job_id} COMPLETED archive_rq({runid})",
        f"rq:{job_id} TRIGGER   archive ARCHIVE_COMPLETE",
    ]
    adding = [x.removeprefix("Adding ") for x in rec.lines if x.startswith("Adding ")]
    assert adding and set(adding) <= {str(p.relative_to(run)) for p in run.rglob("*")}
    progress = [x for x in rec.lines if " PROGRESS " in x]
    assert (
        progress[-1]
        == f"rq:{job_id} PROGRESS archive {info.files}/{info.files} files "
        + (progress[-1].split(" files ")[1])
    )
    assert rec.lines == ctx.stream(runid).recent()  # a late viewer can replay everything

    status = job_status(ctx, job_id)
    assert status["status"] == "finished" and status["runid"] == runid
    assert status["trigger"] == "ARCHIVE_COMPLETE"
    assert status["progress"]["files_done"] == status["progress"]["files_total"] == info.files
    assert status["started_at"] and status["ended_at"]
    assert running_job(ctx, runid) is None
    assert lock_statuses(ctx.clients.locks, runid) == {}  # the job gave its locks back


def test_an_archive_job_of_many_small_files_uses_worker_processes_inside_the_work_horse(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    # Enough small files for create's worker processes, forked by RQ's work horse (itself a
    # fork of the worker): the job completes, its archive holds the run, nothing is left.
    files = FORK_MIN_ENTRIES + 200
    run = make_many_files_run(Path(str(ctx.settings.runs_root)), runid, files)
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))

    [info] = list_archives(run)
    assert info.files == files + 1  # and wepp.nodb
    assert verify_archive(run, info.name).ok
    with zipfile.ZipFile(run / "archives" / info.name) as zf:
        held = {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    run_files = {k: v for k, v in tree_bytes(run).items() if not k.startswith("archives/")}
    assert {k: v for k, v in held.items() if k != MANIFEST_NAME} == run_files
    assert f"rq:{job_id} COMPLETED archive_rq({runid})" in rec.lines
    assert job_status(ctx, job_id)["status"] == "finished"
    assert lock_statuses(ctx.clients.locks, runid) == {}


def test_a_restore_job_puts_the_archive_back_and_clears_the_nodb_cache(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid, nodb=("wepp.nodb", "x/s.nodb"))
    before = snapshot(run, with_dir_times=False)
    name = create_archive(run).name
    (run / "README.md").write_text("changed\n")
    (run / "output" / "H0.pass.dat").unlink()
    (run / "new.nodb").write_text("{}")
    cache = ctx.clients.cache
    resolved = run.resolve()
    for rel in ["wepp.nodb", "x/s.nodb", "new.nodb"]:
        cache.set(str(resolved / rel), "cached state")
    cache.set(str(resolved.parent / "elsewhere.nodb"), "another run")

    rec = record(runid)
    job_id = enqueue_restore(ctx, runid, name)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))

    assert snapshot(run, with_dir_times=False) == before
    assert _skeleton(rec.lines) == [
        f"rq:{job_id} ENQUEUED restore_archive_rq({runid}, {name})",
        f"rq:{job_id} STARTED restore_archive_rq({runid}, {name})",
        "Cleared NoDb cache entries after restore (3)",
        f"Restore complete: {name}",
        f"rq:{job_id} COMPLETED restore_archive_rq({runid})",
        f"rq:{job_id} TRIGGER   archive RESTORE_COMPLETE",
    ]
    assert any(x.startswith("Restored ") for x in rec.lines)
    assert cache.get(str(resolved / "wepp.nodb")) is None
    assert cache.get(str(resolved.parent / "elsewhere.nodb")) == "another run"
    cache.delete(str(resolved.parent / "elsewhere.nodb"))


def test_a_lock_taken_after_enqueue_fails_the_job_inside_the_worker(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid)
    token = acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60)  # the host app writes
    assert token is not None
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))

    assert rec.lines == [
        f"rq:{job_id} ENQUEUED archive_rq({runid})",
        f"rq:{job_id} STARTED archive_rq({runid})",
        "Error: Cannot archive while files are locked: wepp.nodb",
        f"rq:{job_id} EXCEPTION archive_rq({runid})",
        f"rq:{job_id} TRIGGER   archive ARCHIVE_FAILED",
    ]
    assert list_archives(run) == []
    job = Job.fetch(job_id, connection=ctx.clients.rq)
    assert job.get_status() == JobStatus.FAILED
    info = job_status(ctx, job_id, with_exc_info=True)
    assert "Cannot archive while files are locked: wepp.nodb" in info["exc_info"]
    assert running_job(ctx, runid) is None
    assert lock_statuses(ctx.clients.locks, runid) == {"wepp.nodb": True}  # not the job's to drop


def test_a_failing_restore_publishes_restore_failed_and_leaves_the_run(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    name = create_archive(run).name
    path = run / "archives" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = b"\0" * 64  # damage file data
    path.write_bytes(bytes(data))
    before = snapshot(run, with_dir_times=False)
    rec = record(runid)
    job_id = enqueue_restore(ctx, runid, name)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))
    assert rec.triggers(job_id) == ["RESTORE_FAILED"]
    assert any(x.startswith("Error: ") for x in rec.lines)
    assert f"rq:{job_id} EXCEPTION restore_archive_rq({runid})" in rec.lines
    assert snapshot(run, with_dir_times=False) == before
    assert running_job(ctx, runid) is None


ABSOLUTE_PATH = re.compile(r"(^|[\s'\"(])/")


def test_a_failed_jobs_error_line_names_no_server_path(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid)
    # Broken after the enqueue (which would refuse it at once): the job itself meets it.
    shutil.rmtree(run / "archives", ignore_errors=True)
    (run / "archives").write_text("a file where the archives folder should be\n")
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))

    [error] = [x for x in rec.lines if x.startswith("Error: ")]
    assert str(ctx.settings.runs_root) not in error
    assert not ABSOLUTE_PATH.search(error.removeprefix("Error: ")), error
    assert rec.triggers(job_id) == ["ARCHIVE_FAILED"]
    assert (run / "archives").read_text() == "a file where the archives folder should be\n"
    # The whole reason and traceback stay where only the run's writers look.
    exc_info = job_status(ctx, job_id, with_exc_info=True)["exc_info"]
    assert "archives is not a folder" in exc_info and "Traceback" in exc_info


def test_enqueue_refuses_bad_names_and_unknown_runs_or_archives_before_claiming(
    ctx: JobsContext, runid: str
) -> None:
    make_small_run(Path(str(ctx.settings.runs_root)), runid)
    with pytest.raises(InvalidInput):
        enqueue_restore(ctx, runid, "../../etc/passwd")
    with pytest.raises(NotFound):
        enqueue_restore(ctx, runid, f"{runid}.20240101T000000Z.zip")
    with pytest.raises(NotFound):
        enqueue_archive(ctx, "no-such-run")
    with pytest.raises(InvalidInput):
        enqueue_archive(ctx, "../escape")
    with pytest.raises(InvalidInput):
        enqueue_archive(ctx, runid, "invisible\u200bcomment")
    (Path(str(ctx.settings.runs_root)) / runid / "archives").mkdir(exist_ok=True)
    (Path(str(ctx.settings.runs_root)) / runid / "archives" / ".runarchive").mkdir(exist_ok=True)
    (
        Path(str(ctx.settings.runs_root)) / runid / "archives" / ".runarchive" / "journal.json"
    ).write_text("{")
    with pytest.raises(UnsafeRun):  # refused at once, as the job would refuse it
        enqueue_archive(ctx, runid)
    assert read_slot(ctx.clients.data, ctx.keys, runid) is None
    assert ctx.queue().count == 0


def test_delete_is_refused_while_a_job_holds_the_run_and_announced_when_done(
    ctx: JobsContext, runid: str, record: Callable[[str], Recorder]
) -> None:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid)
    name = create_archive(run).name
    claim_slot(ctx.clients.data, ctx.keys, runid, "busy-job", "archive", ttl=60)
    with pytest.raises(JobRunning, match="busy-job"):
        delete_archive(ctx, runid, name)
    ctx.clients.data.delete(ctx.keys.slot(runid))
    rec = record(runid)
    delete_archive(ctx, runid, name)
    assert list_archives(run) == []
    rec.wait_for(lambda x: x == f"Archive deleted: {name}", timeout=5)


def test_two_worker_processes_share_the_queue_and_run_each_job_once(
    ctx: JobsContext, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    root = Path(str(ctx.settings.runs_root))
    runids = [f"two-workers-{i}" for i in range(6)]
    recs = {}
    jobs = {}
    for runid in runids:
        make_small_run(root, runid)
        recs[runid] = record(runid)
        jobs[runid] = enqueue_archive(ctx, runid)
    first, second = workers.start("--burst"), workers.start("--burst")
    assert first.wait(timeout=90) == 0 and second.wait(timeout=90) == 0, workers.log_text()
    for runid in runids:
        recs[runid].wait_for(_is_trigger(jobs[runid]))
        assert recs[runid].triggers(jobs[runid]) == ["ARCHIVE_COMPLETE"]
        assert len(list_archives(root / runid)) == 1
        started = [x for x in recs[runid].lines if " STARTED " in x]
        assert len(started) == 1
    assert ctx.queue().count == 0
