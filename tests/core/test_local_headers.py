"""Local headers read many at a time (``zipformat.data_offsets``) and entries streamed from
bytes read for a whole batch (``ArchiveReader.stream(entry, data)``): the same offsets, bytes
and refusals as one entry at a time."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive.core import zipformat
from runarchive.core.errors import DamagedArchive, InvalidArchive
from runarchive.core.reader import ArchiveReader
from runarchive.core.zipformat import data_offset, data_offsets, read_directory
from tests.support.zipcraft import (
    DEFLATED,
    LOCAL,
    ZipBuilder,
    build_zip,
    file,
)


def opened(tmp_path: Path, data: bytes) -> Iterator[int]:
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def members(n: int) -> list:  # type: ignore[type-arg]
    return [
        file(f"d/f{i:03}.txt", (b"line %d\n" % i) * (i % 50 + 1), method=DEFLATED if i % 2 else 0)
        for i in range(n)
    ]


@pytest.mark.parametrize("window", [64, 1000, 1 << 18])
def test_offsets_read_many_at_a_time_equal_those_read_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    monkeypatch.setattr(zipformat, "HEADER_WINDOW", window)
    for fd in opened(tmp_path, build_zip(members(120))):
        entries = read_directory(fd, os.fstat(fd).st_size, 10_000).entries
        shuffled = entries[::-1]  # any order in, the same order out

        assert data_offsets(fd, shuffled) == [data_offset(fd, e) for e in shuffled]


def corrupt(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _local_offsets(data: bytes) -> list[int]:
    offsets, pos = [], 0
    while data[pos : pos + 4] == b"PK\x03\x04":
        f = LOCAL.unpack_from(data, pos)
        offsets.append(pos)
        pos += LOCAL.size + f[9] + f[10] + f[7]
    return offsets


@pytest.mark.parametrize("damage", ["signature", "name", "name-length", "method", "truncated"])
def test_a_bad_local_header_is_refused_with_the_words_of_a_one_by_one_read(
    tmp_path: Path, damage: str
) -> None:
    data = build_zip(members(40), with_manifest=False)
    for fd in opened(tmp_path, data):
        entries = read_directory(fd, os.fstat(fd).st_size, 10_000).entries
    at = _local_offsets(data)[25]
    if damage == "signature":
        data = corrupt(data, at, "<I", 0x01020304)
    elif damage == "name":
        data = corrupt(data, at + LOCAL.size, "<B", ord("X"))
    elif damage == "name-length":
        data = corrupt(data, at + 26, "<H", 300)
    elif damage == "method":
        data = corrupt(data, at + 8, "<H", 0 if LOCAL.unpack_from(data, at)[3] else 8)
    else:
        data = data[: at + 10]  # the file ends inside the 26th local header
    for fd in opened(tmp_path, data):
        expected = None
        for entry in entries:
            try:
                data_offset(fd, entry)
            except InvalidArchive as exc:
                expected = str(exc)
                break
        assert expected is not None

        with pytest.raises(InvalidArchive) as caught:
            data_offsets(fd, entries)

        assert str(caught.value) == expected


def test_entries_sharing_one_header_keep_the_check_of_overlaps(tmp_path: Path) -> None:
    """A second central record pointing at the first one's header is an overlap, as before
    (its name is not compared with that header's: the header was read for the first)."""
    zb = ZipBuilder()
    offset = zb.add(file("a.txt", b"A" * 100))
    zb.add_central(file("b.txt", b"A" * 100), offset)
    for fd in opened(tmp_path, zb.finish()):
        with (
            ArchiveReader(os.dup(fd), "a.zip") as reader,
            pytest.raises(InvalidArchive, match="overlaps"),
        ):
            reader.check_layout()


def test_an_entry_streamed_from_bytes_read_for_it_is_the_entry(tmp_path: Path) -> None:
    for fd in opened(tmp_path, build_zip(members(30))):
        with ArchiveReader(os.dup(fd), "a.zip") as reader:
            reader.check_layout()
            for entry in reader.content_entries():
                start = reader.data_offset(entry)
                data = memoryview(reader.read_span(start, entry.csize))

                assert b"".join(reader.stream(entry, data)) == b"".join(reader.stream(entry))


def test_damage_in_bytes_read_for_a_batch_is_refused_as_when_read_alone(tmp_path: Path) -> None:
    bad = file("d/bad.txt", b"payload " * 100, method=DEFLATED, crc=12345)
    for fd in opened(tmp_path, build_zip([*members(5), bad])):
        with ArchiveReader(os.dup(fd), "a.zip") as reader:
            reader.check_layout()
            (entry,) = [e for e in reader.entries if e.name == "d/bad.txt"]
            data = memoryview(reader.read_span(reader.data_offset(entry), entry.csize))

            with pytest.raises(DamagedArchive, match=r"CRC mismatch in 'd/bad\.txt'"):
                b"".join(reader.stream(entry, data))
            with pytest.raises(ValueError, match="compressed bytes"):
                b"".join(reader.stream(entry, data[:-1]))
