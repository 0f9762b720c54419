"""Build zip files byte by byte, so tests can write archives that ``zipfile`` refuses to make.

Every field a hostile archive could lie about is under the test's control: names as raw bytes,
flags, method, CRC, declared and real sizes, Unix mode bits, DOS times, extra fields, and where
each central-directory record points. ``manifest_for`` writes a runarchive manifest describing
the members, so a case can be built "as runarchive would", with exactly one defect.
"""

from __future__ import annotations

import hashlib
import json
import stat
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runarchive.core.manifest import MANIFEST_NAME

LOCAL = struct.Struct("<IHHHHHIIIHH")
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
EOCD = struct.Struct("<IHHHHIIH")
STORED, DEFLATED = 0, 8
FLAG_UTF8 = 0x800
DOS_TIME, DOS_DATE = 0, ((2020 - 1980) << 9) | (1 << 5) | 1  # 2020-01-01 00:00:00
MTIME_NS = 1_577_836_800_000_000_000

RUNID = "ambitious-pinecone"
ARCHIVE_NAME = f"{RUNID}.20240102T030405Z.zip"


@dataclass
class Member:
    """One zip entry; every field a hostile archive could lie about can be overridden."""

    name: str | bytes
    data: bytes = b""
    mode: int = stat.S_IFREG | 0o644
    method: int = STORED
    flags: int = FLAG_UTF8
    crc: int | None = None
    usize: int | None = None
    payload: bytes | None = None
    unix: bool = True
    in_manifest: bool = True
    extra: bytes = b""
    dos: tuple[int, int] = (DOS_TIME, DOS_DATE)

    @property
    def raw_name(self) -> bytes:
        return self.name if isinstance(self.name, bytes) else self.name.encode("utf-8")

    @property
    def declared_size(self) -> int:
        return len(self.data) if self.usize is None else self.usize

    @property
    def declared_crc(self) -> int:
        return zlib.crc32(self.data) if self.crc is None else self.crc

    def compressed(self) -> bytes:
        if self.payload is not None:
            return self.payload
        if self.method == DEFLATED:
            return deflate(self.data)
        return self.data


def deflate(data: bytes, level: int = 9) -> bytes:
    """Return a raw deflate stream of ``data``."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


def zero_bomb(mib: int) -> bytes:
    """Return a raw deflate stream of ``mib`` MiB of zeros (about 1000:1), built in O(1 MiB)."""
    seg = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = seg.compress(bytes(1 << 20)) + seg.flush(zlib.Z_FULL_FLUSH)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    return block * (mib - 1) + last.compress(bytes(1 << 20)) + last.flush()


def file(name: str | bytes, data: bytes = b"content\n", **kw: Any) -> Member:
    return Member(name, data, **kw)


def folder(name: str, **kw: Any) -> Member:
    mode = kw.pop("mode", stat.S_IFDIR | 0o755)
    return Member(name if name.endswith("/") else name + "/", b"", mode, **kw)


def symlink(name: str, target: str, **kw: Any) -> Member:
    return Member(name, target.encode("utf-8"), stat.S_IFLNK | 0o777, **kw)


class ZipBuilder:
    """Lay out local records and central-directory records independently."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.central: list[bytes] = []

    def add_local(self, m: Member) -> int:
        """Append a local header and the member's data; return the header's offset."""
        offset = len(self.body)
        payload = m.compressed()
        self.body += LOCAL.pack(
            0x04034B50,
            20,
            m.flags,
            m.method,
            *m.dos,
            m.declared_crc,
            len(payload),
            m.declared_size,
            len(m.raw_name),
            len(m.extra),
        )
        self.body += m.raw_name + m.extra + payload
        return offset

    def add_central(
        self, m: Member, offset: int, *, csize: int | None = None, crc: int | None = None
    ) -> None:
        """Append a central record for ``m`` pointing at ``offset``."""
        ext = (m.mode << 16) | (0x10 if stat.S_ISDIR(m.mode) else 0)
        self.central.append(
            CENTRAL.pack(
                0x02014B50,
                ((3 if m.unix else 0) << 8) | 20,
                20,
                m.flags,
                m.method,
                *m.dos,
                m.declared_crc if crc is None else crc,
                len(m.compressed()) if csize is None else csize,
                m.declared_size,
                len(m.raw_name),
                len(m.extra),
                0,
                0,
                0,
                ext if m.unix else ext & 0xFFFF,
                offset,
            )
            + m.raw_name
            + m.extra
        )

    def add(self, m: Member) -> int:
        offset = self.add_local(m)
        self.add_central(m, offset)
        return offset

    def finish(self, comment: bytes = b"") -> bytes:
        cd = b"".join(self.central)
        n = len(self.central)
        eocd = EOCD.pack(0x06054B50, 0, 0, n, n, len(cd), len(self.body), len(comment))
        return bytes(self.body) + cd + eocd + comment


def _kind(m: Member) -> str:
    if stat.S_ISDIR(m.mode):
        return "dir"
    if stat.S_ISLNK(m.mode):
        return "symlink"
    return "file"


def manifest_for(
    members: Iterable[Member], patch: Callable[[dict[str, Any]], None] | None = None
) -> Member:
    """Return a manifest entry describing ``members`` truthfully, then apply ``patch``."""
    entries = []
    for m in members:
        if not m.in_manifest:
            continue
        try:
            path = m.raw_name.decode("utf-8").rstrip("/")
        except UnicodeDecodeError:
            continue
        kind = _kind(m)
        entry: dict[str, Any] = {
            "path": path,
            "type": kind,
            "size": 0 if kind == "dir" else m.declared_size,
            "mode": m.mode & 0o7777,
            "mtime_ns": MTIME_NS,
            "sha256": hashlib.sha256(m.data).hexdigest() if kind == "file" else None,
            "target": m.data.decode("utf-8", "surrogateescape") if kind == "symlink" else None,
        }
        entries.append(entry)
    doc: dict[str, Any] = {
        "run_id": RUNID,
        "created": "2024-01-02T03:04:05Z",
        "comment": "",
        "tool_version": "test",
        "entries": entries,
        "external_links": [],
        "format": "runarchive/1",
    }
    if patch is not None:
        patch(doc)
    return Member(MANIFEST_NAME, json.dumps(doc).encode(), method=DEFLATED)


def build_zip(
    members: list[Member],
    *,
    with_manifest: bool = True,
    patch: Callable[[dict[str, Any]], None] | None = None,
) -> bytes:
    """Return a zip of ``members`` in order, with a manifest last when asked for."""
    zb = ZipBuilder()
    for m in members:
        zb.add(m)
    if with_manifest:
        zb.add(manifest_for(members, patch))
    return zb.finish()


def place(run: Path, data: bytes, name: str = ARCHIVE_NAME) -> str:
    """Store ``data`` as archive ``name`` of the run and return the name."""
    folder = run / "archives"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    return name
