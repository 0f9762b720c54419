"""Modification times both ways, under many time zones, against the real zip tools.

The DOS date and time fields hold the writer's local wall clock in 2-second steps; the UT extra
(0x5455) holds UTC seconds; the NTFS extra (0x000a) holds UTC in 100 ns ticks. Each test runs the
writing tool and the reading tool as separate processes, each with its own ``TZ``, and compares
what comes out with the source file's mtime within what the fields it went through keep: the
second for UT, two seconds for DOS alone, 100 ns for NTFS, every nanosecond for our manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from runarchive.core import create_archive
from runarchive.core.zipformat import TimeSource, read_directory
from tests.support.tree import File, build_tree, snapshot
from tests.support.zipcraft import ARCHIVE_NAME, build_zip, file, place

LA, KOLKATA = "America/Los_Angeles", "Asia/Kolkata"
CHATHAM, LORD_HOWE = "Pacific/Chatham", "Australia/Lord_Howe"  # +12:45/+13:45, +10:30/+11
ZONES = ["UTC", LA, KOLKATA, CHATHAM, LORD_HOWE]
S = 1_000_000_000

# Northern winter and summer (southern summer and winter), an odd second, a fraction of a second
# and every nanosecond digit.
SOURCE = {
    "odd-second.txt": 1_700_000_001 * S,  # 2023-11-14 14:13:21 in Los Angeles (PST)
    "sub-second.txt": 1_700_000_002_750_000_000,
    "deep/nanoseconds.dat": 1_689_000_003_987_654_321,  # 2023-07-10 07:40:03 (PDT)
}
# 01:30:00.25 on 2024-11-03 in Los Angeles, twice: first PDT, then an hour later PST.
FALL_BACK = {
    "first-0130.txt": 1_730_622_600 * S + 250_000_000,
    "second-0130.txt": 1_730_626_200 * S + 250_000_000,
}

# What WEPPcloud's Python does: zipfile writes DOS fields from time.localtime, and extracting
# sets no mtime, so the caller applies ZipInfo.date_time as local time.
WEPPCLOUD_ZIP = """
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as zf:
    for name in sys.argv[2:]:
        for folder, _, names in os.walk(name) if os.path.isdir(name) else [("", [], [name])]:
            for leaf in names:
                zf.write(os.path.join(folder, leaf))
"""
WEPPCLOUD_UNZIP = """
import os, sys, time, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    zf.extractall(sys.argv[2])
    for info in zf.infolist():
        when = time.mktime(info.date_time + (0, 0, -1))
        os.utime(os.path.join(sys.argv[2], info.filename), (when, when))
