"""The files cache: a second archive copies unchanged files from the newest one, never a lie.

Every hostile case plants a damaged or forged newest archive, then archives the run again and
checks the new archive against the run itself, byte for byte, and with ``verify`` once the
old archive is gone (each archive stands alone).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runarchive.core import create_archive, restore_archive, verify_archive
from runarchive.core.filescache import RACY_NS
from runarchive.core.manifest import MANIFEST_NAME
from tests.support.tree import File, Link, build_tree, snapshot, tree_bytes
from tests.support.zipcraft import Member, ZipBuilder

TEXT = b"".join(b"%6d %9.3f hillslope\n" % (i, i * 0.37) for i in range(200))
BIG_TEXT = b"".join(b"%8d %12.5f %12.5f runoff\n" % (i, i / 3, i * 1.7) for i in range(90_000))
SPEC = {
    "a.txt": File(TEXT + b"A"),
    "b.txt": File(TEXT + b"B"),
    "wepp/output/H1.pass": File(TEXT * 3),
    "wepp/output/big.dat": File(BIG_TEXT),  # more than one chunk: reused whole
    "rasters/dem.tif": File(os.urandom(70_000)),  # stored
    "empty.txt": File(b""),
    "latest": Link("wepp/output"),
}
FILES = sum(1 for node in SPEC.values() if isinstance(node, File))


@pytest.fixture
def aged_run(run_dir: Path) -> Path:
    """The run of ``SPEC``, its files' ctimes past the racy window before it is archived."""
    build_tree(run_dir, SPEC)
    assert len(BIG_TEXT) > 1 << 20
    time.sleep(RACY_NS / 1e9 + 0.2)
    return run_dir


def _contents(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {
            i.filename: zf.read(i)
            for i in zf.infolist()
            if i.filename != MANIFEST_NAME and not i.is_dir() and (i.external_attr >> 28) != 0xA
        }


def _manifest(archive: Path) -> dict[str, Any]:
    with zipfile.ZipFile(archive) as zf:
        doc: dict[str, Any] = json.loads(zf.read(MANIFEST_NAME))
        return doc


def _assert_equals_the_run_alone(run: Path, archive: Path) -> None:
    """The archive holds exactly the run's files, and verifies once every other is gone."""
    run_files = {k: v for k, v in tree_bytes(run).items() if not k.startswith("archives/")}
    assert _contents(archive) == run_files
    for other in (run / "archives").glob("*.zip"):
        if other != archive:
            other.unlink()
    report = verify_archive(run, archive.name)
    assert report.ok, report.problems


def _entry_spans(data: bytes) -> dict[str, tuple[int, int, int]]:
    """Map each entry's name to (central record offset, local header offset, data offset)."""
    eocd = data.rindex(b"PK\x05\x06")
    count, _, cd_offset = struct.unpack_from("<HII", data, eocd + 10)
    out, pos = {}, cd_offset
    for _ in range(count):
        nlen, xlen, clen = struct.unpack_from("<HHH", data, pos + 28)
        local = struct.unpack_from("<I", data, pos + 42)[0]
        name = data[pos + 46 : pos + 46 + nlen].decode()
        lnlen, lxlen = struct.unpack_from("<HH", data, local + 26)
        out[name] = (pos, local, local + 30 + lnlen + lxlen)
        pos += 46 + nlen + xlen + clen
    return out


def _patch(
    archive: Path, edit: Callable[[bytearray, dict[str, tuple[int, int, int]]], None]
) -> None:
    data = bytearray(archive.read_bytes())
    edit(data, _entry_spans(bytes(data)))
    archive.write_bytes(bytes(data))


def _rebuild(archive: Path, edit: Callable[[list[Member], dict[str, Any]], None]) -> None:
    """Rewrite ``archive`` entry by entry (raw compressed bytes kept) after ``edit``."""
    raw = archive.read_bytes()
    spans = _entry_spans(raw)
    members: list[Member] = []
    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read(MANIFEST_NAME))
        for info in zf.infolist():
            if info.filename == MANIFEST_NAME:
                continue
            start = spans[info.filename][2]
            payload = raw[start : start + info.compress_size]
            members.append(Member(info.filename, zf.read(info), mode=info.external_attr >> 16,
                                  method=info.compress_type, payload=payload))  # fmt: skip
    edit(members, manifest)
    zb = ZipBuilder()
    for m in members:
        zb.add(m)
    zb.add(Member(MANIFEST_NAME, json.dumps(manifest).encode(), method=8))
    archive.write_bytes(zb.finish())


