"""Creating archives: names, comments, manifest, compression choices, zip-tool compatibility."""

from __future__ import annotations

import json
import os
import re
import subprocess
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runarchive.core import (
    Busy,
    InvalidInput,
    create_archive,
    list_archives,
    open_run,
    run_lock,
    verify_archive,
)
from runarchive.core.manifest import MANIFEST_NAME
from runarchive.core.names import new_archive_name
from tests.support.tree import File, Link, archive_files, build_tree

WEPP_TEXT = b"".join(
    b"%5d %8.3f %8.3f %10.4f\n" % (i, i * 0.37, i / 7, i * 1.5) for i in range(4000)
)


def _names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def test_archive_is_named_after_the_run_and_the_utc_time(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a")})
    before = datetime.now(UTC).replace(microsecond=0)
    result = create_archive(run_dir)
    match = re.fullmatch(r"ambitious-pinecone\.(\d{8}T\d{6}Z)\.zip", result.name)
    assert match, result.name
    stamp = datetime.strptime(match[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)
    assert result.path == run_dir / "archives" / result.name
    assert archive_files(run_dir / "archives") == [result.name]


def test_a_same_second_collision_gets_a_suffix_and_never_overwrites() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = new_archive_name("r1", when, set())
    assert first == "r1.20260102T030405Z.zip"
    assert new_archive_name("r1", when, {first}) == "r1.20260102T030405Z-2.zip"
    assert new_archive_name("r1", when, {first, "r1.20260102T030405Z-2.zip"}).endswith("-3.zip")


def test_two_archives_in_the_same_second_both_survive(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a")})
    results = [create_archive(run_dir, f"n{i}") for i in range(3)]
    assert len({r.name for r in results}) == 3
    listed = {i.name: i.comment for i in list_archives(run_dir)}
    assert listed == {r.name: f"n{i}" for i, r in enumerate(results)}


def test_comment_is_trimmed_and_stored_where_zip_tools_show_it(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a")})
    result = create_archive(run_dir, "  before calibration ✓  ")
    with zipfile.ZipFile(result.path) as zf:
        assert zf.comment.decode() == "before calibration ✓"
        manifest = json.loads(zf.read(MANIFEST_NAME))
    assert manifest["comment"] == "before calibration ✓"
    shown = subprocess.run(["unzip", "-z", str(result.path)], capture_output=True, check=True)
    assert "before calibration ✓".encode() in shown.stdout


@pytest.mark.parametrize("comment", ["two\nlines", "bell\x07", "rtl\u202eoverride"])
def test_bad_comments_are_refused_before_anything_is_written(run_dir: Path, comment: str) -> None:
    build_tree(run_dir, {"a.txt": File(b"a")})
    with pytest.raises(InvalidInput):
        create_archive(run_dir, comment)
    assert not (run_dir / "archives").exists() or not archive_files(run_dir / "archives")


def test_manifest_describes_every_entry_with_checksums(run_dir: Path) -> None:
    build_tree(
        run_dir,
        {
            "wepp/H1.pass.dat": File(WEPP_TEXT, 0o640, 1_700_000_000_111_222_333),
            "ron.nodb": File(b"{}"),
            "link": Link("wepp/H1.pass.dat"),
        },
    )
    (run_dir / "empty").mkdir()
    result = create_archive(run_dir, "m")
    with zipfile.ZipFile(result.path) as zf:
        manifest = json.loads(zf.read(MANIFEST_NAME))
    assert manifest["format"] == "runarchive/1"
    assert manifest["run_id"] == "ambitious-pinecone"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["created"])
    by_path = {e["path"]: e for e in manifest["entries"]}
    assert set(by_path) == {"wepp", "wepp/H1.pass.dat", "ron.nodb", "link", "empty"}
    h1 = by_path["wepp/H1.pass.dat"]
    import hashlib

    assert h1["sha256"] == hashlib.sha256(WEPP_TEXT).hexdigest()
    assert (h1["type"], h1["size"], h1["mode"], h1["mtime_ns"]) == (
        "file", len(WEPP_TEXT), 0o640, 1_700_000_000_111_222_333,
    )  # fmt: skip
    assert by_path["link"]["type"] == "symlink"
    assert by_path["link"]["target"] == "wepp/H1.pass.dat"
    assert by_path["empty"]["type"] == "dir"
    assert result.files == 2 and result.entries == 5


def test_links_leaving_the_run_are_reported_in_result_and_manifest(run_dir: Path) -> None:
    build_tree(run_dir, {"a": File(b"a"), "out": Link("/etc/hostname"), "up": Link("../../x")})
    result = create_archive(run_dir)
    assert sorted(result.external_links) == ["out -> /etc/hostname", "up -> ../../x"]
    with zipfile.ZipFile(result.path) as zf:
        assert sorted(json.loads(zf.read(MANIFEST_NAME))["external_links"]) == sorted(
            result.external_links
        )


def test_compressible_files_are_deflated_and_compressed_formats_stored(run_dir: Path) -> None:
    noise = os.urandom(300_000)
    build_tree(
        run_dir,
        {
            "H1.pass.dat": File(WEPP_TEXT),
            "dem.tif": File(WEPP_TEXT),  # stored by extension even though it would shrink
            "noise.bin": File(noise),  # stored because the probe cannot shrink it
            "big.txt": File(WEPP_TEXT * 40),  # several chunks, deflated pigz-style
        },
    )
    result = create_archive(run_dir)
    with zipfile.ZipFile(result.path) as zf:
        methods = {i.filename: i.compress_type for i in zf.infolist()}
        assert zf.read("big.txt") == WEPP_TEXT * 40
        assert zf.read("noise.bin") == noise
    assert methods["H1.pass.dat"] == zipfile.ZIP_DEFLATED
    assert methods["big.txt"] == zipfile.ZIP_DEFLATED
    assert methods["dem.tif"] == zipfile.ZIP_STORED
    assert methods["noise.bin"] == zipfile.ZIP_STORED


def test_unzip_and_python_zipfile_read_our_archives(run_dir: Path, tmp_path: Path) -> None:
    build_tree(run_dir, {"a/b/c.txt": File(WEPP_TEXT), "ü.txt": File(b"u"), "l": Link("a/b")})
    result = create_archive(run_dir)
    out = subprocess.run(["unzip", "-t", str(result.path)], capture_output=True, text=True)
    assert out.returncode == 0 and "No errors detected" in out.stdout, out.stdout
    dest = tmp_path / "unzipped"
    subprocess.run(["unzip", "-q", str(result.path), "-d", str(dest)], check=True)
    assert (dest / "a/b/c.txt").read_bytes() == WEPP_TEXT
    assert (dest / "ü.txt").read_bytes() == b"u"
    assert os.readlink(dest / "l") == "a/b"
    with zipfile.ZipFile(result.path) as zf:
        assert zf.testzip() is None


def test_7zip_tests_our_archives_as_sound(run_dir: Path) -> None:
    build_tree(run_dir, {"a/big.txt": File(WEPP_TEXT * 40), "ü.txt": File(b"u"), "l": Link("a")})
    result = create_archive(run_dir, "seven")
    out = subprocess.run(["7zz", "t", str(result.path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Everything is Ok" in out.stdout and "Comment = seven" in out.stdout


def test_archives_and_the_work_folder_are_not_archived(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a"), "sub/archives/keep.txt": File(b"k")})
    first = create_archive(run_dir)
    second = create_archive(run_dir)
    names = _names(second.path)
    assert first.name not in "".join(names)
    assert "sub/archives/keep.txt" in names
    assert not any(n.startswith(("archives/", ".runarchive/lock")) for n in names)


def test_special_files_are_skipped_and_reported(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a")})
    os.mkfifo(run_dir / "pipe")
    result = create_archive(run_dir)
    assert result.skipped == ["pipe (special file: fifo, socket or device)"]
    assert "pipe" not in _names(result.path)


def test_a_second_operation_on_a_busy_run_is_refused(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a")})
    with open_run(run_dir) as run, run_lock(run), pytest.raises(Busy, match="busy"):
        create_archive(run_dir)
    assert create_archive(run_dir).name


def test_no_temp_file_is_left_after_success(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(WEPP_TEXT)})
    result = create_archive(run_dir)
    assert archive_files(run_dir / "archives") == [result.name]
    assert verify_archive(run_dir, result.name).ok


@pytest.mark.slow
def test_more_than_65535_entries_use_zip64_and_stay_readable(run_dir: Path) -> None:
    for d in range(70):
        sub = run_dir / f"d{d:02d}"
        sub.mkdir()
        for f in range(940):
            (sub / f"f{f}").write_bytes(b"x")
    result = create_archive(run_dir)
    assert result.files == 65_800
    with zipfile.ZipFile(result.path) as zf:
        assert len(zf.infolist()) == 65_800 + 70 + 1
    out = subprocess.run(["unzip", "-tq", str(result.path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert list_archives(run_dir)[0].files == 65_800
