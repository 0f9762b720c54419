"""The periodic scrub through real workers on the real valkey: damage found and flagged, one
pass per interval however many workers, low priority, results bound to the file checked."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from runarchive.core import DamagedArchive, create_archive, list_archives
from runarchive.jobs import archive_health, enqueue_restore, job_status, running_job
from runarchive.jobs.context import JobsContext
from runarchive.jobs.health import record_result
from runarchive.jobs.lines import archive_damaged_line, parse_line
from runarchive.jobs.runs import locate_run
from runarchive.jobs.scrub import run_step, schedule_scrub
from runarchive.jobs.settings import Settings
from tests.support.channel import Recorder
from tests.support.runs import flip_entry_byte, make_mixed_run
from tests.support.tree import snapshot
from tests.support.waiting import wait_until
from tests.support.workers import Workers, children

pytestmark = pytest.mark.slow

SCRUB_ON = {"RUNARCHIVE_SCRUB_INTERVAL": "3600"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The jobs tests' deployment with the scrub on (an hour's interval)."""
    return dataclasses.replace(settings, scrub_interval=3600)


def _damaged_run(ctx: JobsContext, runid: str) -> tuple[Path, dict[str, str]]:
    run = make_mixed_run(Path(str(ctx.settings.runs_root)), runid)
    names = {label: create_archive(run, label).name for label in ("fine", "stored", "deflated")}
    flip_entry_byte(run / "archives" / names["stored"], "data.bin", zipfile.ZIP_STORED)
    flip_entry_byte(run / "archives" / names["deflated"], "output/H0.txt", zipfile.ZIP_DEFLATED)
    return run, names


def _health(ctx: JobsContext, runid: str, names: dict[str, str]) -> dict[str, str]:
    found = archive_health(ctx, locate_run(ctx.settings, runid), list(names.values()))
    return {label: found[name].state for label, name in names.items()}


def _burst(workers: Workers, env: dict[str, str] = SCRUB_ON) -> None:
    assert workers.start("--burst", env=env).wait(timeout=90) == 0, workers.log_text()


