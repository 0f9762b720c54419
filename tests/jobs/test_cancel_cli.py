"""``runarchive cancel JOB_ID``: a real CLI process against the tests' real valkey and worker.

Exit 0 when canceled (the job's ``Error:`` line names the OS user), 3 once the job can no
longer be canceled, 1 for an unknown job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, running_job
from runarchive.jobs.settings import Settings
from tests.support.runs import make_small_run
from tests.support.workers import Workers


def _lines(ctx: JobsContext, runid: str) -> list[str]:
    return ctx.stream(runid).recent()


def _triggers(ctx: JobsContext, runid: str, job_id: str) -> list[str]:
    prefix = f"rq:{job_id} TRIGGER   archive "
    return [x[len(prefix) :] for x in _lines(ctx, runid) if x.startswith(prefix)]


def _cli(settings: Settings, *args: str, user: str) -> subprocess.CompletedProcess[str]:
    """Run ``runarchive ARGS`` as OS user ``user`` (LOGNAME/USER) against the test's Redis."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RUNARCHIVE_REDIS_URL")}
    env.update(LOGNAME=user, USER=user, RUNARCHIVE_KEY_PREFIX=settings.key_prefix)
    return subprocess.run(
        [sys.executable, "-m", "runarchive", *args, "--redis-url", str(settings.redis_url)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_runarchive_cancel_ends_a_queued_job_exits_0_and_names_the_os_user(
    ctx: JobsContext, settings: Settings, runid: str
) -> None:
    make_small_run(Path(str(ctx.settings.runs_root)), runid)
    job_id = enqueue_archive(ctx, runid)

    done = _cli(settings, "cancel", job_id, "--json", user="ops-carol")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"job_id": job_id, "status": "canceled"}
    assert _triggers(ctx, runid, job_id) == ["ARCHIVE_FAILED"]
    assert [x for x in _lines(ctx, runid) if x.startswith("Error: ")] == [
        "Error: Canceled by ops-carol"
    ]
    assert running_job(ctx, runid) is None


def test_runarchive_cancel_exits_3_once_a_job_ended_and_1_for_an_unknown_job(
    ctx: JobsContext, settings: Settings, runid: str, workers: Workers
) -> None:
    make_small_run(Path(str(ctx.settings.runs_root)), runid)
    job_id = enqueue_archive(ctx, runid)
    assert workers.burst() == 0, workers.log_text()

    ended = _cli(settings, "cancel", job_id, user="ops-carol")
    unknown = _cli(settings, "cancel", "no-such-job", user="ops-carol")

    assert ended.returncode == 3, ended.stderr
    assert "already ended (ARCHIVE_COMPLETE)" in ended.stderr
    assert unknown.returncode == 1, unknown.stderr
    assert "Job not found: no-such-job" in unknown.stderr
    assert _triggers(ctx, runid, job_id) == ["ARCHIVE_COMPLETE"]
