"""The manifest's serializer (same bytes as the reflective one it replaced), a round trip, and
the parser's refusals."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from runarchive.core.errors import InvalidArchive
from runarchive.core.manifest import (
    DIR,
    FILE,
    SYMLINK,
    Manifest,
    ManifestEntry,
    entry_json,
    file_entry_json,
    parse_manifest,
)


def _sample() -> Manifest:
    return Manifest(
        run_id="wepp;;run-1",
        created="2026-12-01T10:00:00Z",
        comment='café ✓ "quoted" \\ tab\t',
        tool_version="0.1.0",
        entries=[
            ManifestEntry("dem", DIR, 0, 0o755, 1_700_000_000_000_000_000),
            ManifestEntry("dem/dem.tif", FILE, 12, 0o644, 1_700_000_000_123_456_789, "a" * 64),
            ManifestEntry("wepp/é ü/H1.pass", FILE, 0, 0o600, 0, "0" * 64),
            ManifestEntry("latest", SYMLINK, 4, 0o777, 5, target="dem/"),
            ManifestEntry(
                "climate.cli", FILE, 3, 0o644, 6, "b" * 64, followed_link="../../climate/x.cli"
            ),
        ],
        external_links=["escape -> /etc/passwd"],
    )


def _reflective_json(manifest: Manifest) -> bytes:
    """The serializer before this change: ``dataclasses.asdict`` then compact ``json.dumps``
    (``followed_link`` dropped where unset, as that serializer did)."""
    doc = dataclasses.asdict(manifest)
    for entry in doc["entries"]:
        if entry["followed_link"] is None:
            del entry["followed_link"]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "strict")


def test_the_direct_serializer_writes_the_same_bytes_as_the_reflective_one() -> None:
    manifest = _sample()
    assert manifest.to_json() == _reflective_json(manifest)


def test_an_empty_manifest_serializes_as_before() -> None:
    manifest = Manifest("r", "2026-12-01T00:00:00Z", "", "0.1.0")
    assert manifest.to_json() == _reflective_json(manifest)


def test_entries_encoded_where_they_are_built_serialize_as_the_entries_do() -> None:
    # create encodes each batch's entries in its worker (entry_json, joined by commas) and
    # hands the pieces to to_json: the bytes are the entries' own.
    manifest = _sample()
    file = manifest.entries[1]
    file.ctime_ns, file.ino, file.crc32 = 1_700_000_000_000_000_001, 42, 0xFFFFFFFF
    fields = [dataclasses.astuple(e) for e in manifest.entries]  # in entry_json's order
    one = [entry_json(*f) for f in fields]
    encoded = [",".join(one[lo:hi]).encode() for lo, hi in ((0, 2), (2, 3), (3, 5))]
    bare = dataclasses.replace(manifest, entries=[])
    assert bare.to_json(encoded) == manifest.to_json() == _reflective_json(manifest)
    assert bare.to_json([]) == bare.to_json() == _reflective_json(bare)


FileFields = tuple[str, int, int, int, str, str | None, int | None, int | None, int]


@pytest.mark.parametrize(
    "fields",
    [
        ("wepp/H1.pass", 977, 0o644, 1_700_000_000_123_456_789, "a" * 64, None, None, None, 0),
        ('é "q" \\ \t', 0, 0o600, 0, "0" * 64, "../x/y.cli", 17, 42, 0xFFFFFFFF),
        ("dem.tif", 1 << 40, 0o7777, -5, "f" * 64, None, 1_600_000_000_000_000_000, 9, 1),
    ],
)
def test_a_files_entry_json_is_the_generic_one(fields: FileFields) -> None:
    path, size, mode, mtime, sha, followed, ctime, ino, crc = fields
    generic = entry_json(path, FILE, size, mode, mtime, sha, None, followed, ctime, ino, crc)
    assert file_entry_json(*fields) == generic


def test_parse_of_to_json_gives_the_manifest_back() -> None:
    manifest = _sample()
    assert parse_manifest(manifest.to_json()) == manifest


def test_a_run_sized_manifest_serializes_as_before() -> None:
    manifest = _sample()
    manifest.entries = [
        ManifestEntry(f"wepp/output/H{i}.pass", FILE, i * 977, 0o644, i * 10**9 + i, f"{i:064x}")
        for i in range(3000)
    ]
    assert manifest.to_json() == _reflective_json(manifest)
    assert parse_manifest(manifest.to_json()) == manifest


def _with_entry(**changes: object) -> bytes:
    doc = json.loads(_sample().to_json())
    doc["entries"][1].update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"size": True}, "size of 'dem/dem.tif' is not an integer"),
        ({"mode": 420.0}, "mode of 'dem/dem.tif' is not an integer"),
        ({"mtime_ns": "1"}, "mtime_ns of 'dem/dem.tif' is not an integer"),
        ({"sha256": None}, "file 'dem/dem.tif' has no sha256"),
        ({"sha256": "ab"}, "file 'dem/dem.tif' has no sha256"),
        ({"type": "fifo"}, "unknown entry type 'fifo'"),
    ],
)
def test_a_manifest_entry_of_the_wrong_shape_is_refused(
    changes: dict[str, object], words: str
) -> None:
    with pytest.raises(InvalidArchive, match=re.escape(words)):
        parse_manifest(_with_entry(**changes))


def test_entries_that_are_not_a_list_of_objects_are_refused() -> None:
    doc = json.loads(_sample().to_json())
    for bad in ({"a": 1}, "abc", [1], [None]):
        doc["entries"] = bad
        with pytest.raises(InvalidArchive, match="Manifest is malformed"):
            parse_manifest(json.dumps(doc).encode())
    del doc["entries"]
    with pytest.raises(InvalidArchive, match="Manifest is malformed"):
        parse_manifest(json.dumps(doc).encode())
