"""Where a restore creates its files: in their stage folder, or a scratch folder when slow.

On ext4 without a journal a block group full of inodes freed in the last minutes makes every
create in it scan them (0.3-1 ms a file instead of ~10 us); a stage folder where creates are
slow then gets its files from a per-process scratch folder, itself left for a new one (ext4
places it elsewhere) when slow. The rules are ``restore._Local``'s and ``_CreateTimes``'.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runarchive.core import create_archive, fork_archive, restore_archive
from runarchive.core import restore as restore_module
from runarchive.core.progress import Phase, ProgressEvent
from runarchive.core.restore import (
    MAX_NEW_FOLDERS,
    SLOW_CREATE_NS,
    _CreateTimes,
    _interleaved,
    _Local,
    _make_placed,
)
from runarchive.core.rundir import Folder
from tests.support.journal import leftovers
from tests.support.tree import Dir, File, Spec, build_tree, snapshot

FAST, SLOW = SLOW_CREATE_NS // 10, SLOW_CREATE_NS * 5


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Folder]:
    with Folder(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), "scratch") as folder:
        yield folder


def test_fast_creates_are_never_slow() -> None:
    times = _CreateTimes()
    for _ in range(1000):
        times.add(FAST)
        assert not times.slow()


def test_slow_creates_from_the_start_are_slow_after_eight() -> None:
    times = _CreateTimes()
    for _ in range(7):
        times.add(SLOW)
        assert not times.slow()
    times.add(SLOW)
    assert times.slow()


def test_a_folder_that_turns_slow_is_told_within_a_window() -> None:
    times = _CreateTimes()
    for _ in range(500):
        times.add(FAST)
    slow = 0
    while not times.slow() and slow < 100:
        times.add(SLOW)
        slow += 1
    assert slow < 64  # the fast past is forgotten: the window is 32-64 creates


def test_a_new_scratch_folder_is_another_folder_and_the_old_one_stays(
    scratch: Folder, tmp_path: Path
) -> None:
    local = _Local()
    first = os.fstat(local.new_folder(scratch).fd).st_ino
    for _ in range(8):
        local.times.add(SLOW)
    assert local.wants_new_folder()
    second = local.new_folder(scratch)

    assert os.fstat(second.fd).st_ino != first
    assert len(os.listdir(tmp_path)) == 2  # the slow one keeps ext4 away from its group
    assert not local.wants_new_folder()  # counted afresh
    local.close()


def test_at_most_max_new_folders_are_made(scratch: Folder, tmp_path: Path) -> None:
    local = _Local()
    local.new_folder(scratch)
    while True:
        for _ in range(8):
            local.times.add(SLOW)
        if not local.wants_new_folder():
            break
        local.new_folder(scratch)
    local.close()

    assert len(os.listdir(tmp_path)) == 1 + MAX_NEW_FOLDERS


def test_a_top_level_stage_folder_is_made_under_another_name_then_renamed(
    scratch: Folder, tmp_path: Path
) -> None:
    (tmp_path / "wepp").mkdir()
    _make_placed(scratch, "climate")

    assert sorted(os.listdir(tmp_path)) == ["climate", "wepp"]
    assert (tmp_path / "climate").is_dir() and not (tmp_path / "climate").is_symlink()


@pytest.mark.parametrize(("count", "workers"), [(0, 2), (1, 2), (7, 2), (10, 3), (5, 1)])
def test_batches_are_interleaved_from_one_part_of_the_archive_per_worker(
    count: int, workers: int
) -> None:
    batches: list[list[Any]] = [[k] for k in range(count)]

    order = [b[0] for b in _interleaved(batches, workers)]

    assert sorted(order) == list(range(count))
    if workers == 2 and count == 7:
        assert order == [0, 4, 1, 5, 2, 6, 3]
    if workers == 1:
        assert order == list(range(count))


def many(flavour: str) -> Spec:
    spec: Spec = {"wepp": Dir()}
    spec |= {f"wepp/H{i:04}.dat": File(f"{flavour} {i}\n".encode() * 30) for i in range(600)}
    return spec


def emptied_run_with_archive(run_dir: Path) -> tuple[str, dict[str, tuple[object, ...]]]:
    build_tree(run_dir, many("new"))
    new = snapshot(run_dir)
    name = create_archive(run_dir).name
    for path in sorted(run_dir.rglob("*"), reverse=True):
        if path.relative_to(run_dir).parts[0] != "archives":
            path.rmdir() if path.is_dir() else path.unlink()
    return name, new


def scratch_folders_at_the_end(run_dir: Path, seen: list[int]) -> Callable[[ProgressEvent], None]:
    def progress(event: ProgressEvent) -> None:
        if event.phase == Phase.EXTRACT and event.files_done == event.files_total:
            (scratch,) = run_dir.glob(".runarchive-stage-*.scratch")
            seen.append(len(os.listdir(scratch)))

    return progress


def test_files_are_created_in_their_stage_folder_while_creates_are_fast(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, new = emptied_run_with_archive(run_dir)
    monkeypatch.setattr(restore_module, "SLOW_CREATE_NS", 1 << 62)  # forked workers inherit it
    seen: list[int] = []

    restore_archive(run_dir, name, progress=scratch_folders_at_the_end(run_dir, seen))

    assert snapshot(run_dir) == new
    assert seen == [0]  # no scratch folder was needed


def test_a_restore_whose_every_create_is_slow_goes_through_scratch_folders_and_is_exact(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, new = emptied_run_with_archive(run_dir)
    monkeypatch.setattr(restore_module, "SLOW_CREATE_NS", -1)
    seen: list[int] = []

    restore_archive(run_dir, name, progress=scratch_folders_at_the_end(run_dir, seen))

    assert snapshot(run_dir) == new
    assert leftovers(run_dir) == []
    workers = min(4, len(os.sched_getaffinity(0)))
    assert workers < seen[0] <= workers * (1 + MAX_NEW_FOLDERS)


def test_no_folder_a_restore_or_fork_makes_keeps_the_spread_flag(
    run_dir: Path, tmp_path: Path
) -> None:
    name, _ = emptied_run_with_archive(run_dir)
    restore_archive(run_dir, name)
    fork_archive(run_dir, name, tmp_path / "runs", "forked-run")
    folders = [run_dir, *(p for p in run_dir.rglob("*") if p.is_dir() and not p.is_symlink())]
    forked = tmp_path / "runs" / "forked-run"
    folders += [forked, *(p for p in forked.rglob("*") if p.is_dir() and not p.is_symlink())]
    out = subprocess.run(["lsattr", "-d", *map(str, folders)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"lsattr cannot read these folders' flags: {out.stderr.strip()}")

    flagged = [line for line in out.stdout.splitlines() if "T" in line.split()[0]]

    assert flagged == []
