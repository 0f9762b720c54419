"""The owner reservation on a real Redis: what the script counts, refuses and writes, the
measure it refuses to trust once an archive ended meanwhile, and release with every ending
(a worker killed mid-archive included)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from runarchive.core import Limit, QuotaExceeded, RunRef, create_archive, list_archives
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, running_job
from runarchive.jobs.lifecycle import finish_job
from runarchive.jobs.reservation import OwnerQuota, archive_budget, release_reservation
from runarchive.jobs.runs import locate_run
from runarchive.jobs.vocabulary import JobKind
from tests.support.channel import Recorder
from tests.support.runs import make_many_files_run
from tests.support.waiting import wait_until
from tests.support.workers import Workers, children

KIB, MIB = 1 << 10, 1 << 20


def _run(ctx: JobsContext, runid: str, size: int) -> RunRef:
    path = Path(str(ctx.settings.runs_root)) / runid
    path.mkdir()
    (path / "data.bin").write_bytes(os.urandom(size))
    return locate_run(ctx.settings, runid)


def _held(ctx: JobsContext, owner: str) -> dict[str, str]:
    fields: dict[str, str] = ctx.clients.data.hgetall(ctx.keys.quota_owner(owner))
    return {k: v for k, v in fields.items() if k.startswith("r:")}


def test_reservations_add_up_and_the_one_that_would_pass_is_refused(
    ctx: JobsContext, runid: str
) -> None:
    runs = [_run(ctx, f"{runid}-{i}", 100 * KIB) for i in range(3)]
    ana = OwnerQuota("ana", Limit(bytes=600 * KIB), tuple(runs), "Your runs")
    first = archive_budget(ctx, runs[0], [ana], "job-1")
    second = archive_budget(ctx, runs[1], [ana], "job-2")
    assert first is not None and second is not None
    # each holds its estimate plus a margin, never more than the room left
    assert 100 * KIB < first <= 600 * KIB and second <= 600 * KIB - first
    assert set(_held(ctx, "ana")) == {"r:job-1", "r:job-2"}
    with pytest.raises(QuotaExceeded, match=r"^Your runs use .* of 600\.0 KiB for archives"):
        archive_budget(ctx, runs[2], [ana], "job-3")
    assert set(_held(ctx, "ana")) == {"r:job-1", "r:job-2"}  # a refusal reserves nothing
    assert release_reservation(ctx.clients.data, ctx.keys, "job-1") == 1
    assert archive_budget(ctx, runs[2], [ana], "job-3") is not None
    assert release_reservation(ctx.clients.data, ctx.keys, "job-1") == 0  # idempotent


def test_a_reservation_counts_as_one_archive(ctx: JobsContext, runid: str) -> None:
    runs = [_run(ctx, f"{runid}-{i}", KIB) for i in range(3)]
    create_archive(runs[0].path)
    ana = OwnerQuota("ana2", Limit(count=2), tuple(runs), "The runs of ana2")
    archive_budget(ctx, runs[1], [ana], "c-1")
    with pytest.raises(QuotaExceeded) as caught:
        archive_budget(ctx, runs[2], [ana], "c-2")
    assert str(caught.value) == (
        "The runs of ana2 have 2 of 2 archives; delete or prune archives, or ask an admin."
    )


def test_co_owners_are_reserved_in_together_or_not_at_all(ctx: JobsContext, runid: str) -> None:
    run = _run(ctx, runid, 100 * KIB)
    roomy = OwnerQuota("roomy", Limit(bytes=100 * MIB), (run,), "Your runs")
    tight = OwnerQuota("tight", Limit(bytes=50 * KIB), (run,), "The runs of tight")
    with pytest.raises(QuotaExceeded, match=r"^The runs of tight use"):
        archive_budget(ctx, run, [roomy, tight], "both")
    assert _held(ctx, "roomy") == {} and _held(ctx, "tight") == {}


def test_the_tightest_limit_is_the_budget(ctx: JobsContext, runid: str) -> None:
    small, other = _run(ctx, runid, 10 * KIB), _run(ctx, f"{runid}-b", KIB)
    existing = create_archive(other.path).size
    ana = OwnerQuota("ana3", Limit(bytes=existing + 300 * KIB), (small, other), "Your runs")
    # room enough: the estimate (10 KiB + 256 B a file + 64 KiB) plus its margin (a quarter
    # and 64 KiB)
    estimate = 10 * KIB + 256 + 64 * KIB
    assert archive_budget(ctx, small, [ana], "tight-1") == estimate + estimate // 4 + 64 * KIB
    release_reservation(ctx.clients.data, ctx.keys, "tight-1")
    ana = OwnerQuota("ana3", Limit(bytes=existing + 100 * KIB), (small, other), "Your runs")
    assert archive_budget(ctx, small, [ana], "tight-2") == 100 * KIB  # the room, exactly


def test_a_measure_taken_while_an_archive_ended_is_taken_again(
    ctx: JobsContext, runid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wrap the real measure: the first time, an archive of the owner ends (published, then
    released) between the measure and the script; the script refuses that measure."""
    from runarchive.jobs import reservation

    runs = [_run(ctx, f"{runid}-{i}", 100 * KIB) for i in range(2)]
    ana = OwnerQuota("ana4", Limit(bytes=400 * KIB), tuple(runs), "Your runs")
    archive_budget(ctx, runs[1], [ana], "ending")
    real = reservation._archives_of
    calls: list[int] = []

    def measure_then_an_archive_ends(*args: object) -> tuple[int, int]:
        found = real(*args)  # type: ignore[arg-type]
        if not calls:
            create_archive(runs[1].path)  # the ending job's archive is published …
            release_reservation(ctx.clients.data, ctx.keys, "ending")  # … then released
        calls.append(1)
        return found

    monkeypatch.setattr(reservation, "_archives_of", measure_then_an_archive_ends)
    budget = archive_budget(ctx, runs[0], [ana], "next")
    assert len(calls) == 2  # measured again after the gen moved
    archived = sum(a.size for a in list_archives(runs[1].path))
    assert budget is not None and budget <= 400 * KIB - archived


