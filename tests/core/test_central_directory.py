"""Parsing the central directory: one pass per read block, the same entries as before."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest

from runarchive.core.errors import InvalidArchive
from runarchive.core.zipformat import DEFLATED, STORED, ZipWriter, read_directory

BLOCK = 4 << 20  # zipformat._CD_BLOCK


def _write(path: Path, count: int, name_len: int) -> None:
    with path.open("wb") as fh:
        writer = ZipWriter(fh)
        for i in range(count):
            name = f"d{i % 97:02d}/" + f"{i:07d}".ljust(name_len, "x")
            data = b"%d\n" % i
            writer.add(name, STORED, 0o100644, 1_700_000_000.5 + i, data, zipfile.crc32(data),
                       len(data))  # fmt: skip
        writer.add("folder/", STORED, 0o040755, 1_700_000_000.0, b"", 0, 0)
        writer.close(b"comment")


def test_a_directory_spanning_several_read_blocks_reads_as_zipfile_reads_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.zip"
    _write(path, 40_000, 200)  # ~11 MiB of central directory: three blocks, entries straddling
    fd = os.open(path, os.O_RDONLY)
    try:
        directory = read_directory(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    assert directory.file_size - directory.cd_offset > 2 * BLOCK
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    assert [
        (e.name, e.crc, e.csize, e.usize, e.header_offset, e.mode) for e in directory.entries
    ] == [
        (i.filename, i.CRC, i.compress_size, i.file_size, i.header_offset, i.external_attr >> 16)
        for i in infos
    ]
    assert directory.comment == b"comment"
    assert directory.entries[1].mtime_ns == 1_700_000_001_500_000_000
    assert directory.entries[-1].is_dir and directory.entries[-1].kind == "dir"


def _patch_eocd_count(path: Path, delta: int) -> None:
    data = bytearray(path.read_bytes())
    eocd = data.rindex(b"PK\x05\x06")
    count = struct.unpack_from("<H", data, eocd + 10)[0]
    struct.pack_into("<HH", data, eocd + 8, count + delta, count + delta)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("delta", "message"),
    [(1, "runs past its end"), (-1, "more bytes than its entries")],
)
def test_a_count_that_disagrees_with_the_directory_is_refused(
    tmp_path: Path, delta: int, message: str
) -> None:
    path = tmp_path / "a.zip"
    _write(path, 300, 20)
    _patch_eocd_count(path, delta)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(InvalidArchive, match=message):
            read_directory(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def test_a_short_time_extra_that_looks_like_ours_is_read_field_by_field(tmp_path: Path) -> None:
    # Our UT and NTFS headers cut short: the fast path must not take it (it needs 45 bytes);
    # the general walk reads the UT seconds it holds.
    extra = struct.pack("<HHBI", 0x5455, 5, 1, 1_600_000_000) + struct.pack(
        "<HHIHH", 10, 32, 0, 1, 24
    )
    data = b"x"
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        info = zipfile.ZipInfo("a.txt", (2020, 1, 1, 0, 0, 0))
        info.extra = extra
        info.compress_type = zipfile.ZIP_STORED
        zf.writestr(info, data)
    fd = os.open(tmp_path / "z.zip", os.O_RDONLY)
    try:
        (entry,) = read_directory(fd, os.fstat(fd).st_size).entries
    finally:
        os.close(fd)
    assert entry.mtime_ns == 1_600_000_000 * 1_000_000_000
    assert entry.method in (STORED, DEFLATED)
