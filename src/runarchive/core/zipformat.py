"""The zip container, written and read by hand.

Why by hand: compression runs in worker threads ahead of the writer, so entries arrive as
already-deflated bytes with a known CRC; the stdlib's zipfile can only compress itself, one
entry at a time. Reading parses the central directory directly, which is what ``list`` needs
to stay fast, and checks every offset so that a hostile file cannot point entries at each other.

Format notes: UTF-8 names (flag bit 11), Unix modes in the external attributes (host 3),
Zip64 records whenever a size, offset or the entry count would not fit the classic fields.

Timestamps. Every local and central header carries an entry's mtime three ways:

- the DOS date and time fields, in the *local time* of this process (``time.localtime``), as
  the spec says and as zip, 7-Zip, bsdtar and Python's zipfile write and read them: 2-second
  steps (rounded down), 1980 to 2107, and no zone, so a reader elsewhere sees the writer's
  wall clock;
- the extended-timestamp extra (0x5455, "UT"): flags 1 and the mtime in UTC seconds, the
  same in both headers (the spec lets the local one add atime and ctime; we store neither);
- the NTFS extra (0x000a): tag 1 with the mtime as a FILETIME (UTC, 100 ns ticks) and zero
  access and creation times, as 7-Zip writes it. unzip and bsdtar ignore it and read UT;
  7-Zip prefers it, so it restores sub-second times. The writer takes float seconds, so a
  tick or two can be lost to rounding; the manifest keeps the exact nanoseconds.

Reading (``CentralEntry.mtime_ns``, from the central directory only): UT's mtime if present,
else NTFS's, else the DOS fields read as local time of this process (``time.mktime``; in the
repeated hour of a fall-back night it picks one of the two instants). An NTFS time within
UT's second is the same instant with more digits and is taken instead (``mtime_source`` says
which field won). UT is read unsigned, as 7-Zip and libarchive do. For our own archives the
manifest, not these fields, is the authority.
"""

from __future__ import annotations

import itertools
import os
import stat
import struct
import time
from array import array
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import BinaryIO

from .errors import InvalidArchive, LimitExceeded, UnsafeArchive

STORED = 0
DEFLATED = 8

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
LOCAL_SIG = 0x04034B50
CENTRAL_SIG = 0x02014B50
EOCD_SIG = 0x06054B50
EOCD64_SIG = 0x06064B50
LOCATOR64_SIG = 0x07064B50
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
FLAG_UTF8 = 0x800
FLAG_ENCRYPTED = 0x1
# Zip64 is decided before an entry's data is written; stay clear of the edge so deflate's
# worst-case growth on an unexpected file cannot overflow the classic fields.
ZIP64_THRESHOLD = 0xF0000000


# The DOS fields hold a local wall-clock time with 2-second steps, from 1980 to 2107.
_DOS_MIN = (1980, 1, 1, 0, 0, 0)
_DOS_MAX = (2107, 12, 31, 23, 59, 58)
# FILETIME (NTFS extra) counts 100 ns ticks from 1601-01-01 UTC; this many lie before 1970.
_FILETIME_EPOCH = 116_444_736_000_000_000
# Past every date the DOS fields can hold in any zone, and still inside time.localtime's range.
_LOCALTIME_MAX = 4_354_819_200 + 2 * 86_400


class TimeSource(StrEnum):
    """Which field of an entry its modification time was read from."""

    UT = "ut"  # extended timestamp 0x5455: UTC seconds
    NTFS = "ntfs"  # NTFS extra 0x000a: UTC, 100 ns ticks
    DOS = "dos"  # the DOS date and time: local wall clock, 2-second steps