def test_a_second_archive_of_an_unchanged_run_copies_every_file_and_equals_it(
    aged_run: Path,
) -> None:
    first = create_archive(aged_run)
    assert first.reused == 0
    facts = {e["path"]: e for e in _manifest(first.path)["entries"]}
    st = os.lstat(aged_run / "a.txt")
    assert (facts["a.txt"]["ctime_ns"], facts["a.txt"]["ino"]) == (st.st_ctime_ns, st.st_ino)
    assert facts["latest"]["ino"] is None and facts["wepp"]["ctime_ns"] is None
    with zipfile.ZipFile(first.path) as zf:
        crcs = {i.filename: i.CRC for i in zf.infolist() if not i.is_dir()}
    assert all(e["crc32"] == crcs[e["path"]] for e in facts.values() if e["type"] == "file")
    second = create_archive(aged_run)
    assert second.reused == FILES == second.files
    assert _manifest(second.path)["entries"] == _manifest(first.path)["entries"]
    _assert_equals_the_run_alone(aged_run, second.path)


def test_without_reuse_every_file_is_read_and_the_archive_holds_the_same_bytes(
    aged_run: Path,
) -> None:
    create_archive(aged_run)
    fresh = create_archive(aged_run, reuse=False)
    assert fresh.reused == 0
    reused = create_archive(aged_run)
    assert reused.reused == FILES
    assert _contents(fresh.path) == _contents(reused.path)


def test_a_file_rewritten_with_its_size_and_mtime_restored_is_read_again(aged_run: Path) -> None:
    create_archive(aged_run)
    path = aged_run / "a.txt"
    before = os.lstat(path)
    path.write_bytes(TEXT + b"Z")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.lstat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino
    )  # fmt: skip
    assert after.st_ctime_ns != before.st_ctime_ns
    second = create_archive(aged_run)
    assert second.reused == FILES - 1
    assert _contents(second.path)["a.txt"] == TEXT + b"Z"
    _assert_equals_the_run_alone(aged_run, second.path)


def test_files_changed_just_before_an_archive_are_not_recorded_for_reuse(run_dir: Path) -> None:
    build_tree(run_dir, SPEC)
    first = create_archive(run_dir)
    assert all(e["ctime_ns"] is None and e["ino"] is None
               for e in _manifest(first.path)["entries"])  # fmt: skip
    assert create_archive(run_dir).reused == 0


def _flip_data_byte(name: str) -> Callable[[bytearray, dict[str, tuple[int, int, int]]], None]:
    def edit(data: bytearray, spans: dict[str, tuple[int, int, int]]) -> None:
        data[spans[name][2] + 5] ^= 0x55

    return edit


def _wrong_central_crc(name: str) -> Callable[[bytearray, dict[str, tuple[int, int, int]]], None]:
    def edit(data: bytearray, spans: dict[str, tuple[int, int, int]]) -> None:
        data[spans[name][0] + 16] ^= 0x01

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        _flip_data_byte("a.txt"),
        _flip_data_byte("wepp/output/big.dat"),
        _flip_data_byte("rasters/dem.tif"),
        _wrong_central_crc("wepp/output/H1.pass"),
    ],
    ids=["deflated", "deflated-multichunk", "stored", "central-crc"],
)
def test_an_entry_whose_crc_fails_is_read_from_the_run_instead(
    aged_run: Path, edit: Callable[[bytearray, dict[str, tuple[int, int, int]]], None]
) -> None:
    first = create_archive(aged_run)
    _patch(first.path, edit)
    second = create_archive(aged_run)
    assert second.reused == FILES - 1
    _assert_equals_the_run_alone(aged_run, second.path)


def _point_at(
    name: str, other: str
) -> Callable[[bytearray, dict[str, tuple[int, int, int]]], None]:
    def edit(data: bytearray, spans: dict[str, tuple[int, int, int]]) -> None:
        struct.pack_into("<I", data, spans[name][0] + 42, spans[other][1])

    return edit


def _csize_past_the_end(name: str) -> Callable[[bytearray, dict[str, tuple[int, int, int]]], None]:
    def edit(data: bytearray, spans: dict[str, tuple[int, int, int]]) -> None:
        struct.pack_into("<I", data, spans[name][0] + 20, len(data) * 2)

    return edit


def _offset_past_the_end(name: str) -> Callable[[bytearray, dict[str, tuple[int, int, int]]], None]:
    def edit(data: bytearray, spans: dict[str, tuple[int, int, int]]) -> None:
        struct.pack_into("<I", data, spans[name][0] + 42, len(data) + 100)

    return edit


def _swap_names(one: str, two: str) -> Callable[[bytearray, dict[str, tuple[int, int, int]]], None]:
    assert len(one) == len(two)

    def edit(data: bytearray, spans: dict[str, tuple[int, int, int]]) -> None:
        for central, local in ((spans[one][0], spans[one][1]), (spans[two][0], spans[two][1])):
            for at in (central + 46, local + 30):
                old = bytes(data[at : at + len(one)])
                data[at : at + len(one)] = (two if old == one.encode() else one).encode()

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        _point_at("b.txt", "a.txt"),
        _csize_past_the_end("a.txt"),
        _offset_past_the_end("b.txt"),
        _swap_names("a.txt", "b.txt"),
    ],
    ids=["overlapping-offsets", "size-past-the-end", "offset-past-the-end", "names-swapped"],
)
def test_a_newest_archive_with_a_bad_layout_offers_nothing(
    aged_run: Path, edit: Callable[[bytearray, dict[str, tuple[int, int, int]]], None]
) -> None:
    first = create_archive(aged_run)
    _patch(first.path, edit)
    second = create_archive(aged_run)
    assert second.reused == 0
    _assert_equals_the_run_alone(aged_run, second.path)


