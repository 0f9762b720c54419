"""Fork as a job: enqueued here, run by real ``runarchive worker`` processes.

The new run appears under the runs root where ``locate_run`` finds it, holding exactly the
archive with its ``.nodb`` paths rewritten by the default post-fork hook; exactly one final
trigger goes to the SOURCE run's channel; refusals happen at enqueue, before a job, a slot
or a claim exists; a worker killed mid-fork leaves no run and, once recovery ran, no stage.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from runarchive.core import (
    InvalidInput,
    NotFound,
    RunExists,
    create_archive,
    validate_runid,
)
from runarchive.core.fork import STAGE_PREFIX
from runarchive.jobs.cancel import CancelStatus, cancel_job
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_fork, running_job
from runarchive.jobs.locks import acquire_lock, lock_statuses
from runarchive.jobs.runs import locate_run
from runarchive.jobs.settings import Settings
from tests.support.channel import Recorder
from tests.support.runs import make_small_run
from tests.support.tree import snapshot
from tests.support.waiting import wait_until
from tests.support.workers import Workers, children

from . import forkhooks

pytestmark = pytest.mark.slow


def _is_trigger(job_id: str) -> Callable[[str], bool]:
    return lambda line: line.startswith(f"rq:{job_id} TRIGGER")


def _skeleton(lines: list[str]) -> list[str]:
    return [x for x in lines if not x.startswith("Restored ") and " PROGRESS " not in x]


def _source(ctx: JobsContext, runid: str) -> tuple[Path, str, dict[str, tuple[object, ...]]]:
    root = Path(str(ctx.settings.runs_root))
    run = make_small_run(root, runid, nodb=("wepp.nodb", "watershed/soils.nodb"))
    (run / "wepp.nodb").write_text(json.dumps({"wd": str(run), "other": f"{run}-2/x"}) + "\n")
    name = create_archive(run).name
    archived = snapshot(run)
    (run / "README.md").write_text("changed since the archive\n")
    return run, name, archived


def _stages(ctx: JobsContext) -> list[str]:
    root = Path(str(ctx.settings.runs_root))
    return [str(p) for p in root.rglob(f"{STAGE_PREFIX}*")]


def _assert_free(ctx: JobsContext, runid: str, new_runid: str) -> None:
    assert running_job(ctx, runid) is None
    assert ctx.clients.data.get(ctx.keys.new_run_claim(new_runid)) is None


def test_a_fork_job_makes_the_new_run_and_ends_with_one_trigger_on_the_source_channel(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run, name, archived = _source(ctx, runid)
    new_id = f"{runid}-fork"
    rec, new_rec = record(runid), record(new_id)

    job_id, made = enqueue_fork(ctx, runid, name, new_id)
    assert made == new_id
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))

    new = locate_run(ctx.settings, new_id).path
    assert new == run.parent / new_id
    forked = snapshot(new)
    assert set(forked) == set(archived) and not (new / "archives").exists()
    assert {k for k in archived if forked[k] != archived[k]} == {"wepp.nodb"}  # rewritten
    state = json.loads((new / "wepp.nodb").read_text())
    assert state == {"wd": str(new), "other": f"{run}-2/x"}  # a whole path only
    assert (run / "README.md").read_text() == "changed since the archive\n"  # source as it was
    assert _skeleton(rec.lines) == [
        f"rq:{job_id} ENQUEUED fork_archive_rq({runid}, {name}, {new_id})",
        f"rq:{job_id} STARTED fork_archive_rq({runid}, {name}, {new_id})",
        "Rewrote run paths in 1 .nodb file",
        f"Fork complete: {new_id} from {name}",
        f"rq:{job_id} COMPLETED fork_archive_rq({runid})",
        f"rq:{job_id} TRIGGER   archive FORK_COMPLETE",
    ]
    assert [x for x in new_rec.lines if " TRIGGER " in x] == []  # only the source's channel
    assert _stages(ctx) == []
    _assert_free(ctx, runid, new_id)


def test_a_fork_without_a_new_id_gets_a_fresh_one_in_the_documented_shape(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    _, name, archived = _source(ctx, runid)
    rec = record(runid)
    job_id, new_id = enqueue_fork(ctx, runid, name)
    assert re.fullmatch(r"[a-km-np-z][a-km-np-z2-9]{9}", new_id) and validate_runid(new_id)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))
    assert set(snapshot(locate_run(ctx.settings, new_id).path)) == set(archived)


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "../up", "/abs", "nul\x00", "new line\n", ""])
def test_a_bad_new_run_id_is_refused_at_enqueue(ctx: JobsContext, runid: str, bad: str) -> None:
    run, name, _ = _source(ctx, runid)
    before = sorted(os.listdir(run.parent))
    with pytest.raises(InvalidInput):
        enqueue_fork(ctx, runid, name, bad)
    assert sorted(os.listdir(run.parent)) == before and running_job(ctx, runid) is None


@pytest.mark.parametrize("kind", ["run", "file", "link", "sharded-run"])
def test_a_new_id_whose_place_is_taken_is_refused_at_enqueue(
    ctx: JobsContext, runid: str, tmp_path: Path, kind: str
) -> None:
    run, name, _ = _source(ctx, runid)
    root, new_id = run.parent, f"{runid}-taken"
    if kind == "run":
        make_small_run(root, new_id)
    elif kind == "file":
        (root / new_id).write_text("x\n")
    elif kind == "link":
        (root / new_id).symlink_to(tmp_path)
    else:
        make_small_run(root / new_id[:2], new_id)  # auto layout: would be shadowed
    with pytest.raises(RunExists):
        enqueue_fork(ctx, runid, name, new_id)
    _assert_free(ctx, runid, new_id)


def test_a_missing_archive_or_one_that_climbs_is_refused_at_enqueue(
    ctx: JobsContext, runid: str
) -> None:
    _source(ctx, runid)
    with pytest.raises(NotFound):
        enqueue_fork(ctx, runid, f"{runid}.20000101T000000Z.zip", "fresh-one")
    with pytest.raises(InvalidInput):
        enqueue_fork(ctx, runid, "../other/x.zip", "fresh-one")
    _assert_free(ctx, runid, "fresh-one")


def test_two_forks_into_one_new_id_one_is_queued_the_other_refused(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    _, name, archived = _source(ctx, runid)
    other = f"{runid}-b"
    _, other_name, _ = _source(ctx, other)
    new_id = f"{runid}-contested"
    rec = record(runid)
    job_id, _ = enqueue_fork(ctx, runid, name, new_id)
    with pytest.raises(RunExists, match=f"Another fork \\(job {job_id}\\)"):
        enqueue_fork(ctx, other, other_name, new_id)
    assert running_job(ctx, other) is None  # the loser holds nothing
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))
    assert set(snapshot(locate_run(ctx.settings, new_id).path)) == set(archived)
    with pytest.raises(RunExists):  # and now the run exists
        enqueue_fork(ctx, other, other_name, new_id)


def test_a_failing_post_fork_hook_fails_the_job_and_no_run_appears(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    _, name, _ = _source(ctx, runid)
    new_id = f"{runid}-hookfail"
    rec = record(runid)
    job_id, _ = enqueue_fork(ctx, runid, name, new_id)
    proc = workers.start("--burst", env={"RUNARCHIVE_POST_FORK_HOOKS": forkhooks.FAIL})
    assert proc.wait(timeout=120) == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))
    assert [x for x in rec.lines if " TRIGGER " in x] == [
        f"rq:{job_id} TRIGGER   archive FORK_FAILED"
    ]
    errors = [x for x in rec.lines if x.startswith("Error: ")]
    assert len(errors) == 1 and "could not rewrite its state files" in errors[0]
    assert "No run was made" in errors[0]
    assert not (Path(str(ctx.settings.runs_root)) / new_id).exists() and _stages(ctx) == []
    _assert_free(ctx, runid, new_id)


def test_a_worker_killed_while_the_new_run_is_staged_leaves_no_run_one_failed_trigger(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    _, name, archived = _source(ctx, runid)
    new_id = f"{runid}-killed"
    rec = record(runid)
    data = ctx.clients.data
    job_id, _ = enqueue_fork(ctx, runid, name, new_id)
    proc = workers.start(env={"RUNARCHIVE_POST_FORK_HOOKS": forkhooks.HOLD})
    wait_until(lambda: data.exists(forkhooks.paused_key(new_id)), timeout=60)
    stage = Path(str(data.get(forkhooks.paused_key(new_id))))
    assert stage.is_dir() and stage.name == "run" and stage.parent.name.startswith(STAGE_PREFIX)
    assert not (Path(str(ctx.settings.runs_root)) / new_id).exists()  # not visible yet

    for pid in [*children(proc.pid), proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)

    # Once the dead job's lease expired, a worker that starts reconciles it (one FORK_FAILED)
    # and removes the dead stage.
    wait_until(lambda: not data.exists(ctx.keys.job_alive(job_id)), timeout=30)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))
    assert [x for x in rec.lines if " TRIGGER " in x] == [
        f"rq:{job_id} TRIGGER   archive FORK_FAILED"
    ]
    assert not (Path(str(ctx.settings.runs_root)) / new_id).exists()
    assert _stages(ctx) == []
    assert running_job(ctx, runid) is None

    # The dead job's claim is stale: the same id forks now, to the whole run.
    job2, _ = enqueue_fork(ctx, runid, name, new_id)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job2))
    assert set(snapshot(locate_run(ctx.settings, new_id).path)) == set(archived)
    _assert_free(ctx, runid, new_id)


def test_in_the_sharded_layout_the_new_run_goes_in_its_shard_and_dead_stages_are_swept(
    settings: Settings, runid: str, tmp_path: Path
) -> None:
    sharded = replace(settings, run_layout="sharded")
    root = Path(str(sharded.runs_root))
    logs = tmp_path / "sharded-logs"
    logs.mkdir()
    pool = Workers(sharded, logs)
    env = {"RUNARCHIVE_RUN_LAYOUT": "sharded"}
    with JobsContext.from_settings(sharded) as ctx:
        run = make_small_run(root / runid[:2], runid)
        name = create_archive(run).name
        archived = snapshot(run)
        dead = root / "zz" / f"{STAGE_PREFIX}0123456789ab" / "run"
        dead.mkdir(parents=True)  # a stage no live fork holds (its fork was killed)
        new_id = "zq-forked-run"  # its shard "zq" does not exist yet
        rec = Recorder(ctx, ctx.keys.status_channel(runid))
        try:
            job_id, _ = enqueue_fork(ctx, runid, name, new_id)
            assert pool.start("--burst", env=env).wait(timeout=120) == 0, pool.log_text()
            rec.wait_for(_is_trigger(job_id))
        finally:
            rec.close()
            pool.kill_all()
        assert [x for x in rec.lines if " TRIGGER " in x] == [
            f"rq:{job_id} TRIGGER   archive FORK_COMPLETE"
        ]
        new = locate_run(sharded, new_id).path
        assert new == root / "zq" / new_id and set(snapshot(new)) == set(archived)
        assert not dead.parent.exists()  # swept by the worker's start
        assert _stages(ctx) == []


def test_a_fork_does_not_wait_for_the_sources_nodb_locks(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    _, name, archived = _source(ctx, runid)
    token = acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60)
    assert token is not None  # the host is working on the source
    rec = record(runid)
    job_id, new_id = enqueue_fork(ctx, runid, name)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))
    assert [x for x in rec.lines if " TRIGGER " in x] == [
        f"rq:{job_id} TRIGGER   archive FORK_COMPLETE"
    ]
    assert set(snapshot(locate_run(ctx.settings, new_id).path)) == set(archived)
    assert lock_statuses(ctx.clients.locks, runid)["wepp.nodb"]  # the host's lock untouched


def test_a_fork_canceled_while_queued_ends_failed_and_frees_its_new_id(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    _, name, archived = _source(ctx, runid)
    new_id = f"{runid}-canceled"
    rec = record(runid)
    job_id, _ = enqueue_fork(ctx, runid, name, new_id)
    assert cancel_job(ctx, job_id, "alice") == CancelStatus.CANCELED
    rec.wait_for(_is_trigger(job_id))
    assert [x for x in rec.lines if " TRIGGER " in x] == [
        f"rq:{job_id} TRIGGER   archive FORK_FAILED"
    ]
    assert workers.burst() == 0, workers.log_text()  # the worker skips it
    assert not (Path(str(ctx.settings.runs_root)) / new_id).exists() and _stages(ctx) == []
    job2, _ = enqueue_fork(ctx, runid, name, new_id)  # the canceled job's claim is stale
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job2))
    assert set(snapshot(locate_run(ctx.settings, new_id).path)) == set(archived)