def _dos_datetime(mtime: float) -> tuple[int, int]:
    """Return the DOS time and date fields of ``mtime`` in the process's local zone."""
    second = min(max(int(mtime), 0), _LOCALTIME_MAX)
    found = _DOS_CACHE.get(second)
    if found is None:
        t = time.localtime(second)
        y, mo, d, h, mi, s = max(_DOS_MIN, min(_DOS_MAX, tuple(t[:6])))
        found = (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d
        if len(_DOS_CACHE) >= _DOS_CACHE_MAX:
            _DOS_CACHE.clear()
        _DOS_CACHE[second] = found
    return found


# Files of one run were mostly written within a few seconds, and ``localtime`` plus the
# clamping cost ~2 µs per call, paid twice per entry (local and central header): a small map
# from whole seconds to fields makes 30,000 entries cost one call per distinct second. The
# cache belongs to one zone: every ``ZipWriter`` starts by checking that the zone (which
# ``time.tzset`` may have changed since) is still the one the cache was filled in.
_DOS_CACHE: dict[int, tuple[int, int]] = {}
_DOS_CACHE_MAX = 4096
_dos_zone: tuple[object, ...] = ()


def _check_zone() -> None:
    """Empty the DOS-field cache if the process's time zone changed since it was filled."""
    global _dos_zone
    zone = (time.timezone, time.altzone, time.daylight, time.tzname)
    if zone != _dos_zone:
        _DOS_CACHE.clear()
        _dos_zone = zone


def _dos_to_ns(dtime: int, ddate: int) -> int | None:
    """Read DOS fields as local wall-clock time; None for fields no calendar has."""
    fields = (
        ((ddate >> 9) & 0x7F) + 1980,
        (ddate >> 5) & 0xF,
        ddate & 0x1F,
        (dtime >> 11) & 0x1F,
        (dtime >> 5) & 0x3F,
        (dtime & 0x1F) * 2,
    )
    try:
        datetime(*fields)  # mktime would roll month 13 or second 60 over instead of refusing
        return int(time.mktime((*fields, 0, 0, -1))) * 1_000_000_000
    except (ValueError, OverflowError):
        return None


# The two fields as this writer lays them out, so that reading our own central directory
# (100,000 entries for a big run) takes one unpack per entry instead of a walk of the fields.
_OUR_TIMES = struct.Struct("<HHBIHHIHHQQQ")
_OUR_TIMES_HEAD = struct.pack("<HHB", 0x5455, 5, 1)
_OUR_NTFS_HEAD = struct.pack("<HHIHH", 0x000A, 32, 0, 0x0001, 24)


def _time_extras(mtime: float) -> bytes:
    """Return the UT (UTC seconds) and NTFS (UTC, 100 ns) extra fields carrying ``mtime``.

    Both carry the modification time only: UT's flags say so, and the NTFS field's access and
    creation slots are zero (not recorded), as 7-Zip writes them.
    """
    ticks = min(max(0, round(mtime * 1e7) + _FILETIME_EPOCH), 1 << 63)
    seconds = int(max(0, min(mtime, _U32)))
    return _OUR_TIMES.pack(0x5455, 5, 1, seconds, 0x000A, 32, 0, 0x0001, 24, ticks, 0, 0)


def _extra_mtime(extra: bytes) -> tuple[int, TimeSource] | None:
    """Return the mtime (ns since the epoch) of a UT or else an NTFS extra field, if any.

    UT comes first, as unzip and bsdtar read it; an NTFS time within the same second is the
    same instant with more digits (7-Zip writes it, and so do we), so it refines UT's second.
    """
    # Our layout whole (a hostile extra may start like it and stop short: then walk it).
    if (
        len(extra) >= _OUR_TIMES.size
        and extra[:5] == _OUR_TIMES_HEAD
        and extra[9:21] == _OUR_NTFS_HEAD
    ):
        seconds, ticks = _OUR_TIMES.unpack_from(extra)[3::6]
        return _pick(seconds * 1_000_000_000, (ticks - _FILETIME_EPOCH) * 100 if ticks else None)
    ut: int | None = None
    ntfs: int | None = None
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if tag == 0x5455 and ut is None and len(body) >= 5 and body[0] & 1:
            ut = struct.unpack_from("<I", body, 1)[0] * 1_000_000_000
        elif tag == 0x000A and ntfs is None:
            ntfs = _ntfs_mtime(body)
    return _pick(ut, ntfs)


def _pick(ut: int | None, ntfs: int | None) -> tuple[int, TimeSource] | None:
    if ntfs is not None and (ut is None or ntfs // 1_000_000_000 * 1_000_000_000 == ut):
        return ntfs, TimeSource.NTFS
    return None if ut is None else (ut, TimeSource.UT)


def _entry_mtime(extra: bytes, dtime: int, ddate: int) -> tuple[int | None, TimeSource | None]:
    """Return an entry's mtime in ns since the epoch, from UT, else NTFS, else the DOS fields."""
    found = _extra_mtime(extra)
    if found is not None:
        return found
    dos_ns = _dos_to_ns(dtime, ddate)
    return (None, None) if dos_ns is None else (dos_ns, TimeSource.DOS)


def _ntfs_mtime(body: bytes) -> int | None:
    pos = 4  # reserved
    while pos + 4 <= len(body):
        tag, size = struct.unpack_from("<HH", body, pos)
        if tag == 0x0001 and size >= 24 and pos + 4 + 8 <= len(body):
            ticks = struct.unpack_from("<Q", body, pos + 4)[0]
            return (ticks - _FILETIME_EPOCH) * 100 if ticks else None
        pos += 4 + size
    return None


@dataclass(slots=True)
class WrittenEntry:
    """What the central directory needs to know about one written entry.

    The DOS fields and the time extras are computed once, when the entry is made, and used
    by both headers.
    """

    name: bytes
    method: int
    crc: int
    csize: int
    usize: int
    offset: int
    mode: int
    mtime: float
    zip64_local: bool
    dtime: int = 0
    ddate: int = 0
    times: bytes = b""


def new_entry(
    name: str, method: int, mode: int, mtime: float, crc: int, csize: int, usize: int
) -> WrittenEntry:
    """Describe an entry whose sizes are known, at offset 0."""
    dtime, ddate = _dos_datetime(mtime)
    return WrittenEntry(
        name.encode("utf-8"), method, crc, csize, usize, 0, mode, mtime,
        usize >= ZIP64_THRESHOLD or csize >= ZIP64_THRESHOLD, dtime, ddate, _time_extras(mtime),
    )  # fmt: skip


def local_header(entry: WrittenEntry) -> bytes:
    """Return the local header (with name and extras) of ``entry``."""
    extra = entry.times
    if entry.zip64_local:
        csize = usize = _U32
        extra += struct.pack("<HHQQ", 0x0001, 16, entry.usize, entry.csize)
    else:
        csize, usize = entry.csize, entry.usize
    head = _LOCAL.pack(
        LOCAL_SIG, 45 if entry.zip64_local else 20, FLAG_UTF8, entry.method, entry.dtime,
        entry.ddate, entry.crc, csize, usize, len(entry.name), len(extra),
    )  # fmt: skip
    return head + entry.name + extra


_MADE_BY = (3 << 8) | 63  # Unix, spec 6.3
# Where a central record's 4-byte offset field lies, from the record's start.
CENTRAL_OFFSET_FIELD = 42
_U32_FIELD = struct.Struct("<I")
_pack_central, _pack_local, _pack_times = _CENTRAL.pack, _LOCAL.pack, _OUR_TIMES.pack
_TIMES_SIZE = _OUR_TIMES.size


def append_entry(
    data: bytearray,
    central: bytearray,
    starts: array[int],
    name: bytes,
    method: int,
    mode: int,
    mtime: float,
    crc: int,
    out: bytes,
    usize: int,
) -> None:
    """Append a whole small entry: its local header and ``out`` to ``data``, its central
    record (offset relative to ``data``'s start) to ``central``, where that record's offset
    field lies to ``starts`` (``ZipWriter.add_packed`` makes the offsets absolute).

    The bytes are those ``local_header`` and ``ZipWriter.close`` write for the same entry;
    a test pins both. For entries too small to need Zip64 sizes (``create``'s batches of small
    files, folders and links): anything bigger goes through ``ZipWriter.add``. Safe in any
    thread or process: ``create``'s workers pack their entries themselves, so the one writer
    only appends bytes.
    """
    csize = len(out)
    if usize >= ZIP64_THRESHOLD or csize >= ZIP64_THRESHOLD:
        raise ValueError(f"entry {name!r} is too big to be packed whole")
    # ``_dos_datetime`` and ``_time_extras`` inlined for the common case (a cached second, a
    # time inside both fields' ranges): their calls were a tenth of a small entry's Python.
    found = _DOS_CACHE.get(int(mtime)) if mtime >= 0 else None
    dtime, ddate = found if found is not None else _dos_datetime(mtime)
    ticks = round(mtime * 1e7) + _FILETIME_EPOCH
    if 0 <= mtime <= _U32 and 0 <= ticks <= 1 << 63:
        times = _pack_times(0x5455, 5, 1, int(mtime), 0x000A, 32, 0, 0x0001, 24, ticks, 0, 0)
    else:
        times = _time_extras(mtime)
    nlen = len(name)
    starts.append(len(central) + CENTRAL_OFFSET_FIELD)
    central += _pack_central(
        CENTRAL_SIG, _MADE_BY, 20, FLAG_UTF8, method, dtime, ddate, crc, csize, usize, nlen,
        _TIMES_SIZE, 0, 0, 0, (mode << 16) | (0x10 if mode & 0o170000 == 0o040000 else 0),
        len(data),
    )  # fmt: skip
    central += name
    central += times
    data += _pack_local(
        LOCAL_SIG, 20, FLAG_UTF8, method, dtime, ddate, crc, csize, usize, nlen, _TIMES_SIZE
    )
    data += name
    data += times
    data += out


def rebase_central(central: bytearray, starts: array[int], base: int) -> bytes:
    """Return the central records ``append_entry`` packed, their offsets moved by ``base``.

    A record whose offset would not fit the classic field gets the Zip64 extra instead,
    exactly as ``ZipWriter.close`` writes such an entry.
    """
    if not starts:
        return b""
    unpack_from, pack_into = _U32_FIELD.unpack_from, _U32_FIELD.pack_into
    if base + unpack_from(central, starts[-1])[0] < _U32:  # offsets grow: the last is the top
        for at in starts:
            pack_into(central, at, unpack_from(central, at)[0] + base)
        return bytes(central)
    out = bytearray()
    bounds = [at - CENTRAL_OFFSET_FIELD for at in starts] + [len(central)]
    for start, end in itertools.pairwise(bounds):
        out += _widened(central[start:end], base)
    return bytes(out)


def _widened(record: bytes | bytearray, base: int) -> bytes:
    """Return classic central ``record`` moved by ``base``, with the Zip64 extra if needed."""
    f = list(_CENTRAL.unpack_from(record))
    offset = f[16] + base
    if offset < _U32:
        f[16] = offset
        return _CENTRAL.pack(*f) + bytes(record[_CENTRAL.size :])
    usize, csize, nlen, xlen = f[9], f[8], f[10], f[11]
    z64 = struct.pack("<HHQQQ", 0x0001, 24, usize, csize, offset)
    f[2], f[8], f[9], f[11], f[16] = 45, _U32, _U32, xlen + len(z64), _U32
    tail = bytes(record[_CENTRAL.size :])
    return _CENTRAL.pack(*f) + tail[: nlen + xlen] + z64 + tail[nlen + xlen :]


def _central_record(e: WrittenEntry) -> bytes:
    """Return ``e``'s central-directory record (Zip64 extra when a field would not fit)."""
    z64 = b""
    usize, csize, offset = e.usize, e.csize, e.offset
    if usize >= _U32 or csize >= _U32 or offset >= _U32 or e.zip64_local:
        z64 = struct.pack("<QQQ", usize, csize, offset)
        usize = csize = offset = _U32
        z64 = struct.pack("<HH", 0x0001, len(z64)) + z64
    extra = e.times + z64
    dos_attr = 0x10 if stat.S_ISDIR(e.mode) else 0
    head = _CENTRAL.pack(
        CENTRAL_SIG, _MADE_BY, 45 if z64 else 20, FLAG_UTF8, e.method, e.dtime, e.ddate, e.crc,
        csize, usize, len(e.name), len(extra), 0, 0, 0, (e.mode << 16) | dos_attr, offset,
    )  # fmt: skip
    return head + e.name + extra


class ZipWriter:
    """Append entries to a seekable binary file, then write the central directory."""

    def __init__(self, fh: BinaryIO) -> None:
        _check_zone()
        self.fh = fh
        # In archive order: entries whose record is made at close, and blocks of records
        # packed already (``add_packed``).
        self.records: list[WrittenEntry | bytes] = []
        self.count = 0
        self.patches: list[tuple[int, bytes]] = []
        self.pos = fh.tell()

    def begin(
        self, name: str, method: int, mode: int, mtime: float, size_hint: int
    ) -> WrittenEntry:
        """Write a local header with placeholder sizes; ``finish`` patches them."""
        entry = new_entry(name, method, mode, mtime, 0, 0, 0)
        entry.offset, entry.zip64_local = self.pos, size_hint >= ZIP64_THRESHOLD
        self._write(local_header(entry))
        return entry

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self.fh.write(data)
        self.pos += len(data)

    def write_data(self, data: bytes | memoryview) -> None:
        """Append compressed bytes of the entry begun last."""
        self._write(data)

    def finish(self, entry: WrittenEntry, crc: int, csize: int, usize: int) -> None:
        """Record the entry's final CRC and sizes; its local header is patched at close."""
        if not entry.zip64_local and (csize >= _U32 or usize >= _U32):
            raise InvalidArchive(f"Entry {entry.name!r} outgrew its header while being written.")
        entry.crc, entry.csize, entry.usize = crc, csize, usize
        # Patching at close with pwrite avoids a seek, which would flush the write buffer.
        self.patches.append((entry.offset, local_header(entry)))
        self.records.append(entry)
        self.count += 1

    def add(
        self, name: str, method: int, mode: int, mtime: float, data: bytes, crc: int, usize: int
    ) -> None:
        """Write a whole entry whose compressed bytes are already known."""
        entry = new_entry(name, method, mode, mtime, crc, len(data), usize)
        entry.offset = self.pos
        self._write(local_header(entry))
        self._write(data)
        self.records.append(entry)
        self.count += 1

    def add_packed(
        self, data: bytes | bytearray | memoryview, central: bytearray, starts: array[int]
    ) -> None:
        """Append ``data``: the local headers and data of entries ``append_entry`` packed,
        whose central records (``central``, ``starts``) are relative to ``data``'s start."""
        self.records.append(rebase_central(central, starts, self.pos))
        self.count += len(starts)
        self._write(data)

    def close(self, comment: bytes) -> None:
        """Write the central directory and end records."""
        cd_start = self.pos
        out = bytearray()
        for record in self.records:
            out += record if isinstance(record, bytes) else _central_record(record)
        self.fh.write(out)
        cd_size = len(out)
        count = self.count
        end = cd_start + cd_size
        if count >= _U16 or cd_size >= _U32 or cd_start >= _U32:
            self.fh.write(
                _EOCD64.pack(
                    EOCD64_SIG, 44, (3 << 8) | 63, 45, 0, 0, count, count, cd_size, cd_start
                )
            )
            self.fh.write(_LOCATOR64.pack(LOCATOR64_SIG, 0, end, 1))
            self.fh.write(_EOCD.pack(EOCD_SIG, 0, 0, _U16, _U16, _U32, _U32, len(comment)))
        else:
            self.fh.write(_EOCD.pack(EOCD_SIG, 0, 0, count, count, cd_size, cd_start, len(comment)))
        self.fh.write(comment)
        self.fh.flush()
        for offset, header in self.patches:
            os.pwrite(self.fh.fileno(), header, offset)


# Not frozen: a frozen dataclass sets each of its 12 fields through ``object.__setattr__``,
# which was half the cost of parsing a 30,000-entry directory. Nothing assigns to one (it is
# hashed and compared by value as before: ``unsafe_hash``).
@dataclass(slots=True, unsafe_hash=True)
class CentralEntry:
    """One entry as the central directory describes it (read-only by convention)."""

    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    header_offset: int
    mode: int
    mtime_ns: int | None
    mtime_source: TimeSource | None
    utf8: bool

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode) or (self.mode == 0 and self.name.endswith("/"))

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def kind(self) -> str:
        """Return file, dir, symlink or special (fifo, device, socket)."""
        fmt = stat.S_IFMT(self.mode)
        if self.is_dir:
            return "dir"
        if fmt == stat.S_IFLNK:
            return "symlink"
        if fmt in (0, stat.S_IFREG):
            return "file"
        return "special"


@dataclass(frozen=True, slots=True)
class Directory:
    """The parsed end records and central directory of a zip file."""

    entries: list[CentralEntry]
    comment: bytes
    cd_offset: int
    file_size: int


def _read_at(fd: int, offset: int, size: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise InvalidArchive("Archive is truncated.")
    return data


def _find_eocd(fd: int, file_size: int) -> tuple[int, bytes]:
    """Return the position and bytes of the one end record; refuse zero or several.

    An end record hidden in another's comment (or a second archive appended to a first) lets
    different tools read different archives out of one file: that is refused, not guessed.
    """
    tail_len = min(file_size, _EOCD.size + _U16)
    tail = _read_at(fd, file_size - tail_len, tail_len)
    sig = struct.pack("<I", EOCD_SIG)
    found: list[int] = []
    idx = tail.rfind(sig)
    while idx >= 0:
        if idx + _EOCD.size <= len(tail):
            comment_len = struct.unpack_from("<H", tail, idx + 20)[0]
            if idx + _EOCD.size + comment_len == len(tail):
                found.append(idx)
        idx = tail.rfind(sig, 0, idx)
    if not found:
        raise InvalidArchive("Not a zip archive (no end of central directory record).")
    last = found[0]
    if len(found) > 1 or sig in tail[last + _EOCD.size :]:
        raise UnsafeArchive("Archive structure is ambiguous: its comment holds another end record.")
    return file_size - tail_len + last, tail[last:]


# Reading the central directory in blocks bounds memory by the block and the entries parsed,
# never by a size the file claims (a sparse file can claim a gigabyte for a few KiB of disk).
_CD_BLOCK = 4 << 20
_MIN_CENTRAL = _CENTRAL.size


def read_directory(fd: int, file_size: int, max_entries: int = 1_000_000) -> Directory:
    """Parse the end records and every central-directory entry, checking offsets and bounds."""
    if file_size < _EOCD.size:
        raise InvalidArchive("Not a zip archive (file too small).")
    eocd_pos, rec = _find_eocd(fd, file_size)
    _, disk, cd_disk, _, count, cd_size, cd_offset, clen = _EOCD.unpack_from(rec)
    comment = rec[_EOCD.size : _EOCD.size + clen]
    cd_end = eocd_pos
    if count == _U16 or cd_size == _U32 or cd_offset == _U32:
        loc_pos = eocd_pos - _LOCATOR64.size
        if loc_pos < 0:
            raise InvalidArchive("Zip64 locator missing.")
        sig, _, eocd64_pos, _ = _LOCATOR64.unpack(_read_at(fd, loc_pos, _LOCATOR64.size))
        if sig != LOCATOR64_SIG or eocd64_pos + _EOCD64.size != loc_pos:
            raise InvalidArchive("Zip64 end record missing or misplaced.")
        fields = _EOCD64.unpack(_read_at(fd, eocd64_pos, _EOCD64.size))
        if fields[0] != EOCD64_SIG:
            raise InvalidArchive("Zip64 end record damaged.")
        disk, cd_disk, count, cd_size, cd_offset = (
            fields[4],
            fields[5],
            fields[7],
            fields[8],
            fields[9],
        )
        cd_end = eocd64_pos
    if disk != 0 or cd_disk != 0:
        raise InvalidArchive("Multi-volume (split) archives are not supported.")
    if cd_offset + cd_size != cd_end:
        raise InvalidArchive("Central directory does not end where the end record says.")
    if count * _MIN_CENTRAL > cd_size:
        raise InvalidArchive("Central directory is shorter than its entry count.")
    # A bound on memory before any entry is parsed; the exact limit on content entries (the
    # manifest not counted) is applied by the restore plan with a more precise message.
    if count > 2 * max_entries + 1:
        raise LimitExceeded(
            f"Archive has {count} entries; the limit is {max_entries} (RUNARCHIVE_MAX_ENTRIES)."
        )
    entries = _parse_central(fd, count, cd_offset, cd_size)
    return Directory(entries, comment, cd_offset, file_size)


def _parse_central(fd: int, count: int, cd_offset: int, cd_size: int) -> list[CentralEntry]:
    """Parse ``count`` central-directory entries: one read per block, one pass over each.

    A directory of up to ``_CD_BLOCK`` bytes (~40,000 entries of our writer) is one
    ``pread``; a bigger one is read block by block, the unparsed tail of a block carried into
    the next. Every check is the per-entry one (``_parse_block``).
    """
    entries: list[CentralEntry] = []
    buf = b""
    base = 0  # offset of buf[0] within the central directory
    at = 0  # the next entry's offset within buf
    while True:
        at = _parse_block(buf, at, count, cd_offset, entries)
        if len(entries) == count:
            break
        keep = buf[at:]
        read_to = base + at + len(keep)
        if read_to >= cd_size:
            raise InvalidArchive("Central directory entry runs past its end.")
        more = _read_at(fd, cd_offset + read_to, min(_CD_BLOCK, cd_size - read_to))
        buf, base, at = keep + more, base + at, 0
    if base + at != cd_size:
        raise InvalidArchive("Central directory holds more bytes than its entries.")
    return entries


_NTFS = TimeSource.NTFS
_UT = TimeSource.UT


def _parse_block(
    buf: bytes, at: int, count: int, cd_offset: int, entries: list[CentralEntry]
) -> int:
    """Append the entries that lie whole in ``buf`` from ``at`` (until ``count``); return
    where the first incomplete one starts.

    Written as one loop with everything it calls bound to locals: 30,000 entries cost ~4 µs
    each through the helpers. Our own entries' time extras (UT then NTFS, 45 bytes, the same
    layout every time) are read with one unpack at their known place; any other extra goes
    through ``_entry_mtime``.
    """
    unpack_central = _CENTRAL.unpack_from
    unpack_times = _OUR_TIMES.unpack_from
    times_head, ntfs_head, times_size = _OUR_TIMES_HEAD, _OUR_NTFS_HEAD, _OUR_TIMES.size
    head_size, end = _CENTRAL.size, len(buf)
    append, new = entries.append, CentralEntry
    while len(entries) < count and at + head_size <= end:
        (sig, made_by, _, flags, method, dtime, ddate, crc, csize, usize, nlen, xlen, clen,
         _, _, ext_attr, offset) = unpack_central(buf, at)  # fmt: skip
        if sig != CENTRAL_SIG:
            raise InvalidArchive("Central directory entry signature is wrong.")
        start = at + head_size
        extra_at = start + nlen
        nxt = extra_at + xlen + clen
        if nxt > end:
            break
        raw = buf[start:extra_at]
        if (
            xlen >= times_size
            and buf[extra_at : extra_at + 5] == times_head
            and buf[extra_at + 9 : extra_at + 21] == ntfs_head
        ):
            seconds, ticks = unpack_times(buf, extra_at)[3::6]
            mtime_ns: int | None = seconds * 1_000_000_000
            source: TimeSource | None = _UT
            if ticks:
                ntfs = (ticks - _FILETIME_EPOCH) * 100
                if ntfs // 1_000_000_000 * 1_000_000_000 == mtime_ns:
                    mtime_ns, source = ntfs, _NTFS
        else:
            mtime_ns, source = _entry_mtime(buf[extra_at : extra_at + xlen], dtime, ddate)
        if usize == _U32 or csize == _U32 or offset == _U32:
            usize, csize, offset = _apply_zip64(buf[extra_at : extra_at + xlen], usize, csize,
                                                offset)  # fmt: skip
        if offset >= cd_offset:
            raise InvalidArchive("An entry points into or past the central directory.")
        utf8 = bool(flags & FLAG_UTF8)
        name = raw.decode("utf-8" if utf8 else "cp437", errors="surrogateescape")
        mode = (ext_attr >> 16) & 0xFFFF if (made_by >> 8) == 3 else 0
        if mode == 0 and ext_attr & 0x10:
            mode = stat.S_IFDIR | 0o755
        append(new(name, raw, flags, method, crc, csize, usize, offset, mode, mtime_ns, source,
                   utf8))  # fmt: skip
        at = nxt
    return at


def _apply_zip64(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    if usize != _U32 and csize != _U32 and offset != _U32:
        # Only fields saturated to 0xFFFFFFFF take a value from the zip64 extra (below), so
        # with none saturated the walk of the extras cannot change anything: skip it.
        return usize, csize, offset
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if tag != 0x0001:
            continue
        vals = [v[0] for v in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
        if usize == _U32 and vals:
            usize = vals.pop(0)
        if csize == _U32 and vals:
            csize = vals.pop(0)
        if offset == _U32 and vals:
            offset = vals.pop(0)
    return usize, csize, offset


def data_offset(fd: int, entry: CentralEntry) -> int:
    """Return where an entry's compressed data starts, checking its local header."""
    head = _read_at(fd, entry.header_offset, _LOCAL.size)
    f = _LOCAL.unpack(head)
    if f[0] != LOCAL_SIG:
        raise InvalidArchive(f"Local header of {entry.name!r} is missing.")
    nlen, xlen = f[9], f[10]
    if _read_at(fd, entry.header_offset + _LOCAL.size, nlen) != entry.raw_name:
        raise InvalidArchive(f"Local and central names of {entry.name!r} differ.")
    if f[3] != entry.method:
        raise InvalidArchive(f"Local and central compression methods of {entry.name!r} differ.")
    return int(entry.header_offset + _LOCAL.size + nlen + xlen)


HEADER_WINDOW = 1 << 18


def data_offsets(fd: int, entries: list[CentralEntry]) -> list[int]:
    """Return ``data_offset`` of every entry (in the order given), with the same checks.

    Local headers that lie within ``HEADER_WINDOW`` bytes of each other (small entries, in
    file order) are read with one ``pread`` of the span instead of two per entry: a
    30,000-entry archive took 60,000 reads. The first failing entry in the order given
    raises what ``data_offset`` raises for it: any entry whose header is not plainly sound
    (or lies past a short read) is read again by ``data_offset`` itself.
    """
    order = sorted(range(len(entries)), key=lambda k: entries[k].header_offset)
    found: list[int | InvalidArchive] = [0] * len(entries)
    i = 0
    while i < len(order):
        start = entries[order[i]].header_offset
        j = i
        end = start + _LOCAL.size + len(entries[order[i]].raw_name)
        while j + 1 < len(order):
            nxt = entries[order[j + 1]]
            nxt_end = nxt.header_offset + _LOCAL.size + len(nxt.raw_name)
            if nxt_end - start > HEADER_WINDOW:
                break
            j, end = j + 1, max(end, nxt_end)
        block = os.pread(fd, end - start, start)
        whole = len(block) == end - start
        for k in order[i : j + 1]:
            entry = entries[k]
            if whole:
                at = entry.header_offset - start
                f = _LOCAL.unpack_from(block, at)
                name_at = at + _LOCAL.size
                if (f[0] == LOCAL_SIG and f[3] == entry.method and f[9] == len(entry.raw_name)
                        and block[name_at : name_at + f[9]] == entry.raw_name):  # fmt: skip
                    found[k] = entry.header_offset + _LOCAL.size + f[9] + f[10]
                    continue
            try:  # anything amiss: the one-entry reads, for exactly their error
                found[k] = data_offset(fd, entry)
            except InvalidArchive as exc:
                found[k] = exc
        i = j + 1
    offsets: list[int] = []
    for value in found:
        if isinstance(value, InvalidArchive):
            raise value
        offsets.append(value)
    return offsets


_DESCRIPTOR_SIG = struct.pack("<I", 0x08074B50)


def descriptor_size(fd: int, entry: CentralEntry, data_end: int) -> int:
    """Return the size of the data descriptor after an entry's data (0 when it has none)."""
    if not entry.flags & 0x8:
        return 0
    zip64 = entry.csize >= _U32 or entry.usize >= _U32
    size = 20 if zip64 else 12
    return size + 4 if os.pread(fd, 4, data_end) == _DESCRIPTOR_SIG else size