def test_entries_swapped_in_the_zip_but_not_in_the_manifest_are_not_offered(
    aged_run: Path,
) -> None:
    # The zip is consistent (names, CRCs, layout) but a.txt's entry holds b.txt's bytes, while
    # the manifest still gives a.txt its own facts, crc32 and sha256.
    first = create_archive(aged_run)

    def edit(members: list[Member], manifest: dict[str, Any]) -> None:
        a = next(m for m in members if m.name == "a.txt")
        b = next(m for m in members if m.name == "b.txt")
        a.data, a.payload, b.data, b.payload = b.data, b.payload, a.data, a.payload

    _rebuild(first.path, edit)
    second = create_archive(aged_run)
    assert second.reused == FILES - 2
    _assert_equals_the_run_alone(aged_run, second.path)


def test_a_manifest_claiming_a_matching_inode_for_a_different_file_is_not_believed(
    aged_run: Path,
) -> None:
    # a.txt's entry holds b.txt's old bytes, consistently (CRC, sha256), and claims b.txt's
    # inode and ctime: only a.txt's own facts may let its bytes be reused.
    first = create_archive(aged_run)
    b_st = os.lstat(aged_run / "b.txt")

    def edit(members: list[Member], manifest: dict[str, Any]) -> None:
        a = next(m for m in members if m.name == "a.txt")
        b = next(m for m in members if m.name == "b.txt")
        a.data, a.payload = b.data, b.payload
        entries = {e["path"]: e for e in manifest["entries"]}
        entries["a.txt"].update(sha256=entries["b.txt"]["sha256"], ino=b_st.st_ino,
                                ctime_ns=b_st.st_ctime_ns)  # fmt: skip
        entries["b.txt"].update(ino=None, ctime_ns=None)

    _rebuild(first.path, edit)
    second = create_archive(aged_run)
    assert second.reused == FILES - 2
    assert _contents(second.path)["a.txt"] == TEXT + b"A"
    _assert_equals_the_run_alone(aged_run, second.path)


def test_a_rebuilt_but_faithful_archive_is_still_reused(aged_run: Path) -> None:
    # The control for the two cases above: the same rebuild with no edit reuses every file.
    first = create_archive(aged_run)
    _rebuild(first.path, lambda members, manifest: None)
    second = create_archive(aged_run)
    assert second.reused == FILES
    _assert_equals_the_run_alone(aged_run, second.path)


def test_only_the_newest_archive_is_a_source_and_a_planted_one_offers_nothing(
    aged_run: Path,
) -> None:
    first = create_archive(aged_run)
    newest = aged_run / "archives" / f"{aged_run.name}.29990101T000000Z.zip"
    newest.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip, no manifest
    assert create_archive(aged_run).reused == 0
    newest.unlink()
    newest.symlink_to(first.path)  # a link is never opened
    second = create_archive(aged_run)
    assert second.reused == 0
    newest.unlink()
    _assert_equals_the_run_alone(aged_run, second.path)


def test_an_archive_of_another_run_offers_nothing(aged_run: Path) -> None:
    first = create_archive(aged_run)
    _rebuild(first.path, lambda members, manifest: manifest.update(run_id="someone-else"))
    assert create_archive(aged_run).reused == 0


@pytest.mark.parametrize(
    "edit",
    [
        lambda entries: entries.__setitem__(1, dict(entries[0])),  # a path twice
        lambda entries: entries.__setitem__(0, ["not", "an", "object"]),
        lambda entries: entries.reverse(),  # not in the central directory's order
        lambda entries: entries.pop(),  # one entry fewer than the zip holds
    ],
    ids=["path-twice", "not-an-object", "other-order", "entry-missing"],
)
def test_a_manifest_that_does_not_describe_the_zip_entry_by_entry_offers_nothing(
    aged_run: Path, edit: Callable[[list[Any]], None]
) -> None:
    first = create_archive(aged_run)
    _rebuild(first.path, lambda members, manifest: edit(manifest["entries"]))
    second = create_archive(aged_run)
    assert second.reused == 0
    _assert_equals_the_run_alone(aged_run, second.path)


def test_a_reused_archive_restores_the_run_exactly_once_its_source_is_gone(aged_run: Path) -> None:
    before = snapshot(aged_run)
    first = create_archive(aged_run)
    second = create_archive(aged_run)
    assert second.reused == FILES
    first.path.unlink()
    for child in aged_run.iterdir():
        if child.name != "archives":
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    restore_archive(aged_run, second.name)
    assert snapshot(aged_run) == before
