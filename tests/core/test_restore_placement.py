"""Where a restore creates its files: per-process scratch folders, left when creates are slow.

On ext4 without a journal a block group full of inodes freed in the last minutes makes every
create in it scan them (0.3-1 ms a file instead of ~10 us); the extractor then moves on to a
new scratch folder, which ext4 places elsewhere. The rule is ``restore._Local``'s.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runarchive.core import create_archive, restore_archive
from runarchive.core import restore as restore_module
from runarchive.core.progress import Phase, ProgressEvent
from runarchive.core.restore import MAX_NEW_FOLDERS, SLOW_CREATE_NS, _Local
from runarchive.core.rundir import Folder
from tests.support.journal import leftovers
from tests.support.tree import Dir, File, Spec, build_tree, snapshot

FAST, SLOW = SLOW_CREATE_NS // 10, SLOW_CREATE_NS * 5


@pytest.fixture
def scratch(tmp_path: Path) -> Folder:
    return Folder(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), "scratch")


def test_fast_creates_keep_the_folder(scratch: Folder) -> None:
    local = _Local()
    local.new_folder(scratch)
    for _ in range(1000):
        local.created(FAST)
        assert not local.wants_new_folder()


def test_slow_creates_from_the_start_ask_for_a_new_folder_after_eight(scratch: Folder) -> None:
    local = _Local()
    local.new_folder(scratch)
    for _ in range(7):
        local.created(SLOW)
        assert not local.wants_new_folder()
    local.created(SLOW)
    assert local.wants_new_folder()


def test_a_folder_that_turns_slow_is_left_within_a_window(scratch: Folder) -> None:
    local = _Local()
    local.new_folder(scratch)
    for _ in range(500):
        local.created(FAST)
    slow = 0
    while not local.wants_new_folder() and slow < 100:
        local.created(SLOW)
        slow += 1
    assert slow < 64  # the fast past is forgotten: the window is 32-64 creates


def test_a_new_folder_is_another_folder_and_the_old_one_stays(
    scratch: Folder, tmp_path: Path
) -> None:
    local = _Local()
    first = os.fstat(local.new_folder(scratch).fd).st_ino
    for _ in range(8):
        local.created(SLOW)
    second = local.new_folder(scratch)

    assert os.fstat(second.fd).st_ino != first
    assert len(os.listdir(tmp_path)) == 2  # the slow one keeps ext4 away from its group
    assert not local.wants_new_folder()  # counted afresh


def test_at_most_max_new_folders_are_made(scratch: Folder, tmp_path: Path) -> None:
    local = _Local()
    local.new_folder(scratch)
    while True:
        for _ in range(8):
            local.created(SLOW)
        if not local.wants_new_folder():
            break
        local.new_folder(scratch)

    assert len(os.listdir(tmp_path)) == 1 + MAX_NEW_FOLDERS


def many(flavour: str) -> Spec:
    spec: Spec = {"wepp": Dir()}
    spec |= {f"wepp/H{i:04}.dat": File(f"{flavour} {i}\n".encode() * 30) for i in range(600)}
    return spec


def test_a_restore_whose_every_create_is_slow_switches_folders_and_is_still_exact(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_tree(run_dir, many("new"))
    new = snapshot(run_dir)
    name = create_archive(run_dir).name
    for path in sorted(run_dir.rglob("*"), reverse=True):
        if path.relative_to(run_dir).parts[0] != "archives":
            path.rmdir() if path.is_dir() else path.unlink()
    monkeypatch.setattr(restore_module, "SLOW_CREATE_NS", -1)  # forked workers inherit it
    folders: list[int] = []

    def progress(event: ProgressEvent) -> None:
        if event.phase == Phase.EXTRACT and event.files_done == event.files_total:
            (scratch,) = run_dir.glob(".runarchive-stage-*.scratch")
            folders.append(len(os.listdir(scratch)))

    restore_archive(run_dir, name, progress=progress)

    assert snapshot(run_dir) == new
    assert leftovers(run_dir) == []
    workers = min(4, len(os.sched_getaffinity(0)))
    assert workers < folders[0] <= workers * (1 + MAX_NEW_FOLDERS)
