"""Listing, verifying and deleting archives."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from runarchive.core import (
    InvalidInput,
    NotFound,
    create_archive,
    delete_archive,
    list_archives,
    restore_archive,
    verify_archive,
)
from tests.support.tree import File, build_tree

TEXT = b"".join(b"%6d %9.4f\n" % (i, i / 3) for i in range(20_000))


@pytest.fixture
def populated(run_dir: Path) -> Path:
    build_tree(run_dir, {"a.txt": File(TEXT), "b/c.dat": File(b"c" * 10), "d.nodb": File(b"{}")})
    return run_dir


def test_list_shows_name_comment_size_created_and_counts_newest_first(populated: Path) -> None:
    first = create_archive(populated, "first")
    (populated / "e.txt").write_text("e")
    second = create_archive(populated, "second")
    infos = list_archives(populated)
    assert [i.name for i in infos] == [second.name, first.name]
    newest = infos[0]
    assert newest.comment == "second"
    assert newest.size == second.path.stat().st_size
    assert (newest.files, newest.entries) == (4, 5)
    assert (infos[1].files, infos[1].entries) == (3, 4)
    assert newest.readable and newest.error is None
    assert newest.created.tzinfo is not None


def test_list_ignores_foreign_files_and_flags_unreadable_archives(populated: Path) -> None:
    good = create_archive(populated, "ok")
    folder = populated / "archives"
    (folder / "notes.txt").write_text("not an archive")
    (folder / "../evil.zip").write_bytes(b"PK")
    broken = folder / "ambitious-pinecone.20200101T000000Z.zip"
    broken.write_bytes(good.path.read_bytes()[:-30])
    infos = {i.name: i for i in list_archives(populated)}
    assert set(infos) == {good.name, broken.name}
    assert infos[broken.name].readable is False
    assert infos[broken.name].error


def test_list_of_a_run_without_archives_is_empty(run_dir: Path) -> None:
    assert list_archives(run_dir) == []


def test_list_notices_an_archive_replaced_under_the_same_name(populated: Path) -> None:
    result = create_archive(populated, "one")
    assert list_archives(populated)[0].comment == "one"
    with zipfile.ZipFile(result.path, "a") as zf:
        zf.comment = b"changed"
    assert list_archives(populated)[0].comment == "changed"


def test_verify_finds_a_flipped_byte(populated: Path) -> None:
    result = create_archive(populated)
    assert verify_archive(populated, result.name).ok
    data = bytearray(result.path.read_bytes())
    with zipfile.ZipFile(result.path) as zf:
        info = zf.getinfo("b/c.dat")
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 3
    data[offset] ^= 0xFF
    result.path.write_bytes(bytes(data))
    report = verify_archive(populated, result.name)
    assert not report.ok
    assert any("b/c.dat" in p for p in report.problems)


def test_delete_removes_exactly_the_named_archive(populated: Path) -> None:
    keep = create_archive(populated, "keep")
    drop = create_archive(populated, "drop")
    delete_archive(populated, drop.name)
    assert [i.name for i in list_archives(populated)] == [keep.name]
    with pytest.raises(NotFound):
        delete_archive(populated, drop.name)


@pytest.mark.parametrize(
    "name",
    ["../a.txt", "/etc/passwd", "ambitious-pinecone.20200101T000000Z.tar", ".x.zip", "-x.zip",
     "x y.zip", "x.zip\n", "", "a/b.zip", "ambitious-pinecone.20200101T000000Z.zip/../../a.txt"],
)  # fmt: skip
def test_delete_refuses_names_outside_the_pattern(populated: Path, name: str) -> None:
    create_archive(populated)
    before = sorted(os.listdir(populated))
    with pytest.raises(InvalidInput):
        delete_archive(populated, name)
    assert sorted(os.listdir(populated)) == before
    assert (populated / "a.txt").read_bytes() == TEXT


def test_delete_refuses_a_symlink_posing_as_an_archive(populated: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.zip"
    victim.write_bytes(b"precious")
    (populated / "archives").mkdir()
    link = populated / "archives" / "ambitious-pinecone.20200101T000000Z.zip"
    link.symlink_to(victim)
    with pytest.raises(NotFound):
        delete_archive(populated, link.name)
    assert victim.read_bytes() == b"precious"


def test_operations_on_a_missing_run_say_so(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="Run directory not found"):
        list_archives(tmp_path / "nope")


def test_a_zip_from_elsewhere_with_a_safe_name_is_listed_verified_restored_and_deleted(
    populated: Path,
) -> None:
    import zipfile

    (populated / "archives").mkdir(exist_ok=True)
    foreign = populated / "archives" / "my-backup.zip"
    with zipfile.ZipFile(foreign, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("restored.txt", b"from another tool\n")
    os.utime(foreign, (1_700_000_000, 1_700_000_000))
    ours = create_archive(populated).name

    rows = list_archives(populated)
    assert [r.name for r in rows] == [ours, "my-backup.zip"]  # newest first, by mtime here
    assert rows[1].readable and rows[1].files == 1
    assert rows[1].created.timestamp() == 1_700_000_000
    assert verify_archive(populated, "my-backup.zip").ok
    restore_archive(populated, "my-backup.zip")
    assert (populated / "restored.txt").read_bytes() == b"from another tool\n"
    assert not (populated / "a.txt").exists()
    delete_archive(populated, "my-backup.zip")
    assert [r.name for r in list_archives(populated)] == [ours]
