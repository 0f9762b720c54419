"""Partial restore and undo as jobs: enqueued here, run by real ``runarchive worker`` processes.

Each job publishes its exact lines and exactly one final trigger; the run is compared with
tree snapshots; refusals happen at enqueue, before a job or a slot exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runarchive.core import (
    InvalidInput,
    Locked,
    NothingToUndo,
    create_archive,
    restore_archive,
    undo_info,
)
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, enqueue_restore, enqueue_undo, running_job
from runarchive.jobs.expiry import expire_undos
from runarchive.jobs.locks import acquire_lock, lock_statuses
from tests.support.channel import Recorder
from tests.support.journal import kept_undo, leftovers, undo_record, work_dir
from tests.support.runs import make_small_run
from tests.support.tree import snapshot
from tests.support.workers import Workers

pytestmark = pytest.mark.slow


def _is_trigger(job_id: str) -> Callable[[str], bool]:
    return lambda line: line.startswith(f"rq:{job_id} TRIGGER")


def _skeleton(lines: list[str]) -> list[str]:
    return [
        x for x in lines if not x.startswith(("Adding ", "Restored ")) and " PROGRESS " not in x
    ]


def _edited_run(ctx: JobsContext, runid: str) -> tuple[Path, str]:
    run = make_small_run(Path(str(ctx.settings.runs_root)), runid, nodb=("wepp.nodb",))
    name = create_archive(run).name
    (run / "README.md").write_text("changed\n")
    (run / "output" / "H0.pass.dat").write_text("edited\n")
    (run / "output" / "H9.pass.dat").write_text("new\n")
    (run / "wepp.nodb").write_text('{"state": 2}\n')
    return run, name


def test_a_partial_restore_job_then_an_undo_job_each_end_with_one_trigger(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run, name = _edited_run(ctx, runid)
    before = snapshot(run)
    rec = record(runid)

    job_id = enqueue_restore(ctx, runid, name, ["output/"])
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))

    after = snapshot(run)
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == {
        "output", "output/H0.pass.dat", "output/H9.pass.dat",
    }  # fmt: skip
    assert (run / "README.md").read_text() == "changed\n"  # not chosen: as it was
    assert undo_info(run).available
    assert ctx.clients.data.zscore(ctx.keys.undo_expiry(), runid) is not None

    undo_id = enqueue_undo(ctx, runid)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(undo_id))

    assert snapshot(run) == before
    assert leftovers(run) == [] and kept_undo(run) == []
    undo_lines = [x for x in _skeleton(rec.lines) if undo_id in x or x.startswith("Undo ")]
    assert undo_lines == [
        f"rq:{undo_id} ENQUEUED undo_restore_rq({runid})",
        f"rq:{undo_id} STARTED undo_restore_rq({runid})",
        f"Undo complete: {name}",
        f"rq:{undo_id} COMPLETED undo_restore_rq({runid})",
        f"rq:{undo_id} TRIGGER   archive UNDO_COMPLETE",
    ]
    triggers = [x for x in rec.lines if " TRIGGER " in x]
    assert triggers == [
        f"rq:{job_id} TRIGGER   archive RESTORE_COMPLETE",
        f"rq:{undo_id} TRIGGER   archive UNDO_COMPLETE",
    ]
    assert running_job(ctx, runid) is None
    assert lock_statuses(ctx.clients.locks, runid) == {}
    assert ctx.clients.data.zscore(ctx.keys.undo_expiry(), runid) is None
    with pytest.raises(NothingToUndo):
        enqueue_undo(ctx, runid)  # nothing is left to undo


def test_an_undo_with_nothing_kept_is_refused_before_a_job_exists(
    ctx: JobsContext, runid: str
) -> None:
    make_small_run(Path(str(ctx.settings.runs_root)), runid)
    with pytest.raises(NothingToUndo):
        enqueue_undo(ctx, runid)
    assert running_job(ctx, runid) is None


def test_a_path_the_archive_lacks_is_refused_at_enqueue_naming_it(
    ctx: JobsContext, runid: str
) -> None:
    run, name = _edited_run(ctx, runid)
    before = snapshot(run)
    with pytest.raises(InvalidInput, match=r"'output/H9\.pass\.dat' is not in archive"):
        enqueue_restore(ctx, runid, name, ["README.md", "output/H9.pass.dat"])
    with pytest.raises(InvalidInput, match="reserved archives/ folder"):
        enqueue_restore(ctx, runid, name, ["archives/"])
    with pytest.raises(InvalidInput):
        enqueue_restore(ctx, runid, name, ["../other-run/x"])
    assert running_job(ctx, runid) is None and snapshot(run) == before


def test_an_undo_is_refused_while_the_host_holds_a_lock(ctx: JobsContext, runid: str) -> None:
    run, name = _edited_run(ctx, runid)
    restore_archive(run, name, paths=["README.md"])
    token = acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60)
    assert token is not None
    with pytest.raises(Locked, match=r"Cannot undo while files are locked: wepp\.nodb"):
        enqueue_undo(ctx, runid)
    assert running_job(ctx, runid) is None and undo_info(run).available


def test_an_archive_job_ends_the_undo_and_purges_it(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run, name = _edited_run(ctx, runid)
    rec = record(runid)
    job_id = enqueue_restore(ctx, runid, name)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))
    assert undo_info(run).available

    job_id = enqueue_archive(ctx, runid)
    assert workers.burst() == 0, workers.log_text()
    rec.wait_for(_is_trigger(job_id))

    assert not undo_info(run).available
    assert leftovers(run) == [] and kept_undo(run) == []  # purged after the trigger
    assert ctx.clients.data.zscore(ctx.keys.undo_expiry(), runid) is None


def test_the_maintenance_drops_an_undo_when_it_expires(ctx: JobsContext, runid: str) -> None:
    run, name = _edited_run(ctx, runid)
    restore_archive(run, name, paths=["README.md"])
    record_ = undo_record(run)
    assert record_ is not None
    expires = record_["expires_ns"] / 1e9
    ctx.clients.data.zadd(ctx.keys.undo_expiry(), {runid: expires})

    assert expire_undos(ctx, now=time.time()) == {}  # not due yet: nothing asked
    assert undo_info(run).available
    record_["expires_ns"] = record_["at_ns"]  # as if the week had passed
    (work_dir(run) / "undo.json").write_text(json.dumps(record_))

    assert expire_undos(ctx, now=expires + 1) == {runid: True}

    assert kept_undo(run) == [] and leftovers(run) == []
    assert ctx.clients.data.zscore(ctx.keys.undo_expiry(), runid) is None
