"""Quotas in the core: sizes, the usage of a run, the refusal's message, and the write budget
that aborts an archive without leaving a partial file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runarchive.core import (
    InvalidInput,
    Limit,
    QuotaExceeded,
    budget_for,
    check_quota,
    create_archive,
    list_archives,
    measure_usage,
    parse_count,
    parse_size,
    run_limit_from_env,
)


def _fill(run_dir: Path, files: int = 20, size: int = 20_000) -> int:
    (run_dir / "wepp" / "output").mkdir(parents=True)
    for i in range(files):
        # incompressible: os.urandom, so the archive is about the run's size
        (run_dir / "wepp" / "output" / f"H{i}.dat").write_bytes(os.urandom(size))
    return files * size


def test_sizes_read_as_people_write_them() -> None:
    assert parse_size("10G") == 10 << 30
    assert parse_size("500M") == 500 << 20
    assert parse_size("1.5T") == int(1.5 * (1 << 40))
    assert parse_size("2GiB") == parse_size("2gb") == 2 << 30
    assert parse_size("123") == 123
    assert parse_size(" none ") is None
    assert parse_count("40") == 40
    assert parse_count("none") is None
    for bad in ("", "ten", "-1G", "1X", "1e9", "G"):
        with pytest.raises(InvalidInput):
            parse_size(bad)
    for bad in ("", "-1", "1.5", "lots"):
        with pytest.raises(InvalidInput):
            parse_count(bad)


def test_site_run_limit_comes_from_the_environment() -> None:
    assert run_limit_from_env({}) == Limit()
    limit = run_limit_from_env(
        {"RUNARCHIVE_QUOTA_RUN_BYTES": "10G", "RUNARCHIVE_QUOTA_RUN_COUNT": "30"}
    )
    assert limit == Limit(10 << 30, 30)
    with pytest.raises(InvalidInput, match="RUNARCHIVE_QUOTA_RUN_BYTES"):
        run_limit_from_env({"RUNARCHIVE_QUOTA_RUN_BYTES": "lots"})


def test_the_refusal_names_usage_limit_and_what_to_do() -> None:
    gib = 1 << 30
    with pytest.raises(QuotaExceeded) as caught:
        check_quota("Run r1", int(9.2 * gib), 3, gib, Limit(bytes=10 * gib))
    assert str(caught.value) == (
        "Run r1 uses 9.2 GiB of 10.0 GiB for archives (the next one needs about 1.0 GiB); "
        "delete or prune archives, or ask an admin."
    )
    assert caught.value.code == "quota_exceeded"
    with pytest.raises(QuotaExceeded, match=r"^Your runs have 5 of 5 archives; delete or prune"):
        check_quota("Your runs", 0, 5, 1, Limit(count=5), plural=True)
    check_quota("Run r1", 9 * gib, 4, gib, Limit(10 * gib, 5))  # exactly at the limit: allowed
    check_quota("Run r1", 10**15, 10**6, 10**12, Limit())  # no limit
    assert budget_for(3, Limit(bytes=10)) == 7
    assert budget_for(30, Limit(bytes=10)) == 0
    assert budget_for(30, Limit(count=1)) is None


def test_usage_counts_archives_run_bytes_and_free_disk(run_dir: Path) -> None:
    content = _fill(run_dir)
    empty = measure_usage(run_dir, fresh=True)
    assert (empty.archives_bytes, empty.archives_count) == (0, 0)
    assert empty.run_bytes == content
    assert empty.ratio is None
    assert empty.estimate == content + 256 * 20 + (64 << 10)  # every byte, plus headers
    first = create_archive(run_dir)
    usage = measure_usage(run_dir, fresh=True)
    assert usage.archives_bytes == first.size
    assert usage.archives_count == 1
    assert usage.run_bytes == content  # archives/ is not the run's own bytes
    vfs = os.statvfs(run_dir / "archives")
    assert abs(usage.disk_free_bytes - vfs.f_bavail * vfs.f_frsize) < 64 << 20
    # the next archive is estimated from this one's ratio: its real size, plus 64 KiB slack
    assert usage.ratio == pytest.approx(first.size / content)
    assert first.size + (64 << 10) <= usage.estimate <= first.size + (64 << 10) + 1
    assert usage.as_json(Limit(10 << 20, None)) == {
        "archives_bytes": first.size,
        "archives_count": 1,
        "run_bytes": content,
        "quota_bytes": 10 << 20,
        "quota_count": None,
        "disk_free_bytes": usage.disk_free_bytes,
    }


def test_run_bytes_are_cached_and_a_fresh_measure_walks_again(run_dir: Path) -> None:
    content = _fill(run_dir, files=2)
    assert measure_usage(run_dir, fresh=True).run_bytes == content
    (run_dir / "more.txt").write_bytes(b"x" * 1000)
    assert measure_usage(run_dir).run_bytes == content  # the list's cached walk
    assert measure_usage(run_dir, fresh=True).run_bytes == content + 1000


def test_a_stale_run_size_is_answered_while_the_run_is_walked_again(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runarchive.core import quota

    content = _fill(run_dir, files=2)
    assert measure_usage(run_dir).run_bytes == content  # the first list walks
    (run_dir / "more.txt").write_bytes(b"x" * 1000)
    monkeypatch.setattr(quota, "RUN_BYTES_TTL", 0.0)  # every figure is stale from now on
    assert measure_usage(run_dir).run_bytes == content  # answered at once, walk started
    deadline = time.monotonic() + 10
    while measure_usage(run_dir).run_bytes != content + 1000:
        assert time.monotonic() < deadline, "the background walk never landed"
        time.sleep(0.01)


def test_a_planted_link_for_archives_is_not_followed_for_usage(
    run_dir: Path, tmp_path: Path
) -> None:
    _fill(run_dir, files=2)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "r.20240101T000000Z.zip").write_bytes(b"PK" * 1000)
    (run_dir / "archives").symlink_to(outside)
    with pytest.raises(Exception, match="archives"):
        measure_usage(run_dir, fresh=True)


def test_an_archive_over_its_budget_is_aborted_and_leaves_no_file(run_dir: Path) -> None:
    content = _fill(run_dir, files=10, size=200_000)
    first = create_archive(run_dir)
    before = sorted(os.listdir(run_dir / "archives"))
    with pytest.raises(QuotaExceeded, match="nothing was kept"):
        create_archive(run_dir, "too big", budget=content // 2)
    assert sorted(os.listdir(run_dir / "archives")) == before  # no temp file, no new archive
    assert [a.name for a in list_archives(run_dir)] == [first.name]
    # a budget the archive fits in is no obstacle, within a few bytes (the deflated manifest
    # differs by its times); a few hundred bytes short of it is refused
    second = create_archive(run_dir, "fits", budget=first.size + 16)
    assert first.size - 16 <= second.size <= first.size + 16
    with pytest.raises(QuotaExceeded):
        create_archive(run_dir, "short", budget=second.size - 256)
    assert len(list_archives(run_dir)) == 2
    assert not [n for n in os.listdir(run_dir / "archives") if n.endswith(".partial")]