def test_a_worker_scrub_flags_a_flipped_stored_and_deflated_entry_once(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    _, names = _damaged_run(ctx, runid)
    rec = record(runid)
    _burst(workers)  # its start-up claims the pass; the burst runs it to the end
    assert _health(ctx, runid, names) == {"fine": "ok", "stored": "damaged", "deflated": "damaged"}
    found = archive_health(ctx, locate_run(ctx.settings, runid), list(names.values()))
    assert "'data.bin'" in (found[names["stored"]].damage or "")
    assert "'output/H0.txt'" in (found[names["deflated"]].damage or "")
    assert found[names["fine"]].damage is None and found[names["fine"]].checked_at is not None
    rec.wait_for(lambda line: line.startswith(f"Archive damaged: {names['deflated']}: "))
    damaged_lines = sorted(x for x in rec.lines if x.startswith("Archive damaged: "))
    assert damaged_lines == sorted(
        [
            f"Archive damaged: {names['stored']}: {found[names['stored']].damage}",
            f"Archive damaged: {names['deflated']}: {found[names['deflated']].damage}",
        ]
    )
    # The same damage found again (the CLI, a later pass) is not announced twice.
    from runarchive.core import check_archive, open_run

    with open_run(locate_run(ctx.settings, runid)) as opened:
        again = check_archive(opened, names["stored"])
    assert again is not None and record_result(ctx, runid, again) is False


def test_a_replaced_archive_reads_unchecked_until_checked_itself(
    ctx: JobsContext, runid: str, workers: Workers
) -> None:
    run, names = _damaged_run(ctx, runid)
    _burst(workers)
    assert _health(ctx, runid, names)["stored"] == "damaged"
    # Someone puts a good archive under the damaged one's name (same bytes as "fine").
    archives = run / "archives"
    shutil.copyfile(archives / names["fine"], archives / "replacement.tmp")
    (archives / "replacement.tmp").replace(archives / names["stored"])
    assert _health(ctx, runid, names) == {"fine": "ok", "stored": "unchecked",
                                          "deflated": "damaged"}  # fmt: skip
    rows = {info.name for info in list_archives(run)}
    assert names["stored"] in rows


def test_a_record_not_in_the_shape_we_write_is_ignored(ctx: JobsContext, runid: str) -> None:
    run, names = _damaged_run(ctx, runid)
    key = ctx.keys.health(runid)
    st = (run / "archives" / names["stored"]).lstat()
    ident = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    good = {"at": 1.0, "damage": None, "id": ident, "state": "ok"}
    for bad in (
        {**good, "state": "fine"},
        {**good, "state": "damaged"},  # damaged without saying what
        {**good, "id": ident[:4]},
        {**good, "extra": 1},
        {**good, "at": "yesterday"},
        {**good, "at": 1e300},  # no date
        {**good, "id": [*ident[:4], True]},
    ):
        ctx.clients.data.hset(key, names["stored"], json.dumps(bad))
        assert _health(ctx, runid, names)["stored"] == "unchecked", bad
    ctx.clients.data.hset(key, names["stored"], json.dumps(good))
    assert _health(ctx, runid, names)["stored"] == "ok"


def test_two_workers_run_one_pass_per_interval(
    ctx: JobsContext, runid: str, workers: Workers
) -> None:
    _, names = _damaged_run(ctx, runid)
    for _ in range(2):
        workers.start(env=SCRUB_ON)
    wait_until(lambda: "unchecked" not in _health(ctx, runid, names).values(), timeout=60)
    registry = FinishedJobRegistry(ctx.settings.scrub_queue, connection=ctx.clients.rq)
    wait_until(lambda: len(registry.get_job_ids()) >= 1, timeout=30)
    time.sleep(1.5)  # a second pass, if one had been claimed, would have run by now
    assert len(registry.get_job_ids()) == 1  # both asked at start; one claim won
    assert ctx.scrub_queue().count == 0
    assert schedule_scrub(ctx) is None  # this interval's pass is taken


def test_concurrent_claims_of_a_tick_start_exactly_one_pass(ctx: JobsContext) -> None:
    won: list[str | None] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        won.append(schedule_scrub(ctx))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([w for w in won if w is not None]) == 1
    assert ctx.scrub_queue().count == 1
    assert 0 < ctx.clients.data.ttl(ctx.keys.scrub_pass()) <= ctx.settings.scrub_interval


def test_a_step_out_of_budget_queues_the_next_one_and_the_chain_finishes(
    ctx: JobsContext, runid: str, workers: Workers
) -> None:
    _, names = _damaged_run(ctx, runid)
    pass_id = schedule_scrub(ctx)
    assert pass_id is not None
    ctx.scrub_queue().empty()  # run the first step here, with no budget at all
    first = run_step(ctx, pass_id, budget=0)
    assert first["checked"] == 1 and first["next"][0] == runid
    assert ctx.scrub_queue().count == 1
    assert list(_health(ctx, runid, names).values()).count("unchecked") == 2
    _burst(workers, env={"RUNARCHIVE_SCRUB_INTERVAL": "0"})  # the chain, on a real worker
    assert _health(ctx, runid, names) == {"fine": "ok", "stored": "damaged", "deflated": "damaged"}


def test_a_superseded_pass_stops_and_a_new_one_skips_nothing_unchecked(
    ctx: JobsContext, runid: str
) -> None:
    _, names = _damaged_run(ctx, runid)
    old = schedule_scrub(ctx)
    assert old is not None
    ctx.clients.data.delete(ctx.keys.scrub_pass())  # the interval ran out
    new = schedule_scrub(ctx)
    assert new is not None and new != old
    assert run_step(ctx, old)["stopped"] == "superseded"
    assert "ok" not in _health(ctx, runid, names).values()
    done = run_step(ctx, new)
    assert done["done"] and done["checked"] == 3 and done["damaged"] == 2
    again = run_step(ctx, new)  # the same pass again: everything is fresh already
    assert again["checked"] == 0


def test_the_scrub_waits_behind_user_jobs(ctx: JobsContext, runid: str, workers: Workers) -> None:
    _, names = _damaged_run(ctx, runid)
    assert schedule_scrub(ctx) is not None
    from runarchive.jobs import enqueue_archive

    job_id = enqueue_archive(ctx, runid, "user first")
    _burst(workers, env={"RUNARCHIVE_SCRUB_INTERVAL": "0"})
    user = job_status(ctx, job_id)
    registry = FinishedJobRegistry(ctx.settings.scrub_queue, connection=ctx.clients.rq)
    (scrub_id,) = registry.get_job_ids()
    scrub = ctx.scrub_queue().fetch_job(scrub_id)
    assert scrub is not None and scrub.started_at is not None
    assert user["status"] == "finished"
    from rq.job import Job

    archive_job = Job.fetch(job_id, connection=ctx.clients.rq)
    assert archive_job.ended_at is not None and archive_job.ended_at <= scrub.started_at
    # The new archive the user made was checked by the pass that ran after it.
    (new,) = {info.name for info in list_archives(locate_run(ctx.settings, runid))} - set(
        names.values()
    )
    assert archive_health(ctx, locate_run(ctx.settings, runid), [new])[new].state == "ok"


def test_restore_of_a_damaged_archive_is_refused_before_any_work(
    ctx: JobsContext, runid: str
) -> None:
    run, names = _damaged_run(ctx, runid)
    pass_id = schedule_scrub(ctx)
    assert pass_id is not None
    run_step(ctx, pass_id)
    before = snapshot(run)
    for paths in (None, ["output/H1.txt"]):
        with pytest.raises(DamagedArchive) as refused:
            enqueue_restore(ctx, runid, names["deflated"], paths)
        assert f"Archive {names['deflated']} is damaged" in str(refused.value)
        assert "'output/H0.txt'" in str(refused.value)
    assert running_job(ctx, runid) is None and ctx.queue().count == 0
    assert snapshot(run) == before
    enqueue_restore(ctx, runid, names["fine"])  # a healthy archive restores as ever


def test_a_restore_job_refuses_an_archive_found_damaged_after_it_was_queued(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run, names = _damaged_run(ctx, runid)
    job_id = enqueue_restore(ctx, runid, names["stored"])  # not checked yet: queued
    pass_id = schedule_scrub(ctx)
    assert pass_id is not None
    ctx.scrub_queue().empty()
    run_step(ctx, pass_id)  # the damage is found before a worker takes the restore
    before = snapshot(run)
    rec = record(runid)
    _burst(workers, env={"RUNARCHIVE_SCRUB_INTERVAL": "0"})
    rec.wait_for(lambda line: line.startswith(f"rq:{job_id} TRIGGER"))
    assert rec.triggers(job_id) == ["RESTORE_FAILED"]
    errors = [x for x in rec.lines if x.startswith("Error: ")]
    assert len(errors) == 1 and f"Archive {names['stored']} is damaged" in errors[0]
    assert "'data.bin'" in errors[0]
    assert snapshot(run) == before


def test_a_worker_killed_mid_scrub_leaves_no_half_result_and_the_next_pass_goes_on(
    ctx: JobsContext, runid: str, workers: Workers
) -> None:
    _, names = _damaged_run(ctx, runid)
    slow = {**SCRUB_ON, "RUNARCHIVE_SCRUB_RATE": str(64 * 1024)}  # ~4 s per archive
    worker = workers.start(env=slow)
    started = StartedJobRegistry(ctx.settings.scrub_queue, connection=ctx.clients.rq)
    wait_until(lambda: len(started.get_job_ids()) == 1, timeout=30)
    time.sleep(1.0)  # mid-read of the first archive
    horses = children(worker.pid)
    assert horses, workers.log_text()
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    worker.kill()
    worker.wait(timeout=10)
    raw = ctx.clients.data.hgetall(ctx.keys.health(runid))
    assert len(raw) < 3  # the pass did not get through
    assert list(_health(ctx, runid, names).values()).count("unchecked") == 3 - len(raw)
    # The next interval's pass (the key expired) goes on, and finishes.
    ctx.clients.data.delete(ctx.keys.scrub_pass())
    _burst(workers)
    assert _health(ctx, runid, names) == {"fine": "ok", "stored": "damaged", "deflated": "damaged"}


def test_the_damage_line_is_one_line_without_server_paths() -> None:
    damage = "Cannot read archive r.zip: Input/output error\n at /srv/runs/ab/r/archives/r.zip"
    assert archive_damaged_line("r.zip", damage) == (
        "Archive damaged: r.zip: Cannot read archive r.zip: Input/output error at <path>"
    )
    assert parse_line(archive_damaged_line("r.zip", "x")).event is None  # free text
