"""The core's last-chance callbacks: ``before_swap`` (restore) and ``before_publish`` (create).

A caller that raises there (a canceled job) leaves the run exactly as it was: no stage, no
journal, no archive, no temp file. Once the callback returned, the operation finishes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runarchive.core import create_archive, list_archives, recover_run, restore_archive
from runarchive.core.progress import ProgressEvent
from tests.support.journal import leftovers
from tests.support.tree import Dir, File, archive_files, build_tree, snapshot


class Stop(Exception):
    pass


def _stop() -> None:
    raise Stop


def _run(tmp_path: Path) -> Path:
    return build_tree(
        tmp_path / "run-1",
        {
            "a.txt": File(b"first\n"),
            "out": Dir(),
            **{f"out/h{i}.dat": File(b"x" * (i + 1) * 100) for i in range(20)},
        },
    )


def test_a_restore_stopped_before_its_swap_leaves_the_run_exactly_as_it_was(
    tmp_path: Path,
) -> None:
    run = _run(tmp_path)
    name = create_archive(run).name
    (run / "a.txt").write_text("changed\n")
    (run / "out" / "h3.dat").unlink()
    before = snapshot(run)

    with pytest.raises(Stop):
        restore_archive(run, name, before_swap=_stop)

    assert snapshot(run) == before
    assert leftovers(run) == []
    assert recover_run(run).action == "none"


def test_before_swap_comes_after_every_extracted_file_and_before_the_swap_phase(
    tmp_path: Path,
) -> None:
    run = _run(tmp_path)
    archived = snapshot(run)
    name = create_archive(run).name
    (run / "a.txt").write_text("changed\n")
    seen: list[str] = []

    def progress(event: ProgressEvent) -> None:
        seen.append(f"{event.phase}:{event.files_done}")

    restore_archive(run, name, progress=progress, before_swap=lambda: seen.append("before_swap"))

    at = seen.index("before_swap")
    assert seen.count("before_swap") == 1
    assert seen[at - 1] == "extract:21" and seen[at + 1].startswith("swap:")
    assert snapshot(run) == archived


def test_an_archive_stopped_before_it_is_published_leaves_nothing(tmp_path: Path) -> None:
    run = _run(tmp_path)
    before = snapshot(run)

    with pytest.raises(Stop):
        create_archive(run, "stopped", before_publish=_stop)

    assert list_archives(run) == []
    assert archive_files(run / "archives") == []
    assert snapshot(run) == before


def test_an_archive_is_published_once_before_publish_returned(tmp_path: Path) -> None:
    run = _run(tmp_path)
    calls: list[int] = []

    result = create_archive(run, before_publish=lambda: calls.append(len(list_archives(run))))

    assert calls == [0]  # called once, before the archive had its name
    assert [a.name for a in list_archives(run)] == [result.name]
