"""A 20,000-file run: few status messages, and the run's NoDb locks held throughout."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runarchive.core import list_archives
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive
from runarchive.jobs.locks import acquire_lock, lock_infos, lock_statuses
from runarchive.jobs.vocabulary import Event
from tests.support.channel import Recorder
from tests.support.runs import make_many_files_run
from tests.support.workers import Workers

pytestmark = pytest.mark.slow


def test_a_20000_file_archive_publishes_a_few_lines_a_second_and_holds_its_locks(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    run = make_many_files_run(Path(str(ctx.settings.runs_root)), runid, 20_000)
    rec = record(runid)
    job_id = enqueue_archive(ctx, runid)
    proc = workers.start("--burst")

    rec.wait_for(lambda x: x.startswith("Adding "))
    started = time.monotonic()
    # Mid-snapshot the job holds the run's .nodb lock: the host application cannot write.
    assert acquire_lock(ctx.clients.locks, runid, "wepp.nodb", ttl=60) is None
    assert lock_infos(ctx.clients.locks, runid)["wepp.nodb"].job_id == job_id

    assert proc.wait(timeout=120) == 0, workers.log_text()
    rec.wait_for(lambda x: x.startswith(f"rq:{job_id} TRIGGER"))
    seconds = time.monotonic() - started

    assert rec.triggers(job_id) == ["ARCHIVE_COMPLETE"]
    [info] = list_archives(run)
    assert info.files == 20_001
    adding = [x for x in rec.lines if x.startswith("Adding ")]
    progress = [p for p in rec.parsed() if p.event is Event.PROGRESS]
    # At most ~10 Adding lines and 2 PROGRESS lines a second, plus a few at phase ends.
    assert len(adding) <= 10 * seconds + 3
    assert len(progress) <= 2 * seconds + 4
    assert len(rec.lines) < 300, f"{len(rec.lines)} messages for 20,000 files in {seconds:.1f} s"
    assert progress[-1].progress is not None
    assert progress[-1].progress[1:3] == (20_001, 20_001)
    assert lock_statuses(ctx.clients.locks, runid) == {}  # released at the end
