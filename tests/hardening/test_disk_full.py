"""Disk full during archive and restore, through the job path: clean failure, nothing changed.

Two ways to fill the disk, both under a real worker started by the API's job:

* a small **tmpfs** mounted as the runs root (we run as root; unmounted in teardown), filled
  with a ballast file so only a few MiB stay free — the real ``ENOSPC`` of a full disk, and the
  up-front free-space check;
* **RLIMIT_FSIZE** on the worker process — a write past the limit fails with ``EFBIG`` in the
  middle of writing, after every up-front check passed.

In every case the job ends ``*_FAILED`` with one final trigger, the run's status stream says
why (``Error: … disk space …``), the run and its existing archives are unchanged byte for byte,
no partial archive or stage is left, and the slot is free.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive.core import create_archive
from runarchive.jobs.lines import parse_line
from runarchive.jobs.vocabulary import Event
from tests.support.journal import leftovers
from tests.support.tree import snapshot, tree_bytes
from tests.support.web import Run, WebEnv, close_web_env, make_web_env
from tests.support.workers import WORKER_TIMEOUT, Workers, start_limited_worker

pytestmark = pytest.mark.slow
MIB = 1 << 20


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def leave_free(mount: Path, free: int) -> None:
    """Fill the filesystem at ``mount`` with ballast until about ``free`` bytes stay free."""
    ballast = mount / "ballast"
    have = free_bytes(mount) + (ballast.stat().st_size if ballast.exists() else 0)
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(0, have - free))
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def no_reserve() -> Iterator[None]:
    """Switch the free-space reserve off (here and in the workers started meanwhile): these
    tests are about what happens when the disk itself runs out."""
    saved = {
        k: os.environ.get(k) for k in ("RUNARCHIVE_RESERVE_BYTES", "RUNARCHIVE_RESERVE_PERCENT")
    }
    os.environ.update({k: "0" for k in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def tmpfs(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, no_reserve: None
) -> Iterator[WebEnv]:
    root = tmp_path_factory.mktemp("diskfull")
    mount = root / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        runs = mount / "runs"
        runs.mkdir()
        env = make_web_env(root, redis_url, runs)
        try:
            yield env
        finally:
            close_web_env(env)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def tmpfs_workers(tmpfs: WebEnv, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers(tmpfs.settings, logs)
    try:
        yield pool
    finally:
        pool.kill_all()
        ballast = tmpfs.runs_root.parent / "ballast"
        ballast.unlink(missing_ok=True)


def post(env: WebEnv, run: Run, route: str, body: dict[str, str]) -> str:
    response = env.token_client("owner").post(f"/runs/{run.runid}/rq/api/{route}", json=body)
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["job_id"])


def assert_failed_cleanly(
    env: WebEnv, run: Run, job_id: str, trigger: str, said: str, before: object, archives: object
) -> None:
    info = env.token_client("owner").get(f"/rq/api/jobinfo/{job_id}").get_json()
    assert info["trigger"] == trigger
    assert "NoSpace" in info["exc_info"]
    lines = env.ctx.stream(run.runid).recent()
    errors = [x for x in lines if x.startswith("Error: ")]
    assert any(said in x for x in errors), errors
    # Anonymous viewers of a public run read these lines: no server path, the run by its id.
    assert not any(re.search(r"(^|[\s'\"(])/", x) for x in errors), errors
    assert not any(str(env.runs_root) in x for x in errors), errors
    parsed = [parse_line(x) for x in lines]
    assert [str(p.trigger) for p in parsed if p.event is Event.TRIGGER and p.job_id == job_id] == [
        trigger
    ]
    assert snapshot(run.path) == before
    assert tree_bytes(run.path / "archives") == archives
    assert [n for n in os.listdir(run.path / "archives") if n.startswith(".tmp-")] == []
    assert leftovers(run.path) == []
    listing = env.token_client("owner").get(f"/runs/{run.runid}/archive/list").get_json()
    assert listing["in_progress"] is False
    assert all(a["readable"] for a in listing["archives"])


def test_the_disk_filling_up_while_archiving_fails_the_job_and_keeps_nothing(
    tmpfs: WebEnv, tmpfs_workers: Workers
) -> None:
    run = tmpfs.new_run()
    # compressible at its start (so the up-front estimate counts it at a third), random after
    (run.path / "big.dat").write_bytes(bytes(64 * 1024) + os.urandom(20 * MIB))
    leave_free(tmpfs.runs_root.parent, 12 * MIB)
    before, archives = snapshot(run.path), tree_bytes(run.path / "archives")
    job_id = post(tmpfs, run, "archive", {"comment": "too big"})
    assert tmpfs_workers.burst() == 0, tmpfs_workers.log_text()
    assert_failed_cleanly(
        tmpfs, run, job_id, "ARCHIVE_FAILED", "Ran out of disk space", before, archives
    )


def test_a_restore_that_cannot_fit_is_refused_before_touching_the_run(
    tmpfs: WebEnv, tmpfs_workers: Workers
) -> None:
    run = tmpfs.new_run()
    (run.path / "big.dat").write_bytes(os.urandom(6 * MIB))
    name = create_archive(run.path, "with big").name
    (run.path / "big.dat").write_bytes(os.urandom(6 * MIB))  # the run moved on
    leave_free(tmpfs.runs_root.parent, 8 * MIB)
    before, archives = snapshot(run.path), tree_bytes(run.path / "archives")
    job_id = post(tmpfs, run, "restore-archive", {"archive_name": name})
    assert tmpfs_workers.burst() == 0, tmpfs_workers.log_text()
    assert_failed_cleanly(
        tmpfs, run, job_id, "RESTORE_FAILED", "Not enough disk space", before, archives
    )


def test_a_write_limit_hit_mid_archive_fails_the_job_and_keeps_nothing(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    (run.path / "big.dat").write_bytes(os.urandom(3 * MIB))
    before, archives = snapshot(run.path), tree_bytes(run.path / "archives")
    job_id = post(web, run, "archive", {"comment": "limited"})
    assert start_limited_worker(workers, MIB, "--burst").wait(WORKER_TIMEOUT) == 0
    assert_failed_cleanly(
        web, run, job_id, "ARCHIVE_FAILED", "Ran out of disk space", before, archives
    )


def test_a_write_limit_hit_mid_restore_fails_the_job_and_leaves_the_run_as_it_was(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    (run.path / "big.dat").write_bytes(os.urandom(3 * MIB))
    name = create_archive(run.path, "with big").name
    (run.path / "big.dat").write_bytes(os.urandom(3 * MIB))
    (run.path / "README.md").write_text("edited since\n")
    before, archives = snapshot(run.path), tree_bytes(run.path / "archives")
    job_id = post(web, run, "restore-archive", {"archive_name": name})
    assert start_limited_worker(workers, MIB, "--burst").wait(WORKER_TIMEOUT) == 0
    assert_failed_cleanly(
        web, run, job_id, "RESTORE_FAILED", "Ran out of disk space", before, archives
    )
