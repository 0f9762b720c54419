"""The manifest: a JSON entry inside every archive describing the snapshot.

It is the archive's own table of contents with checksums, so a restore can prove every byte
and later features (diff against the live run, single-file download) need no format change:
each entry carries its path, type, size, mode, mtime and sha256, and the zip's central
directory gives where its bytes live.

Files also carry their CRC-32 (``crc32``, as in the zip's headers) and the ``ctime_ns`` and
``ino`` the scan saw (null where not recorded: folders,
links, followed links, files changed just before the archive was started, and every archive
written before the files cache): the next archive of the run copies a file's compressed bytes
from this one when all four of size, mtime_ns, ctime_ns and inode still match
(``filescache``). A compatible addition, so the format stays ``runarchive/1``: older readers
ignore the two keys, and archives without them simply offer nothing to reuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _escape
from typing import Any

from .errors import InvalidArchive
from .names import MANIFEST_NAME as MANIFEST_NAME  # defined there: a list needs only the name

FORMAT = "runarchive/1"

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"


@dataclass(slots=True)
class ManifestEntry:
    """One file, folder or symlink of the run."""

    path: str
    type: str
    size: int
    mode: int
    mtime_ns: int
    sha256: str | None = None
    target: str | None = None
    # The link's text when a followed link was archived as what it points to (--links=follow).
    followed_link: str | None = None
    # What the scan's lstat said, for the files cache (see the module docstring).
    ctime_ns: int | None = None
    ino: int | None = None
    # A file's CRC-32, as its zip entry's: binds this entry to the bytes the zip holds for it.
    crc32: int | None = None


@dataclass(slots=True)
class Manifest:
    """Snapshot-wide facts plus one entry per archived path, in archive order."""

    run_id: str
    created: str
    comment: str
    tool_version: str
    entries: list[ManifestEntry] = field(default_factory=list)
    external_links: list[str] = field(default_factory=list)
    format: str = FORMAT

    def to_json(self, encoded: list[bytes] | None = None) -> bytes:
        """Serialize to compact UTF-8 JSON, keys in field order.

        Written field by field with the C string escaper rather than through
        ``dataclasses.asdict`` and ``json.dumps``: the deep copy and the generic encoder took
        0.1 s for 3,000 entries. The bytes are those ``json.dumps(asdict(self),
        ensure_ascii=False, separators=(",", ":"))`` gives; a test pins both. ``encoded``, when
        given, stands for the entries: their JSON (``entry_json``) already encoded, in order,
        each piece one or more entries joined by commas (``create`` encodes them where it
        builds them, in its workers).
        """
        head = (
            f'{{"run_id":{_escape(self.run_id)},"created":{_escape(self.created)},'
            f'"comment":{_escape(self.comment)},"tool_version":{_escape(self.tool_version)},'
            '"entries":['
        )
        links = ",".join([_escape(link) for link in self.external_links])
        tail = f'],"external_links":[{links}],"format":{_escape(self.format)}}}'
        if encoded is not None:
            return head.encode() + b",".join(encoded) + tail.encode()
        entries = ",".join([_entry_json(e) for e in self.entries])
        return (head + entries + tail).encode()

    def by_path(self) -> dict[str, ManifestEntry]:
        """Index the entries by path."""
        return {e.path: e for e in self.entries}


# _escape is the C quoting json.dumps uses with ensure_ascii=False (quotes, backslash,
# control characters; everything else verbatim).
def _opt(value: str | None) -> str:
    return "null" if value is None else _escape(value)


def _opt_int(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def _entry_json(e: ManifestEntry) -> str:
    return entry_json(e.path, e.type, e.size, e.mode, e.mtime_ns, e.sha256, e.target,
                      e.followed_link, e.ctime_ns, e.ino, e.crc32)  # fmt: skip


def entry_json(
    path: str,
    kind: str,
    size: int,
    mode: int,
    mtime_ns: int,
    sha256: str | None = None,
    target: str | None = None,
    followed_link: str | None = None,
    ctime_ns: int | None = None,
    ino: int | None = None,
    crc32: int | None = None,
) -> str:
    """Return one entry's JSON, as ``ManifestEntry(path, kind, ...)`` serializes.

    Takes the fields rather than an entry so that ``create`` makes no object per file.
    """
    # int() keeps the JSON a number even if a caller passed a bool or an int subclass.
    return (
        f'{{"path":{_escape(path)},"type":{_escape(kind)},"size":{int(size)},'
        f'"mode":{int(mode)},"mtime_ns":{int(mtime_ns)},"sha256":{_opt(sha256)},'
        f'"target":{_opt(target)}'
        # Only entries made from a followed link carry it (manifests of store mode unchanged).
        + (f',"followed_link":{_escape(followed_link)}' if followed_link is not None else "")
        + f',"ctime_ns":{_opt_int(ctime_ns)},"ino":{_opt_int(ino)}'
        + f',"crc32":{_opt_int(crc32)}}}'
    )


def file_entry_json(
    path: str,
    size: int,
    mode: int,
    mtime_ns: int,
    sha256: str,
    followed_link: str | None,
    ctime_ns: int | None,
    ino: int | None,
    crc32: int,
) -> str:
    """Return a file's entry JSON, as ``entry_json(path, FILE, …)`` does (a test pins it).

    One call per file with no helper calls inside: ``create`` makes one per small file, in
    its workers, and the generic one's five calls were half its cost. ``sha256`` is
    lowercase hex (computed, or validated by the files cache): nothing in it to escape.
    """
    followed = "" if followed_link is None else f',"followed_link":{_escape(followed_link)}'
    return (
        f'{{"path":{_escape(path)},"type":"file","size":{int(size)},"mode":{int(mode)},'
        f'"mtime_ns":{int(mtime_ns)},"sha256":"{sha256}","target":null{followed},'
        f'"ctime_ns":{"null" if ctime_ns is None else int(ctime_ns)},'
        f'"ino":{"null" if ino is None else int(ino)},"crc32":{int(crc32)}}}'
    )


def parse_manifest(data: bytes) -> Manifest:
    """Parse and type-check a manifest, raising InvalidArchive on anything malformed."""
    try:
        raw: Any = json.loads(data)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {raw.get('format')!r}")
        entries = _parse_entries(raw["entries"])
        return Manifest(
            run_id=str(raw["run_id"]),
            created=str(raw["created"]),
            comment=str(raw.get("comment", "")),
            tool_version=str(raw.get("tool_version", "")),
            entries=entries,
            external_links=[str(x) for x in raw.get("external_links", [])],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArchive(f"Manifest is malformed: {exc}") from exc


_KINDS = frozenset((FILE, DIR, SYMLINK))


def _parse_entries(items: Any) -> list[ManifestEntry]:
    """Type-check every entry and build it (the first request of a diff parses them all).

    One loop with the checks inline: a call per entry and per checked field was most of a
    30,000-entry manifest's parse. ``type(x) is int`` is the check: what ``json.loads`` gives
    for a JSON integer is exactly ``int`` (``true``/``false`` are ``bool``, refused).
    """
    if not isinstance(items, list):
        raise ValueError("entries is not a list")
    out: list[ManifestEntry] = []
    append, kinds, make = out.append, _KINDS, ManifestEntry
    for raw in items:
        if type(raw) is not dict:
            raise ValueError("entry is not an object")
        kind, size, mode, mtime = raw["type"], raw["size"], raw["mode"], raw["mtime_ns"]
        if kind not in kinds:
            raise ValueError(f"unknown entry type {kind!r}")
        sha = raw.get("sha256")
        if kind == FILE and not (type(sha) is str and len(sha) == 64):
            raise ValueError(f"file {raw['path']!r} has no sha256")
        if type(size) is not int or type(mode) is not int or type(mtime) is not int:
            for key in ("size", "mode", "mtime_ns"):
                if type(raw[key]) is not int:
                    raise ValueError(f"{key} of {raw['path']!r} is not an integer")
        # The files cache's fields (absent from older archives and from folders and links).
        ctime, ino, crc = raw.get("ctime_ns"), raw.get("ino"), raw.get("crc32")
        if (
            (ctime is not None and type(ctime) is not int)
            or (ino is not None and type(ino) is not int)
            or (crc is not None and type(crc) is not int)
        ):
            raise ValueError(f"ctime_ns, ino or crc32 of {raw['path']!r} is not an integer")
        path, target, followed = raw["path"], raw.get("target"), raw.get("followed_link")
        append(
            make(
                path if type(path) is str else str(path),
                kind,
                size,
                mode,
                mtime,
                sha,
                None if target is None else str(target),
                None if followed is None else str(followed),
                ctime,
                ino,
                crc,
            )
        )
    return out