def test_finish_job_releases_the_reservation(ctx: JobsContext, runid: str) -> None:
    run = _run(ctx, runid, 10 * KIB)
    ana = OwnerQuota("ana5", Limit(bytes=MIB), (run,), "Your runs")
    archive_budget(ctx, run, [ana], "fin-1")
    finish_job(ctx, runid, "fin-1", JobKind.ARCHIVE, ok=False, error="gone")
    assert _held(ctx, "ana5") == {}
    assert not ctx.clients.data.exists(ctx.keys.job_quota("fin-1"))


def test_a_worker_killed_mid_archive_has_its_reservation_reaped_with_the_job(
    ctx: JobsContext, runid: str, workers: Workers, record: Callable[[str], Recorder]
) -> None:
    make_many_files_run(Path(str(ctx.settings.runs_root)), runid, 5000)
    run = locate_run(ctx.settings, runid)
    ana = OwnerQuota("ana6", Limit(bytes=1 << 40), (run,), "Your runs")
    rec = record(runid)
    job_id = enqueue_archive(ctx, run, owners=[ana])
    assert list(_held(ctx, "ana6")) == [f"r:{job_id}"]
    proc = workers.start("--burst")
    rec.wait_for(lambda x: x.startswith("Adding "))
    horses = wait_until(lambda: children(proc.pid), timeout=10, step=0.005)
    os.kill(proc.pid, signal.SIGKILL)
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert list(_held(ctx, "ana6")) == [f"r:{job_id}"]  # nobody alive to release it
    wait_until(lambda: not ctx.clients.data.exists(ctx.keys.job_alive(job_id)), timeout=10)
    assert running_job(ctx, runid) is None  # reconcile reaps the slot …
    assert _held(ctx, "ana6") == {}  # … and the reservation with it
    rec.wait_for(lambda x: x == f"rq:{job_id} TRIGGER   archive ARCHIVE_FAILED")
