"""The core's scrub: one archive checked by handle, bound to the file it read, at a bounded rate."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest

from runarchive.core import (
    ArchiveIdentity,
    Throttle,
    check_archive,
    create_archive,
    open_run,
    runs_under,
    scrub_run,
)
from tests.support.runs import flip_entry_byte, make_mixed_run, make_small_run


def _archive(tmp_path: Path, runid: str = "mixed-run") -> tuple[Path, Path]:
    run = make_mixed_run(tmp_path / "runs", runid)
    return run, create_archive(run, "base").path


def test_a_clean_archive_checks_ok_and_names_the_file_it_read(tmp_path: Path) -> None:
    run, archive = _archive(tmp_path)
    with open_run(run) as opened:
        result = check_archive(opened, archive.name)
    assert result is not None
    assert result.ok and result.health == "ok" and result.damage is None
    assert result.identity == ArchiveIdentity.of(os.lstat(archive))
    assert result.bytes_read > 256 * 1024  # every entry's data was read, the stored file too


def test_a_byte_flipped_in_a_stored_entry_is_damage_naming_the_entry(tmp_path: Path) -> None:
    run, archive = _archive(tmp_path)
    flip_entry_byte(archive, "data.bin", zipfile.ZIP_STORED)
    with open_run(run) as opened:
        result = check_archive(opened, archive.name)
    assert result is not None and not result.ok and result.health == "damaged"
    assert result.damage is not None and "'data.bin'" in result.damage
    assert all("data.bin" in p for p in result.problems)


def test_a_byte_flipped_in_a_deflated_entry_is_damage_naming_the_entry(tmp_path: Path) -> None:
    run, archive = _archive(tmp_path)
    flip_entry_byte(archive, "output/H1.txt", zipfile.ZIP_DEFLATED)
    with open_run(run) as opened:
        result = check_archive(opened, archive.name)
    assert result is not None and not result.ok
    assert result.damage is not None and "'output/H1.txt'" in result.damage
    assert not any("H0.txt" in p or "H2.txt" in p or "data.bin" in p for p in result.problems)


def test_an_archive_replaced_while_it_is_checked_gives_no_verdict(tmp_path: Path) -> None:
    run, archive = _archive(tmp_path)
    other = create_archive(run, "other").path
    swapped = False

    def swap() -> None:  # mid-read: the name now denotes another file
        nonlocal swapped
        if not swapped:
            swapped = True
            os.replace(other, archive)

    with open_run(run) as opened:
        assert check_archive(opened, archive.name, tick=swap) is None
        assert swapped
        # The file now under the name is checked on its own next time.
        result = check_archive(opened, archive.name)
    assert result is not None and result.ok
    assert result.identity == ArchiveIdentity.of(os.lstat(archive))


def test_an_archive_deleted_while_it_is_checked_is_skipped(tmp_path: Path) -> None:
    run, archive = _archive(tmp_path)
    with open_run(run) as opened:
        assert (
            check_archive(opened, archive.name, tick=lambda: archive.unlink(missing_ok=True))
            is None
        )


def test_an_archive_rewritten_in_place_while_checked_gives_no_verdict(tmp_path: Path) -> None:
    run, archive = _archive(tmp_path)
    before = os.lstat(archive)

    done: list[bool] = []

    def rewrite() -> None:  # same inode, same size and mtime: only ctime tells
        if not done:
            done.append(True)
            flip_entry_byte(archive, "data.bin", zipfile.ZIP_STORED)
            os.utime(archive, ns=(before.st_atime_ns, before.st_mtime_ns))

    with open_run(run) as opened:
        assert check_archive(opened, archive.name, tick=rewrite) is None


def test_a_link_planted_under_an_archive_name_is_not_followed(tmp_path: Path) -> None:
    run, archive = _archive(tmp_path)
    outside = tmp_path / "secret.zip"
    archive.rename(outside)
    archive.symlink_to(outside)
    with open_run(run) as opened:
        assert check_archive(opened, archive.name) is None
    assert scrub_run(run) == []


def test_a_check_at_a_small_rate_takes_at_least_its_bytes_over_the_rate(tmp_path: Path) -> None:
    run = make_mixed_run(tmp_path / "runs", "slow-run", random_bytes=3 << 20)
    archive = create_archive(run, "big").path
    rate = 1 << 20
    with open_run(run) as opened:
        start = time.monotonic()
        result = check_archive(opened, archive.name, rate=rate)
        elapsed = time.monotonic() - start
    assert result is not None and result.ok
    assert result.bytes_read >= 3 << 20
    assert elapsed >= result.bytes_read / rate - 0.05


def test_the_throttle_sleeps_until_the_bytes_so_far_are_due() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(1000, clock=lambda: now[0], sleep=sleep)
    throttle(500)
    now[0] += 0.2
    throttle(500)
    assert slept == pytest.approx([0.5, 0.3])
    assert Throttle(0).rate is None and Throttle(None).rate is None


def test_scrub_run_checks_every_archive_one_at_a_time(tmp_path: Path) -> None:
    run, first = _archive(tmp_path)
    second = create_archive(run, "second").path
    flip_entry_byte(first, "output/H0.txt", zipfile.ZIP_DEFLATED)
    seen: list[str] = []
    results = scrub_run(run, on_result=lambda _run, r: seen.append(r.name))
    assert {r.name: r.health for r in results} == {first.name: "damaged", second.name: "ok"}
    assert seen == [r.name for r in results] == [second.name, first.name]  # newest first


def test_runs_under_finds_flat_and_sharded_runs_with_archives_and_no_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for runid in ("alpha-run", "beta-run"):
        create_archive(make_small_run(root, runid), "x")
    make_small_run(root, "no-archives")
    create_archive(make_small_run(root / "ga", "gamma-run"), "x")
    (root / "link-run").symlink_to(root / "alpha-run")
    found = [p.name for p in runs_under(root)]
    assert found == ["alpha-run", "beta-run", "gamma-run"]
    assert [p.name for p in runs_under(root, "flat")] == ["alpha-run", "beta-run"]
    assert [p.name for p in runs_under(root, "sharded")] == ["gamma-run"]
