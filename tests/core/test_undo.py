"""Partial restore and undo, in the core: only the chosen paths change, and undo puts back the
pre-restore tree byte for byte (contents, modes, mtimes, links, empty folders).

Real runs in temp folders, real archives; trees compared with ``snapshot``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runarchive.core import (
    InvalidInput,
    NothingToUndo,
    UnsafeRun,
    create_archive,
    list_archives,
    parse_restore_paths,
    purge_trash,
    recover_run,
    restore_archive,
    undo_info,
    undo_restore,
)
from tests.support.journal import kept_undo, leftovers, undo_record, work_dir
from tests.support.tree import Dir, File, Link, Spec, build_tree, snapshot

ARCHIVED: Spec = {
    "a.txt": File(b"archived a\n"),
    "wepp": Dir(),
    "wepp/output": Dir(0o750),
    "wepp/output/H1.dat": File(b"h1 archived\n" * 30),
    "wepp/output/H2.dat": File(b"h2 archived\n" * 30, mode=0o600),
    "wepp/output/empty": Dir(),
    "wepp/runs": Dir(),
    "wepp/runs/p1.run": File(b"p1 archived\n"),
    "climate": Dir(0o555),
    "climate/st.cli": File(b"climate archived\n", mode=0o444),
    "same.dat": File(b"same in both\n" * 20),
    "latest": Link("wepp/output/H1.dat"),
}


def edit_run(run: Path) -> None:
    """Change the run after the archive: edits, new files, removals, modes, links."""
    (run / "a.txt").write_bytes(b"edited a\n")
    (run / "wepp/output/H1.dat").write_bytes(b"h1 edited\n")
    (run / "wepp/output/H3.dat").write_bytes(b"h3 new\n")
    os.rmdir(run / "wepp/output/empty")
    (run / "wepp/runs/p1.run").unlink()
    (run / "wepp/runs/p2.run").write_bytes(b"p2 new\n")
    (run / "latest").unlink()
    os.symlink("a.txt", run / "latest")
    (run / "new_top").mkdir(mode=0o500)
    os.utime(run / "wepp/output", ns=(1_700_000_000_000_000_000,) * 2)


@pytest.fixture
def run(run_dir: Path) -> tuple[Path, str]:
    build_tree(run_dir, ARCHIVED)
    name = create_archive(run_dir).name
    edit_run(run_dir)
    return run_dir, name


def changed(before: dict[str, object], after: dict[str, object]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def test_a_partial_restore_changes_only_the_chosen_paths(run: tuple[Path, str]) -> None:
    run_dir, name = run
    archived = build_tree(run_dir.parent / "archived", ARCHIVED)
    wanted = snapshot(archived)
    before = snapshot(run_dir)

    result = restore_archive(run_dir, name, paths=["wepp/output/", "latest"])

    after = snapshot(run_dir)
    assert result.paths == ["latest", "wepp/output/"]
    for path, value in after.items():
        if path == "latest" or path == "wepp/output" or path.startswith("wepp/output/"):
            assert value == wanted[path]  # exactly the archive's folder, its empty one too
        else:
            assert value == before[path]  # everything else as it was, wepp/'s mtime included
    assert "wepp/output/H3.dat" not in after  # the archive lacks it: removed with the folder
    assert set(wanted) - set(after) == {"wepp/runs/p1.run"}  # not chosen: still absent


def test_undo_after_a_partial_restore_puts_the_tree_back_byte_for_byte(
    run: tuple[Path, str],
) -> None:
    run_dir, name = run
    before = snapshot(run_dir)
    restore_archive(run_dir, name, paths=["wepp/output/", "a.txt", "latest"])
    assert snapshot(run_dir) != before

    result = undo_restore(run_dir)

    assert snapshot(run_dir) == before
    assert (result.restored, result.partial) == (name, True)
    assert leftovers(run_dir) == [] and kept_undo(run_dir) == []
    with pytest.raises(NothingToUndo):
        undo_restore(run_dir)  # nothing is left to undo


def test_undo_after_a_full_restore_puts_back_read_only_folders_and_new_ones(
    run: tuple[Path, str],
) -> None:
    run_dir, name = run
    before = snapshot(run_dir)
    restore_archive(run_dir, name, defer_delete=True)
    assert "new_top" not in snapshot(run_dir)

    undo_restore(run_dir, defer_delete=True)
    purge_trash(run_dir)

    assert snapshot(run_dir) == before  # new_top comes back with its 0o500 mode
    assert leftovers(run_dir) == []


def test_a_path_under_a_folder_the_run_lacks_brings_the_folder_with_only_that_path(
    run_dir: Path,
) -> None:
    build_tree(run_dir, ARCHIVED)
    name = create_archive(run_dir).name
    shutil.rmtree(run_dir / "wepp")
    before = snapshot(run_dir)

    restore_archive(run_dir, name, paths=["wepp/runs/p1.run"])

    after = snapshot(run_dir)
    assert changed(before, after) == {"wepp", "wepp/runs", "wepp/runs/p1.run"}
    assert after["wepp"][0] == "dir" and "wepp/output" not in after
    undo_restore(run_dir)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "paths",
    [
        ["../etc/passwd"],
        ["/etc/passwd"],
        ["a/../../x"],
        ["a\x00b"],
        ["archives/"],
        ["archives/x.zip"],
        [".runarchive/journal.json"],
        [".runarchive-stage-0123456789ab"],
        ["C:/x"],
        ["a\\b"],
        [""],
        ["./a.txt"],
        [],
        "a.txt",
        [3],
    ],
)
def test_hostile_paths_are_refused_before_any_work(run: tuple[Path, str], paths: object) -> None:
    run_dir, name = run
    before = snapshot(run_dir)
    with pytest.raises(InvalidInput):
        restore_archive(run_dir, name, paths=paths)  # type: ignore[arg-type]
    assert snapshot(run_dir) == before
    assert leftovers(run_dir) == [] and kept_undo(run_dir) == []


def test_a_path_missing_from_the_archive_is_refused_naming_it(run: tuple[Path, str]) -> None:
    run_dir, name = run
    before = snapshot(run_dir)
    with pytest.raises(InvalidInput, match=r"'wepp/output/H3\.dat' is not in archive"):
        restore_archive(run_dir, name, paths=["a.txt", "wepp/output/H3.dat"])
    with pytest.raises(InvalidInput, match="not a folder"):
        restore_archive(run_dir, name, paths=["a.txt/"])
    assert snapshot(run_dir) == before and kept_undo(run_dir) == []


def test_a_path_beneath_a_run_file_is_refused(run_dir: Path) -> None:
    build_tree(run_dir, ARCHIVED)
    name = create_archive(run_dir).name
    shutil.rmtree(run_dir / "wepp")
    (run_dir / "wepp").write_bytes(b"a file now")
    with pytest.raises(InvalidInput, match="restore 'wepp' itself"):
        restore_archive(run_dir, name, paths=["wepp/output/"])
    restore_archive(run_dir, name, paths=["wepp"])  # the file is replaced by the folder
    assert (run_dir / "wepp/output/H1.dat").read_bytes() == b"h1 archived\n" * 30


def test_overlapping_paths_collapse_once_at_the_edge() -> None:
    parsed = parse_restore_paths(["wepp/", "wepp/output/H1.dat", "a-b", "a/b", "a", "a//"[:-1]])
    assert parsed is not None
    assert parsed.paths == ("a", "a-b", "wepp")
    assert parsed.as_list() == ["a/", "a-b", "wepp/"]


def test_a_new_archive_ends_the_undo(run: tuple[Path, str]) -> None:
    run_dir, name = run
    restore_archive(run_dir, name, paths=["a.txt"])
    assert undo_info(run_dir).available
    create_archive(run_dir)
    assert not undo_info(run_dir).available
    purge_trash(run_dir)
    assert leftovers(run_dir) == [] and kept_undo(run_dir) == []
    with pytest.raises(NothingToUndo):
        undo_restore(run_dir)


def test_a_second_restore_replaces_the_undo_with_its_own(run: tuple[Path, str]) -> None:
    run_dir, name = run
    restore_archive(run_dir, name, paths=["a.txt"])
    middle = snapshot(run_dir)
    first = undo_record(run_dir)
    restore_archive(run_dir, name)
    second = undo_record(run_dir)
    assert first is not None and second is not None and first["id"] != second["id"]
    assert len([n for n in os.listdir(work_dir(run_dir)) if n.startswith("undo-")]) == 1
    undo_restore(run_dir)
    assert snapshot(run_dir) == middle  # the last restore's replaced tree


def test_the_undo_expires_and_the_list_drops_it(
    run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, name = run
    monkeypatch.setenv("RUNARCHIVE_UNDO_TTL", "3600")
    restore_archive(run_dir, name, paths=["a.txt"])
    info = undo_info(run_dir)
    assert info.available and info.at is not None and info.expires is not None
    assert (info.expires - info.at).total_seconds() == pytest.approx(3600)
    assert info.as_json()["restored"] == name and info.disk > 0
    record = undo_record(run_dir)
    assert record is not None
    record["expires_ns"] = record["at_ns"]  # as if the hour had passed
    (work_dir(run_dir) / "undo.json").write_text(json.dumps(record))

    assert undo_info(run_dir).as_json() == {
        "available": False, "restored": None, "at": None, "expires": None, "bytes": 0,
    }  # fmt: skip
    assert kept_undo(run_dir) == []
    purge_trash(run_dir)
    assert leftovers(run_dir) == []


def test_undo_off_keeps_nothing(run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir, name = run
    monkeypatch.setenv("RUNARCHIVE_UNDO_TTL", "0")
    restore_archive(run_dir, name)
    assert not undo_info(run_dir).available
    assert leftovers(run_dir) == [] and kept_undo(run_dir) == []


def test_the_disk_held_leaves_out_files_shared_with_the_run(run_dir: Path) -> None:
    big = os.urandom(1 << 20)
    build_tree(run_dir, {"same.bin": File(big), "other.bin": File(b"x")})
    name = create_archive(run_dir).name
    (run_dir / "other.bin").write_bytes(os.urandom(1 << 20))
    restore_archive(run_dir, name)  # same.bin is unchanged: hard-linked, not extracted
    held = undo_info(run_dir).disk
    assert (1 << 20) <= held < (1 << 20) + (256 << 10)  # other.bin's old bytes, not same.bin's


HOSTILE_RECORDS = [
    {"id": "../../etc", "archive": "x.zip"},
    {"old": ["../outside"]},
    {"old": ["archives"]},
    {"old": ["a/../b"], "partial": True},
    {"old": ["wepp/output"], "partial": False},
    {"modes": {"a.txt": 0o4755}},
    {"modes": {"not-held": 0o755}},
    {"extra": 1},
    {"bytes": -1},
    {"expires_ns": 0},
    {"partial": "yes"},
]


@pytest.mark.parametrize("change", HOSTILE_RECORDS)
def test_a_hostile_undo_record_is_never_acted_on(
    run: tuple[Path, str], change: dict[str, object]
) -> None:
    run_dir, name = run
    restore_archive(run_dir, name, paths=["a.txt"])
    after_restore = snapshot(run_dir)
    record = undo_record(run_dir)
    assert record is not None
    (work_dir(run_dir) / "undo.json").write_text(json.dumps({**record, **change}))

    assert not undo_info(run_dir).available
    with pytest.raises(NothingToUndo):
        undo_restore(run_dir)
    assert snapshot(run_dir) == after_restore
    recover_run(run_dir)
    assert leftovers(run_dir) == [] and kept_undo(run_dir) == []


def test_a_kept_tree_swapped_for_a_link_is_refused(run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, name = run
    restore_archive(run_dir, name, paths=["a.txt"])
    record = undo_record(run_dir)
    assert record is not None
    tree = work_dir(run_dir) / f"undo-{record['id']}"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(b"planted")
    shutil.rmtree(tree)
    os.symlink(outside, tree)
    after_restore = snapshot(run_dir)
    with pytest.raises(UnsafeRun, match="not a folder runarchive made"):
        undo_restore(run_dir)  # refused as any state folder that is a link: nothing changed
    assert snapshot(run_dir) == after_restore
    assert (outside / "a.txt").read_bytes() == b"planted"  # never followed, never deleted
    assert not undo_info(run_dir).available
    tree.unlink()
    with pytest.raises(NothingToUndo):
        undo_restore(run_dir)


# --- the property: random subsets ------------------------------------------------------------

CHOICES = sorted(ARCHIVED)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(CHOICES), min_size=1, max_size=5), st.booleans())
def test_partial_restore_of_any_subset_changes_only_it_and_undo_reverts_it(
    tmp_path: Path, chosen: list[str], full_first: bool
) -> None:
    base = tmp_path / "prop"
    if base.exists():
        shutil.rmtree(base)
    run_dir = base / "prop-run"
    build_tree(run_dir, ARCHIVED)
    wanted = snapshot(run_dir)
    name = create_archive(run_dir).name
    for info in list_archives(run_dir):
        assert info.name == name
    edit_run(run_dir)
    if full_first:
        restore_archive(run_dir, name)  # an undo to replace, and a run equal to the archive
        edit_run_again(run_dir)
    before = snapshot(run_dir)
    roots = set(parse_restore_paths(chosen).paths)  # type: ignore[union-attr]
    if "climate/st.cli" in roots:  # its folder is read-only in the run: refused, untouched
        with pytest.raises(InvalidInput, match="read-only"):
            restore_archive(run_dir, name, paths=chosen)
        assert snapshot(run_dir) == before
        return

    restore_archive(run_dir, name, paths=chosen)

    after = snapshot(run_dir)
    for path in before.keys() | after.keys():
        inside = any(path == r or path.startswith(r + "/") for r in roots)
        assert after.get(path) == (wanted.get(path) if inside else before.get(path)), path
    undo_restore(run_dir)
    assert snapshot(run_dir) == before
    assert leftovers(run_dir) == [] and kept_undo(run_dir) == []


def edit_run_again(run: Path) -> None:
    """Different edits from ``edit_run``, made on a run equal to the archive."""
    (run / "same.dat").write_bytes(b"changed\n")
    os.chmod(run / "climate", 0o755)
    (run / "climate/extra").write_bytes(b"extra\n")
    os.chmod(run / "climate", 0o555)
    (run / "wepp/runs/p1.run").unlink()


HOSTILE_JOURNALS = [
    {"partial": True, "old": ["../outside"], "new": []},
    {"partial": True, "old": ["wepp", "wepp/output"], "new": []},
    {"partial": True, "old": [], "new": ["archives/x"]},
    {"partial": True, "old": ["wepp/output"], "new": [], "times": {"climate": 1}},
    {"partial": True, "old": ["wepp/output"], "new": [], "old_modes": {"wepp/output": 0o4755}},
    {"partial": False, "old": ["wepp/output"], "new": []},
    {"kind": "delete", "old": [], "new": []},
    {"partial": "yes", "old": [], "new": []},
]


@pytest.mark.parametrize("change", HOSTILE_JOURNALS)
def test_a_hostile_partial_journal_is_refused(
    run: tuple[Path, str], change: dict[str, object]
) -> None:
    from runarchive.core import UnsafeRun as Refused
    from tests.support.journal import write_journal

    run_dir, name = run
    before = snapshot(run_dir)
    write_journal(run_dir, {"id": "0123456789ab", "archive": name, "state": "swapping",
                            "modes": {}, **change})  # fmt: skip
    with pytest.raises(Refused, match="not one runarchive wrote"):
        recover_run(run_dir)
    assert snapshot(run_dir) == before


def test_a_bad_undo_ttl_refuses_the_restore_before_any_work(
    run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, name = run
    before = snapshot(run_dir)
    monkeypatch.setenv("RUNARCHIVE_UNDO_TTL", "a week")
    with pytest.raises(InvalidInput, match="RUNARCHIVE_UNDO_TTL"):
        restore_archive(run_dir, name)
    assert snapshot(run_dir) == before and leftovers(run_dir) == []
