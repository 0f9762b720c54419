"""Scale-out: two worker processes on one queue archive, then restore, ten runs at once."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from runarchive.core import list_archives
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, enqueue_restore
from runarchive.jobs.slot import iter_slots
from runarchive.synthetic_run import generate_run
from tests.support.channel import Recorder
from tests.support.tree import snapshot
from tests.support.waiting import wait_until
from tests.support.workers import Workers

pytestmark = pytest.mark.slow


def test_two_workers_archive_and_restore_ten_runs_with_one_trigger_each(
    ctx: JobsContext, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    root = Path(str(ctx.settings.runs_root))
    runids = [f"scale-{i:02d}" for i in range(10)]
    runs = {r: generate_run(root / r, seed=i, target_bytes=400_000, files=40)
            for i, r in enumerate(runids)}  # fmt: skip
    originals = {r: snapshot(root / r) for r in runids}
    recs = {r: record(r) for r in runids}
    pool = [workers.start(), workers.start()]

    archived = {r: enqueue_archive(ctx, r, f"scale {r}") for r in runids}
    for r, job_id in archived.items():
        recs[r].wait_for(lambda line, j=job_id: line.startswith(f"rq:{j} TRIGGER"), timeout=120)
    for r in runids:
        [info] = list_archives(root / r)
        assert info.comment == f"scale {r}" and info.readable
        assert info.files == runs[r].files
        (root / r / "README.md").write_text("edited after the snapshot")
        os.remove(next((root / r).rglob("*.nodb")))

    restored = {r: enqueue_restore(ctx, r, list_archives(root / r)[0].name) for r in runids}
    for r, job_id in restored.items():
        recs[r].wait_for(lambda line, j=job_id: line.startswith(f"rq:{j} TRIGGER"), timeout=120)

    for r in runids:
        assert recs[r].triggers(archived[r]) == ["ARCHIVE_COMPLETE"]
        assert recs[r].triggers(restored[r]) == ["RESTORE_COMPLETE"]
        assert snapshot(root / r) == originals[r]
    wait_until(lambda: not list(iter_slots(ctx.clients.data, ctx.keys)), timeout=10)

    # Both workers took part: the jobs were spread, not run by one process alone.
    def hosts() -> Counter[str]:
        return Counter(
            line.split("Worker ")[1].split(":")[0]
            for line in workers.log_text().splitlines()
            if "Job OK" in line and "Worker " in line
        )

    # RQ logs "Job OK" after the job's own last steps (trigger, slot): wait for the log.
    wait_until(lambda: sum(hosts().values()) >= 20, timeout=10)
    assert all(p.poll() is None for p in pool), workers.log_text()[-2000:]
    assert len(hosts()) == 2 and sum(hosts().values()) == 20, hosts()
