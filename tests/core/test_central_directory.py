"""Parsing the central directory: one pass per read block, the same entries as before."""

from __future__ import annotations

import os
import struct
import zipfile
from array import array
from pathlib import Path

import pytest

from runarchive.core.errors import InvalidArchive
from runarchive.core.zipformat import (
    DEFLATED,
    STORED,
    ZipWriter,
    append_entry,
    read_directory,
)

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


# ---------------------------------------------------------------------------------------------
# Entries packed whole where they are built (create's batches): the writer's own bytes
# ---------------------------------------------------------------------------------------------

# (name, method, mode, mtime, data): a deflated and a stored file, a folder, a link, an
# empty file, a non-ASCII name, times before the DOS range, with sub-second digits, before
# 1970 and past the UT field's range.
_PACKED = [
    ("wepp/H1.pass", DEFLATED, 0o100644, 1_700_000_000.25, b"deflated bytes stand-in"),
    ("dem.tif", STORED, 0o100600, 1_600_000_001.0, b"\x00\x01stored"),
    ("wepp/", STORED, 0o040755, 1_700_000_002.0, b""),
    ("latest", STORED, 0o120777, 1_700_000_003.5, b"wepp/"),
    ("empty.txt", STORED, 0o100644, 0.0, b""),
    ("sol/é ü.sol", STORED, 0o100640, 1_700_000_004.123456789, b"sol"),
    ("before-1970.txt", STORED, 0o100644, -1.5, b"old"),
    ("past-2106.txt", STORED, 0o100644, 5_000_000_000.0, b"new"),
]


def _add_all(writer: ZipWriter, entries: list[tuple[str, int, int, float, bytes]]) -> None:
    for name, method, mode, mtime, data in entries:
        writer.add(name, method, mode, mtime, data, zipfile.crc32(data), len(data) + 7)


def _add_packed(writer: ZipWriter, entries: list[tuple[str, int, int, float, bytes]]) -> None:
    data, central, starts = bytearray(), bytearray(), array("I")
    for name, method, mode, mtime, payload in entries:
        append_entry(data, central, starts, name.encode(), method, mode, mtime,
                     zipfile.crc32(payload), payload, len(payload) + 7)  # fmt: skip
    writer.add_packed(data, central, starts)


@pytest.mark.parametrize("start", [0, (1 << 32) - 200], ids=["classic", "across-4-GiB"])
def test_packed_entries_are_the_bytes_the_writer_writes_for_them(
    tmp_path: Path, start: int
) -> None:
    # Written one by one, and packed in two batches (as create's workers pack them), the
    # archives are the same bytes; started just below 4 GiB (a sparse file), the entries past
    # it get their Zip64 extra in the central directory exactly as the writer gives them.
    paths = []
    for way in ("one-by-one", "packed"):
        path = tmp_path / f"{way}.zip"
        with path.open("wb") as fh:
            fh.seek(start)
            writer = ZipWriter(fh)
            if way == "packed":
                _add_packed(writer, _PACKED[:2])
                _add_packed(writer, [])
                _add_packed(writer, _PACKED[2:])
            else:
                _add_all(writer, _PACKED)
            writer.add("last.txt", STORED, 0o100644, 1_700_000_009.0, b"z", zipfile.crc32(b"z"), 1)
            writer.close(b"the comment")
        paths.append(path)
    one, packed = (p.open("rb") for p in paths)
    with one, packed:
        one.seek(start)
        packed.seek(start)
        written = one.read()
        assert packed.read() == written
    fd = os.open(paths[1], os.O_RDONLY)
    try:
        entries = read_directory(fd, os.fstat(fd).st_size).entries
    finally:
        os.close(fd)
    assert [e.name for e in entries] == [name for name, *_ in _PACKED] + ["last.txt"]
    offsets = [e.header_offset for e in entries]
    assert offsets[0] == start and offsets == sorted(offsets)
    if start:
        assert offsets[0] < 1 << 32 < offsets[-1]
        assert written.count(struct.pack("<HH", 0x0001, 24)) >= 2  # Zip64 extras, some entries


def test_an_entry_too_big_for_classic_sizes_is_not_packed() -> None:
    with pytest.raises(ValueError, match="too big"):
        append_entry(bytearray(), bytearray(), array("I"), b"huge", STORED, 0o100644, 0.0, 0,
                     b"", 0xF000_0000)  # fmt: skip