"""


def needs(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{missing} not installed (make sysdeps)")


def in_zone(tz: str, *cmd: str | Path, cwd: Path | None = None) -> str:
    """Run ``cmd`` with ``TZ=tz`` and return its stdout; fail the test on a non-zero exit."""
    env = {**os.environ, "TZ": tz}
    done = subprocess.run(
        [str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def runarchive(tz: str, *args: str | Path) -> str:
    return in_zone(tz, sys.executable, "-c", "from runarchive.cli import main; main()", *args)


def make_tree(root: Path, times: dict[str, int]) -> Path:
    return build_tree(root, {rel: File(rel.encode(), 0o644, ns) for rel, ns in times.items()})


def mtimes(root: Path, times: dict[str, int]) -> dict[str, int]:
    return {rel: os.stat(root / rel).st_mtime_ns for rel in times}


def to_the_second(times: dict[str, int]) -> dict[str, int]:
    return {rel: ns // S * S for rel, ns in times.items()}


def offsets(got: dict[str, int], times: dict[str, int]) -> dict[str, float]:
    """Return each restored mtime minus its source, in seconds."""
    return {rel: (got[rel] - ns) / S for rel, ns in times.items()}


def within_a_dos_step(got: dict[str, int], times: dict[str, int]) -> bool:
    # zip and 7-Zip round the DOS seconds up to even, zipfile and bsdtar down.
    return all(abs(off) <= 2 for off in offsets(got, times).values())


def wall_clock(ns: int, tz: str) -> tuple[int, int, int, int, int, int]:
    """Return the DOS fields' view of ``ns`` in ``tz``: local time, seconds down to even."""
    t = datetime.fromtimestamp(ns // S, ZoneInfo(tz))
    return (t.year, t.month, t.day, t.hour, t.minute, t.second // 2 * 2)


def utc_offset(ns: int, tz: str) -> float:
    offset = datetime.fromtimestamp(ns // S, ZoneInfo(tz)).utcoffset()
    assert offset is not None
    return offset.total_seconds()


# --- Archives made elsewhere, restored by us ----------------------------------------------------

WRITERS: dict[str, list[str]] = {
    "zip": ["zip", "-q", "-r", "-y"],
    "zip -X": ["zip", "-q", "-r", "-y", "-X"],
    "7zz": ["7zz", "a", "-tzip", "-bso0", "-bsp0"],
    "bsdtar": ["bsdtar", "--format", "zip", "-cf"],
    "zipfile": [sys.executable, "-c", WEPPCLOUD_ZIP],
}


def foreign_archive(tmp_path: Path, run: Path, writer: str, tz: str, times: dict[str, int]) -> str:
    """Make ``times`` as files elsewhere and archive them with ``writer`` under ``TZ=tz``."""
    src = make_tree(tmp_path / "elsewhere", times)
    (run / "archives").mkdir(exist_ok=True)
    out = run / "archives" / ARCHIVE_NAME
    top = sorted({rel.split("/")[0] for rel in times})
    in_zone(tz, *WRITERS[writer], out, *top, cwd=src)
    return ARCHIVE_NAME


@pytest.mark.slow
@needs("zip")
@pytest.mark.parametrize(
    ("write_tz", "read_tz"), [(LA, KOLKATA), (KOLKATA, LA), (CHATHAM, "UTC"), ("UTC", LORD_HOWE)]
)
def test_an_info_zip_archive_restores_every_mtime_to_the_second_from_its_ut_field(
    tmp_path: Path, run_dir: Path, write_tz: str, read_tz: str
) -> None:
    name = foreign_archive(tmp_path, run_dir, "zip", write_tz, SOURCE)

    runarchive(read_tz, "restore", run_dir, name)

    assert mtimes(run_dir, SOURCE) == to_the_second(SOURCE)


@pytest.mark.slow
@needs("7zz")
@pytest.mark.parametrize(("write_tz", "read_tz"), [(LA, KOLKATA), (CHATHAM, LA)])
def test_a_7zip_archive_restores_every_mtime_to_100_ns_from_its_ntfs_field(
    tmp_path: Path, run_dir: Path, write_tz: str, read_tz: str
) -> None:
    name = foreign_archive(tmp_path, run_dir, "7zz", write_tz, SOURCE)

    runarchive(read_tz, "restore", run_dir, name)

    assert mtimes(run_dir, SOURCE) == {rel: ns // 100 * 100 for rel, ns in SOURCE.items()}


@pytest.mark.slow
@needs("bsdtar")
@pytest.mark.parametrize(("write_tz", "read_tz"), [(LA, LORD_HOWE), (LORD_HOWE, KOLKATA)])
def test_a_bsdtar_archive_restores_every_mtime_to_the_second_from_its_ut_field(
    tmp_path: Path, run_dir: Path, write_tz: str, read_tz: str
) -> None:
    name = foreign_archive(tmp_path, run_dir, "bsdtar", write_tz, SOURCE)

    runarchive(read_tz, "restore", run_dir, name)

    assert mtimes(run_dir, SOURCE) == to_the_second(SOURCE)


@pytest.mark.slow
@needs("zip")
@pytest.mark.parametrize("tz", ZONES)
def test_a_zip_without_extra_fields_reads_as_the_local_time_of_the_host(
    tmp_path: Path, run_dir: Path, tz: str
) -> None:
    name = foreign_archive(tmp_path, run_dir, "zip -X", tz, SOURCE)

    runarchive(tz, "restore", run_dir, name)

    got = mtimes(run_dir, SOURCE)
    assert within_a_dos_step(got, SOURCE), offsets(got, SOURCE)


@pytest.mark.slow
@pytest.mark.parametrize("tz", ZONES)
def test_a_weppcloud_zipfile_archive_reads_as_the_local_time_of_the_host(
    tmp_path: Path, run_dir: Path, tz: str
) -> None:
    name = foreign_archive(tmp_path, run_dir, "zipfile", tz, SOURCE)

    runarchive(tz, "restore", run_dir, name)

    got = mtimes(run_dir, SOURCE)
    assert within_a_dos_step(got, SOURCE), offsets(got, SOURCE)


@pytest.mark.slow
@needs("zip")
def test_dos_fields_read_in_another_zone_move_by_the_difference_of_the_zones(
    tmp_path: Path, run_dir: Path
) -> None:
    name = foreign_archive(tmp_path, run_dir, "zip -X", LA, SOURCE)

    runarchive(KOLKATA, "restore", run_dir, name)

    got = mtimes(run_dir, SOURCE)
    for rel, ns in SOURCE.items():
        shift = utc_offset(ns, LA) - utc_offset(ns, KOLKATA)  # -13.5 h in winter, -12.5 h in summer
        assert abs((got[rel] - ns) / S - shift) <= 2, (rel, (got[rel] - ns) / S, shift)


# --- Our archives, extracted by the other tools --------------------------------------------------


def our_archive(run: Path, tz: str, times: dict[str, int]) -> Path:
    """Make ``times`` as files of the run and archive it with ``TZ=tz`` through the CLI."""
    make_tree(run, times)
    made = json.loads(runarchive(tz, "archive", run, "--json"))
    return run / "archives" / made["name"]


EXTRACTORS: dict[str, list[str]] = {
    "unzip": ["unzip", "-q", "{archive}", "-d", "{dest}"],
    "7zz": ["7zz", "x", "-bso0", "-bsp0", "-o{dest}", "{archive}"],
    "bsdtar": ["bsdtar", "-xf", "{archive}", "-C", "{dest}"],
    "zipfile": [sys.executable, "-c", WEPPCLOUD_UNZIP, "{archive}", "{dest}"],
}


def extract(extractor: str, tz: str, archive: Path, dest: Path) -> Path:
    dest.mkdir()
    cmd = [arg.format(archive=archive, dest=dest) for arg in EXTRACTORS[extractor]]
    in_zone(tz, *cmd)
    return dest


@pytest.mark.slow
@needs("unzip")
@pytest.mark.parametrize(("write_tz", "read_tz"), [(LA, KOLKATA), (KOLKATA, CHATHAM)])
def test_unzip_extracts_our_mtimes_to_the_second_in_another_zone(
    tmp_path: Path, run_dir: Path, write_tz: str, read_tz: str
) -> None:
    archive = our_archive(run_dir, write_tz, SOURCE)

    out = extract("unzip", read_tz, archive, tmp_path / "out")

    assert mtimes(out, SOURCE) == to_the_second(SOURCE)


@pytest.mark.slow
@needs("bsdtar")
@pytest.mark.parametrize(("write_tz", "read_tz"), [(LA, LORD_HOWE), (CHATHAM, "UTC")])
def test_bsdtar_extracts_our_mtimes_to_the_second_in_another_zone(
    tmp_path: Path, run_dir: Path, write_tz: str, read_tz: str
) -> None:
    archive = our_archive(run_dir, write_tz, SOURCE)

    out = extract("bsdtar", read_tz, archive, tmp_path / "out")

    assert mtimes(out, SOURCE) == to_the_second(SOURCE)


@pytest.mark.slow
@needs("7zz")
@pytest.mark.parametrize(("write_tz", "read_tz"), [(LA, KOLKATA), ("UTC", CHATHAM)])
def test_7zip_extracts_our_sub_second_mtimes_from_the_ntfs_field_in_another_zone(
    tmp_path: Path, run_dir: Path, write_tz: str, read_tz: str
) -> None:
    archive = our_archive(run_dir, write_tz, SOURCE)

    out = extract("7zz", read_tz, archive, tmp_path / "out")

    # 100 ns ticks, from a float of seconds (the writer's interface): a few ticks at most.
    got = mtimes(out, SOURCE)
    assert all(abs(got[rel] - ns) < 1000 for rel, ns in SOURCE.items()), offsets(got, SOURCE)


@pytest.mark.slow
@pytest.mark.parametrize("tz", ZONES)
def test_weppcloud_zipfile_sees_our_dos_fields_as_the_wall_clock_of_the_writing_host(
    tmp_path: Path, run_dir: Path, tz: str
) -> None:
    archive = our_archive(run_dir, tz, SOURCE)

    out = extract("zipfile", tz, archive, tmp_path / "out")

    with zipfile.ZipFile(archive) as zf:
        fields = {rel: zf.getinfo(rel).date_time for rel in SOURCE}
    assert fields == {rel: wall_clock(ns, tz) for rel, ns in SOURCE.items()}
    got = mtimes(out, SOURCE)
    assert within_a_dos_step(got, SOURCE), offsets(got, SOURCE)


@pytest.mark.slow
def test_our_restore_of_our_archive_in_another_zone_keeps_every_nanosecond(run_dir: Path) -> None:
    archive = our_archive(run_dir, LA, SOURCE)
    before = snapshot(run_dir)
    for rel in SOURCE:
        os.utime(run_dir / rel, ns=(0, 0))

    runarchive(CHATHAM, "restore", run_dir, archive.name)

    assert snapshot(run_dir) == before


@pytest.mark.slow
@needs("zip", "unzip")
def test_the_repeated_hour_of_a_fall_back_night_has_one_dos_time_but_both_instants_survive(
    tmp_path: Path, run_dir: Path
) -> None:
    archive = our_archive(run_dir, LA, FALL_BACK)
    with zipfile.ZipFile(archive) as zf:
        assert {zf.getinfo(rel).date_time for rel in FALL_BACK} == {(2024, 11, 3, 1, 30, 0)}

    unzipped = extract("unzip", LA, archive, tmp_path / "unzipped")
    assert mtimes(unzipped, FALL_BACK) == to_the_second(FALL_BACK)

    shutil.rmtree(run_dir)
    run_dir.mkdir()
    name = foreign_archive(tmp_path, run_dir, "zip", LA, FALL_BACK)
    runarchive(LA, "restore", run_dir, name)
    assert mtimes(run_dir, FALL_BACK) == to_the_second(FALL_BACK)


# --- Which field the reader takes ----------------------------------------------------------------

UT_S = 1_600_000_000
NTFS_NS = 1_650_000_000_500_000_000
DOS_2020 = (0, ((2020 - 1980) << 9) | (1 << 5) | 1)  # 2020-01-01 00:00:00, local


def ut(seconds: int, flags: int = 1) -> bytes:
    return struct.pack("<HHBI", 0x5455, 5, flags, seconds)


def ntfs(ns: int) -> bytes:
    ticks = ns // 100 + 116_444_736_000_000_000
    return struct.pack("<HHIHHQQQ", 0x000A, 32, 0, 1, 24, ticks, 0, 0)


def test_an_entry_takes_its_mtime_from_ut_then_ntfs_then_the_local_dos_fields(
    run_dir: Path,
) -> None:
    name = place(
        run_dir,
        build_zip(
            [
                file("dos-only", dos=DOS_2020),
                file("ut", extra=ut(UT_S), dos=DOS_2020),
                file("ntfs", extra=ntfs(NTFS_NS), dos=DOS_2020),
                file("ut-and-ntfs-of-another-second", extra=ntfs(NTFS_NS) + ut(UT_S)),
                file("ut-and-ntfs-of-its-second", extra=ut(UT_S) + ntfs(UT_S * S + 250_000_000)),
                file("ut-without-mtime", extra=ut(UT_S, flags=0b110), dos=DOS_2020),
                file("no-calendar-date", dos=(0, 0)),
            ],
            with_manifest=False,
        ),
    )
    fd = os.open(run_dir / "archives" / name, os.O_RDONLY)
    try:
        entries = read_directory(fd, os.fstat(fd).st_size).entries
    finally:
        os.close(fd)

    local_2020 = int(time.mktime((2020, 1, 1, 0, 0, 0, 0, 0, -1))) * S
    assert {e.name: (e.mtime_ns, e.mtime_source) for e in entries} == {
        "dos-only": (local_2020, TimeSource.DOS),
        "ut": (UT_S * S, TimeSource.UT),
        "ntfs": (NTFS_NS, TimeSource.NTFS),
        "ut-and-ntfs-of-another-second": (UT_S * S, TimeSource.UT),
        "ut-and-ntfs-of-its-second": (UT_S * S + 250_000_000, TimeSource.NTFS),
        "ut-without-mtime": (local_2020, TimeSource.DOS),
        "no-calendar-date": (None, None),
    }


def _extras(data: bytes) -> dict[int, bytes]:
    fields, pos = {}, 0
    while pos + 4 <= len(data):
        tag, size = struct.unpack_from("<HH", data, pos)
        fields[tag] = data[pos + 4 : pos + 4 + size]
        pos += 4 + size
    return fields


def test_local_and_central_headers_both_carry_the_mtime_in_ut_and_ntfs_fields(
    run_dir: Path,
) -> None:
    make_tree(run_dir, SOURCE)
    archive = create_archive(run_dir).path

    with zipfile.ZipFile(archive) as zf, open(archive, "rb") as fh:
        for rel, ns in SOURCE.items():
            info = zf.getinfo(rel)
            fh.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", fh.read(4))
            fh.seek(name_len, os.SEEK_CUR)
            local, central = _extras(fh.read(extra_len)), _extras(info.extra)
            assert local[0x5455] == central[0x5455] == struct.pack("<BI", 1, ns // S)
            assert local[0x000A] == central[0x000A]
            reserved, tag, size, mtime, atime, ctime = struct.unpack("<IHHQQQ", local[0x000A])
            assert (reserved, tag, size, atime, ctime) == (0, 1, 24, 0, 0)
            assert abs((mtime - 116_444_736_000_000_000) * 100 - ns) < 1000
