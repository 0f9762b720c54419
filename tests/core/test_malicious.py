"""A malicious-archive corpus, generated here: restore refuses each one before touching the run.

One case per Safety item of the issue. Each archive is built byte by byte (``_zipcraft``) so it
can lie where ``zipfile`` would not let it, and most are tried twice: dressed up with a truthful
runarchive manifest (so the defect under test is the only one) and as a plain zip from another
tool. For each we assert the exception class, that the message names the problem, that the run
and its archives are unchanged byte for byte, that nothing appeared outside the run, and that no
stage or journal is left in ``.runarchive/``.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runarchive.core import (
    DamagedArchive,
    InvalidArchive,
    LimitExceeded,
    Limits,
    UnsafeArchive,
    create_archive,
    restore_archive,
    verify_archive,
)
from runarchive.core.manifest import MANIFEST_NAME
from tests.support.tree import Dir, File, Link, build_tree, snapshot, tree_bytes
from tests.support.zipcraft import (
    DEFLATED,
    Member,
    ZipBuilder,
    build_zip,
    deflate,
    file,
    folder,
    manifest_for,
    place,
    symlink,
    zero_bomb,
)

TOKEN = "runarchive-evil-7f3a"
OLD_RUN = {
    "notes.txt": File(b"keep me\n"),
    "wepp": Dir(),
    "wepp/output": Dir(),
    "wepp/output/H1.pass.dat": File(b"0.000 1.000\n" * 200, mode=0o640),
    "empty": Dir(0o700),
    "latest": Link("wepp/output/H1.pass.dat"),
}
OUTSIDE_PLACES = ("/", "/tmp", "/etc")


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------

Build = Callable[[bool], bytes]


@dataclass(frozen=True)
class Case:
    """One hostile archive and how restore must refuse it."""

    id: str
    build: Build
    expect: tuple[type[InvalidArchive], ...]
    match: str
    limits: Limits | None = None
    damaged: bool = False
    variants: tuple[str, ...] = ("manifest", "plain")


def members(*ms: Member, patch: Callable[[dict[str, Any]], None] | None = None) -> Build:
    """Return a builder of a zip holding ``ms`` (plus a truthful manifest when asked)."""
    return lambda with_manifest: build_zip(list(ms), with_manifest=with_manifest, patch=patch)


def _overlap_same_header(with_manifest: bool) -> bytes:
    m = file("data.txt", b"x" * 100)
    zb = ZipBuilder()
    offset = zb.add(m)
    zb.add_central(m, offset)  # a second central record pointing at the same local header
    if with_manifest:
        zb.add(manifest_for([m]))
    return zb.finish()


def _overlap_renamed_alias(with_manifest: bool) -> bytes:
    m = file("data.txt", b"x" * 100)
    alias = file("alias.txt", b"x" * 100)
    zb = ZipBuilder()
    offset = zb.add(m)
    zb.add_central(alias, offset)
    if with_manifest:
        zb.add(manifest_for([m, alias]))
    return zb.finish()


def _overlap_nested(with_manifest: bool) -> bytes:
    # The "overlapping files" bomb: the outer entry's data span covers the inner entry's
    # local header and data, so the same bytes would be extracted twice.
    inner = file("inner.txt", b"i" * 300)
    zb = ZipBuilder()
    outer_local = file("outer.txt", b"")
    outer_offset = zb.add_local(outer_local)
    inner_offset = zb.add_local(inner)
    span = bytes(zb.body[inner_offset:])
    outer = file("outer.txt", span)
    zb.add_central(outer, outer_offset, csize=len(span), crc=zlib.crc32(span))
    zb.add_central(inner, inner_offset)
    if with_manifest:
        zb.add(manifest_for([outer, inner]))
    return zb.finish()


def _two_manifests(with_manifest: bool) -> bytes:
    m = file("data.txt")
    zb = ZipBuilder()
    zb.add(m)
    zb.add(manifest_for([m]))
    zb.add(manifest_for([m]))
    return zb.finish()


def _truncated(keep: float) -> Build:
    def build(with_manifest: bool) -> bytes:
        data = build_zip(
            [file("a.txt", b"a" * 5000), file("b.txt", b"b" * 5000)], with_manifest=with_manifest
        )
        return data[: int(len(data) * keep)]

    return build


def _bytes_cut_from_middle(with_manifest: bool) -> bytes:
    data = build_zip(
        [file("a.txt", b"a" * 5000), file("b.txt", b"b" * 5000)], with_manifest=with_manifest
    )
    return data[:3000] + data[3500:]


def _patch_entry(path: str, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def patch(doc: dict[str, Any]) -> None:
        for entry in doc["entries"]:
            if entry["path"] == path:
                entry.update(changes)

    return patch


def _add_ghost(doc: dict[str, Any]) -> None:
    doc["entries"].append(
        {
            "path": "ghost.txt",
            "type": "file",
            "size": 3,
            "mode": 0o644,
            "mtime_ns": 0,
            "sha256": "0" * 64,
            "target": None,
        }
    )


def _malformed_manifest(with_manifest: bool) -> bytes:
    zb = ZipBuilder()
    zb.add(file("data.txt"))
    zb.add(Member(MANIFEST_NAME, b'{"format": "runarchive/1", "entries": [', method=DEFLATED))
    return zb.finish()


ZEROS_8M = bytes(8 << 20)
TEXTY = b"".join(b"%08d 0.000000 0.000000 0.000000\n" % (i % 10) for i in range(40_000))

CASES = [
    # Path traversal and names that are not plain relative paths.
    Case("traversal-dotdot", members(file(f"../{TOKEN}-dotdot")), (UnsafeArchive,), r"'\.\.'"),
    Case("traversal-nested", members(file(f"a/../../{TOKEN}-nested")), (UnsafeArchive,), r"'\.\.'"),
    Case("traversal-dot", members(file(f"./{TOKEN}-dot")), (UnsafeArchive,), r"'\.'"),
    Case("traversal-empty-segment", members(file(f"a//{TOKEN}")), (UnsafeArchive,), "empty"),
    Case("absolute-tmp", members(file(f"/tmp/{TOKEN}-abs")), (UnsafeArchive,), "absolute"),
    Case("absolute-etc", members(file(f"/etc/{TOKEN}-abs")), (UnsafeArchive,), "absolute"),
    Case("drive-letter-slash", members(file(f"C:/{TOKEN}-drive")), (UnsafeArchive,), "absolute"),
    Case("drive-letter-relative", members(file(f"C:{TOKEN}-drive")), (UnsafeArchive,), "absolute"),
    Case(
        "backslash-traversal", members(file(f"..\\..\\{TOKEN}-bs")), (UnsafeArchive,), "backslash"
    ),
    Case("backslash-plain", members(file("wepp\\output.txt")), (UnsafeArchive,), "backslash"),
    Case(
        "nul-in-name",
        members(file(f"ok.txt\x00../../{TOKEN}-nul".encode())),
        (UnsafeArchive,),
        "control character",
    ),
    Case(
        "escape-in-name", members(file("bad\x1b[2Jname.txt")), (UnsafeArchive,), "control character"
    ),
    Case("newline-in-name", members(file("two\nlines.txt")), (UnsafeArchive,), "control character"),
    Case(
        "non-utf8-flagged", members(file(b"caf\xff\xfe.txt")), (UnsafeArchive,), "not valid UTF-8"
    ),
    Case("non-utf8-cp437", members(file(b"caf\x82.txt", flags=0)), (UnsafeArchive,), "non-UTF-8"),
    # Reserved folders.
    Case(
        "under-archives",
        members(file("archives/ambitious-pinecone.20990101T000000Z.zip", b"PK\x05\x06")),
        (UnsafeArchive,),
        "reserved archives/",
    ),
    Case(
        "archives-folder-itself",
        members(folder("archives")),
        (UnsafeArchive,),
        "reserved archives/",
    ),
    Case(
        "into-a-restore-stage",
        members(file(".runarchive-stage-0123456789ab/notes.txt")),
        (UnsafeArchive,),
        r"reserved \.runarchive-stage-0123456789ab/",
    ),
    Case(
        "into-a-replaced-tree",
        members(file(".runarchive-old-0123456789ab/x.txt")),
        (UnsafeArchive,),
        r"reserved \.runarchive-old-0123456789ab/",
    ),
    # Duplicates.
    Case(
        "duplicate-file",
        members(file("data.txt", b"one"), file("data.txt", b"two")),
        (UnsafeArchive,),
        "'data.txt' appears more than once",
    ),
    Case(
        "duplicate-file-and-folder",
        members(file("data"), folder("data", in_manifest=False)),
        (UnsafeArchive,),
        "'data' appears more than once",
    ),
    Case(
        "two-manifests",
        _two_manifests,
        (InvalidArchive,),
        "more than one manifest",
        variants=("manifest",),
    ),
    # Links.
    Case(
        "file-beneath-external-link",
        members(symlink("link", "/tmp"), file(f"link/{TOKEN}-beneath")),
        (UnsafeArchive,),
        "beneath 'link'",
    ),
    Case(
        "file-beneath-internal-link",
        members(folder("real"), symlink("link", "real"), file("link/inner.txt")),
        (UnsafeArchive,),
        "beneath 'link'",
    ),
    Case(
        "folder-beneath-file",
        members(file("plain"), folder("plain/sub")),
        (UnsafeArchive,),
        "beneath 'plain'",
    ),
    Case(
        "link-absolute",
        members(symlink("passwd", "/etc/passwd")),
        (UnsafeArchive,),
        "'passwd' points outside the run",
    ),
    Case(
        "link-dotdot",
        members(folder("sub"), symlink("sub/up", f"../../{TOKEN}")),
        (UnsafeArchive,),
        "'sub/up' points outside the run",
    ),
    Case(
        "link-to-run-parent",
        members(symlink("parent", "..")),
        (UnsafeArchive,),
        "points outside the run",
    ),
    Case(
        "link-backslash-target",
        members(symlink("win", "..\\..\\x")),
        (UnsafeArchive,),
        "points outside the run",
    ),
    # ``sub/up`` -> ``..`` is the run itself, so ``x`` -> ``sub/up/..`` is the run's parent,
    # although lexically ``sub/up/..`` normalises to ``sub``.
    Case(
        "link-escape-via-another-link",
        members(folder("sub"), symlink("sub/up", ".."), symlink("x", "sub/up/..")),
        (UnsafeArchive,),
        "'x' points outside the run",
    ),
    Case(
        "link-empty-target",
        members(symlink("nowhere", "")),
        (UnsafeArchive,),
        "empty or oversized target",
    ),
    Case(
        "link-target-not-as-manifest",
        members(symlink("l", "notes.txt"), patch=_patch_entry("l", target="other.txt")),
        (UnsafeArchive,),
        "target differs from the manifest",
        variants=("manifest",),
    ),
    # Special files.
    Case(
        "char-device",
        members(Member("tty", b"", stat.S_IFCHR | 0o666)),
        (UnsafeArchive,),
        "device, fifo or socket",
    ),
    Case(
        "block-device",
        members(Member("sda", b"", stat.S_IFBLK | 0o660)),
        (UnsafeArchive,),
        "device, fifo or socket",
    ),
    Case(
        "fifo",
        members(Member("pipe", b"", stat.S_IFIFO | 0o644)),
        (UnsafeArchive,),
        "device, fifo or socket",
    ),
    Case(
        "socket",
        members(Member("sock", b"", stat.S_IFSOCK | 0o644)),
        (UnsafeArchive,),
        "device, fifo or socket",
    ),
    # Limits and bombs.
    Case(
        "too-many-entries",
        members(*(file(f"f{i:02}.txt") for i in range(11))),
        (LimitExceeded,),
        "11 entries; the limit is 10",
        limits=Limits(max_entries=10),
    ),
    Case(
        "total-size-over-limit",
        members(*(file(f"f{i}.bin", b"z" * 4096) for i in range(3))),
        (LimitExceeded,),
        "12288 bytes; the limit is 10000",
        limits=Limits(max_total_bytes=10_000),
    ),
    Case(
        "entry-size-over-limit",
        members(file("big.bin", b"z" * 6000)),
        (LimitExceeded,),
        "'big.bin' is 6000 bytes; the per-entry limit is 5000",
        limits=Limits(max_entry_bytes=5000),
    ),
    Case(
        "declared-size-over-limit",
        members(file("huge.bin", b"tiny", usize=4_000_000_000)),
        (LimitExceeded,),
        "would restore 4000000000 bytes",
        limits=Limits(max_total_bytes=1 << 30),
    ),
    Case(
        "ratio-bomb-default-limit",
        members(file("zeros.bin", ZEROS_8M, method=DEFLATED)),
        (LimitExceeded,),
        r"'zeros.bin' inflates more than 500:1",
    ),
    Case(
        "ratio-over-custom-limit",
        members(file("texty.dat", TEXTY, method=DEFLATED)),
        (LimitExceeded,),
        r"inflates more than 10:1",
        limits=Limits(max_ratio=10, ratio_min_bytes=64 << 10),
    ),
    Case(
        "bomb-lying-header",
        members(file("zeros.bin", ZEROS_8M, method=DEFLATED, usize=1000)),
        (DamagedArchive, LimitExceeded),
        "zip bomb",
        damaged=True,
    ),
    # Structure.
    Case("overlap-same-header", _overlap_same_header, (UnsafeArchive,), "overlaps"),
    Case(
        "overlap-alias-other-name",
        _overlap_renamed_alias,
        (InvalidArchive, UnsafeArchive),
        "overlap|names of .* differ",
    ),
    Case("overlap-nested-span", _overlap_nested, (UnsafeArchive,), "'outer.txt' overlaps"),
    Case(
        "encrypted-flag",
        members(file("secret.txt", b"x" * 40, flags=0x801)),
        (UnsafeArchive, InvalidArchive),
        "encrypted",
    ),
    Case(
        "unsupported-method-bzip2",
        members(file("data.bz2", b"BZh9" * 10, method=12)),
        (UnsafeArchive, InvalidArchive),
        "unsupported",
    ),
    Case(
        "truncated-half",
        _truncated(0.5),
        (InvalidArchive,),
        "truncated|end of central directory",
        damaged=True,
    ),
    Case(
        "truncated-tail",
        _truncated(0.99),
        (InvalidArchive,),
        "truncated|end of central directory",
        damaged=True,
    ),
    Case(
        "bytes-cut-from-middle",
        _bytes_cut_from_middle,
        (InvalidArchive,),
        "(?i)central directory",
        damaged=True,
    ),
    # Content that does not match its checksums.
    Case(
        "crc-mismatch",
        members(file("data.txt", b"payload\n" * 100, crc=0xDEADBEEF)),
        (DamagedArchive,),
        "CRC mismatch in 'data.txt'",
        damaged=True,
    ),
    Case(
        "crc-mismatch-deflated",
        members(file("data.txt", b"payload\n" * 100, method=DEFLATED, crc=1)),
        (DamagedArchive,),
        "CRC mismatch in 'data.txt'",
        damaged=True,
    ),
    Case(
        "corrupt-deflate-stream",
        members(file("data.txt", b"x", method=DEFLATED, payload=b"\xff" * 64, usize=500)),
        (DamagedArchive,),
        "not valid deflate",
        damaged=True,
    ),
    Case(
        "sha256-mismatch",
        members(
            file("data.txt", b"payload\n", method=DEFLATED),
            patch=_patch_entry("data.txt", sha256="ab" * 32),
        ),
        (DamagedArchive,),
        "sha256 mismatch in 'data.txt'",
        damaged=True,
        variants=("manifest",),
    ),
    # Manifest inconsistent with the archive.
    Case(
        "manifest-lists-absent-file",
        members(file("data.txt"), patch=_add_ghost),
        (InvalidArchive, UnsafeArchive, DamagedArchive),
        "'ghost.txt'",
        damaged=True,
        variants=("manifest",),
    ),
    Case(
        "manifest-type-differs",
        members(file("data"), patch=_patch_entry("data", type="dir", size=0, sha256=None)),
        (InvalidArchive, UnsafeArchive, DamagedArchive),
        "'data' is a file .* dir",
        damaged=True,
        variants=("manifest",),
    ),
    Case(
        "manifest-size-differs",
        members(file("data.txt", b"1234"), patch=_patch_entry("data.txt", size=5)),
        (InvalidArchive, UnsafeArchive, DamagedArchive),
        "'data.txt' size differs",
        damaged=True,
        variants=("manifest",),
    ),
    Case(
        "entry-missing-from-manifest",
        members(file("data.txt"), file("smuggled.txt", in_manifest=False)),
        (InvalidArchive, UnsafeArchive, DamagedArchive),
        "'smuggled.txt' is not in",
        damaged=True,
        variants=("manifest",),
    ),
    Case(
        "manifest-malformed",
        _malformed_manifest,
        (InvalidArchive,),
        "Manifest is malformed",
        damaged=True,
        variants=("manifest",),
    ),
]


def _params() -> Iterator[Any]:
    for case in CASES:
        for variant in case.variants:
            yield pytest.param(case, variant == "manifest", id=f"{case.id}[{variant}]")


# ---------------------------------------------------------------------------------------------
# Fixtures and checks
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def world(run_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """A populated run with a neighbouring run and a file beside them, as sentinels."""
    build_tree(run_dir, OLD_RUN)
    build_tree(tmp_path / "runs" / "neighbour", {"keep.txt": File(b"neighbour\n")})
    (tmp_path / "outside.txt").write_bytes(b"outside\n")
    yield run_dir
    for place_ in OUTSIDE_PLACES:
        for name in os.listdir(place_):
            if TOKEN in name:  # a failing case escaped: do not leave it on the host
                os.unlink(os.path.join(place_, name))


@dataclass
class Before:
    run: dict[str, tuple[object, ...]]
    archives: dict[str, bytes]
    neighbour: dict[str, bytes]
    outside: bytes


def take_before(run: Path) -> Before:
    tmp = run.parent.parent
    return Before(
        snapshot(run),
        tree_bytes(run / "archives"),
        tree_bytes(tmp / "runs" / "neighbour"),
        (tmp / "outside.txt").read_bytes(),
    )


def assert_untouched(run: Path, before: Before) -> None:
    """The run, its archives and everything around it are exactly as before."""
    tmp = run.parent.parent
    assert snapshot(run) == before.run
    assert tree_bytes(run / "archives") == before.archives
    assert tree_bytes(tmp / "runs" / "neighbour") == before.neighbour
    assert (tmp / "outside.txt").read_bytes() == before.outside
    assert sorted(os.listdir(tmp / "runs")) == ["ambitious-pinecone", "neighbour"]
    escaped = [
        os.path.join(dirpath, n)
        for dirpath, dirnames, filenames in os.walk(tmp)
        for n in dirnames + filenames
        if TOKEN in n
    ]
    places = [*OUTSIDE_PLACES, tmp.parent, tmp.parent.parent]
    escaped += [os.path.join(p, n) for p in places for n in os.listdir(p) if TOKEN in n]
    assert escaped == []
    work = run / ".runarchive"
    leftovers = [n for n in os.listdir(work) if n != "lock"] if work.exists() else []
    assert leftovers == [], "restore left a stage, old tree or journal behind"


def assert_verify_finds_damage(run: Path, name: str) -> None:
    try:
        report = verify_archive(run, name)
    except InvalidArchive:
        return
    assert not report.ok
    assert report.problems


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "with_manifest"), list(_params()))
def test_restore_refuses_hostile_archive_and_changes_nothing(
    case: Case, with_manifest: bool, world: Path
) -> None:
    name = place(world, case.build(with_manifest))
    before = take_before(world)

    with pytest.raises(InvalidArchive) as caught:
        restore_archive(world, name, limits=case.limits)

    assert type(caught.value) in case.expect, f"{type(caught.value).__name__}: {caught.value}"
    assert re.search(case.match, str(caught.value)), str(caught.value)
    assert_untouched(world, before)
    if case.damaged:
        assert_verify_finds_damage(world, name)
        assert_untouched(world, before)


def test_external_link_is_refused_by_default_and_restored_when_allowed(world: Path) -> None:
    build_tree(world, {"ext": Link("/etc/hostname"), "up": Link(f"../../{TOKEN}-target")})
    created = create_archive(world)
    assert sorted(created.external_links) == [
        "ext -> /etc/hostname",
        f"up -> ../../{TOKEN}-target",
    ]
    wanted = snapshot(world)
    (world / "ext").unlink()
    (world / "notes.txt").write_bytes(b"changed\n")
    before = take_before(world)

    with pytest.raises(UnsafeArchive, match="points outside the run"):
        restore_archive(world, created.name)
    assert_untouched(world, before)

    result = restore_archive(world, created.name, allow_external_links=True)

    assert result.had_manifest
    assert os.readlink(world / "ext") == "/etc/hostname"
    assert os.readlink(world / "up") == f"../../{TOKEN}-target"
    assert snapshot(world) == wanted


def test_plain_link_zip_restores_external_link_only_when_allowed(world: Path) -> None:
    name = place(world, build_zip([symlink("host", "/etc/hostname")], with_manifest=False))
    before = take_before(world)
    with pytest.raises(UnsafeArchive, match="'host' points outside the run"):
        restore_archive(world, name)
    assert_untouched(world, before)

    restore_archive(world, name, allow_external_links=True)

    assert os.readlink(world / "host") == "/etc/hostname"
    assert sorted(os.listdir(world)) == ["archives", "host"]


def _plain_zip(path: Path) -> None:
    """Write a zip the way another tool would: stdlib zipfile, no manifest."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("results/", date_time=(2021, 5, 6, 7, 8, 10))
        info.external_attr = (stat.S_IFDIR | 0o750) << 16 | 0x10
        zf.writestr(info, b"")
        info = zipfile.ZipInfo("results/summary.csv", date_time=(2021, 5, 6, 7, 8, 10))
        info.external_attr = (stat.S_IFREG | 0o640) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, b"year,runoff\n2001,12.5\n" * 100)
        info = zipfile.ZipInfo("readme.txt", date_time=(2022, 1, 2, 3, 4, 6))
        info.external_attr = (stat.S_IFREG | 0o4755) << 16  # setuid must not survive
        zf.writestr(info, b"made elsewhere\n")


def test_plain_zip_from_another_tool_restores_after_checks_with_a_warning(world: Path) -> None:
    name = "ambitious-pinecone.20210506T070810Z.zip"
    (world / "archives").mkdir()
    _plain_zip(world / "archives" / name)

    report = verify_archive(world, name)
    assert report.ok and not report.has_manifest
    assert any("no runarchive manifest" in p for p in report.problems)

    result = restore_archive(world, name)

    assert not result.had_manifest
    assert result.files == 2 and result.entries == 3
    assert len(result.warnings) == 1
    assert "no runarchive manifest" in result.warnings[0]
    assert "without sha256" in result.warnings[0]
    assert sorted(os.listdir(world)) == ["archives", "readme.txt", "results"]
    assert tree_bytes(world / "results") == {"summary.csv": b"year,runoff\n2001,12.5\n" * 100}
    assert (world / "readme.txt").read_bytes() == b"made elsewhere\n"
    assert stat.S_IMODE(os.stat(world / "readme.txt").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(world / "results").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(world / "results" / "summary.csv").st_mode) == 0o640


def test_plain_zip_without_folder_entries_gets_readable_folders(world: Path) -> None:
    zb = ZipBuilder()
    zb.add(file("a/b/c.txt", b"deep\n"))
    name = place(world, zb.finish())

    restore_archive(world, name)

    assert (world / "a" / "b" / "c.txt").read_bytes() == b"deep\n"
    modes = {p: stat.S_IMODE(os.stat(world / p).st_mode) for p in ("a", "a/b")}
    assert modes == {"a": 0o755, "a/b": 0o755}


@pytest.mark.skipif(not os.path.exists("/usr/bin/zip"), reason="Info-ZIP zip not installed")
def test_zip_made_by_info_zip_restores_with_a_warning(world: Path, tmp_path: Path) -> None:
    src = tmp_path / "elsewhere"
    build_tree(
        src,
        {
            "out/a.txt": File(b"alpha\n"),
            "out/b.txt": File(b"beta\n" * 1000),
            "out/link": Link("a.txt"),
            "out/empty": Dir(),
        },
    )
    name = "ambitious-pinecone.20220101T000000Z.zip"
    (world / "archives").mkdir()
    subprocess.run(
        ["zip", "-q", "-r", "-y", str(world / "archives" / name), "out"], cwd=src, check=True
    )

    result = restore_archive(world, name)

    assert not result.had_manifest and result.warnings
    assert tree_bytes(world / "out") == {"a.txt": b"alpha\n", "b.txt": b"beta\n" * 1000}
    assert os.readlink(world / "out" / "link") == "a.txt"
    assert (world / "out" / "empty").is_dir()


def test_setuid_setgid_and_sticky_bits_are_not_restored(world: Path) -> None:
    name = place(
        world,
        build_zip(
            [
                folder("shared", mode=stat.S_IFDIR | 0o1777),
                file("shared/tool", b"#!/bin/sh\n", mode=stat.S_IFREG | 0o6755),
            ]
        ),
    )

    restore_archive(world, name)

    assert stat.S_IMODE(os.stat(world / "shared").st_mode) == 0o777
    assert stat.S_IMODE(os.stat(world / "shared" / "tool").st_mode) == 0o755


def test_overlong_name_component_is_refused_as_unsafe(world: Path) -> None:
    name = place(world, build_zip([file("d/" + "n" * 300 + ".txt")]))
    before = take_before(world)

    with pytest.raises(UnsafeArchive, match=r"too long|longer"):
        restore_archive(world, name)
    assert_untouched(world, before)


BOMB_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    resource.setrlimit(resource.RLIMIT_AS, (900 << 20, 900 << 20))
    from runarchive.core import restore_archive, verify_archive
    run, name, op = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    try:
        if op == "verify":
            print("verify-ok" if verify_archive(run, name).ok else "verify-damaged")
        else:
            restore_archive(run, name)
            print("restored")
    except BaseException as exc:
        print(type(exc).__name__)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["restore", "verify"])
@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        pytest.param(1000, {"DamagedArchive", "LimitExceeded", "verify-damaged"}, id="lying"),
        pytest.param(1 << 30, {"LimitExceeded", "verify-damaged"}, id="honest"),
        pytest.param(None, {"restored", "verify-ok"}, id="control-benign"),
    ],
)
def test_one_mib_deflate_bomb_is_stopped_without_inflating_it_into_memory(
    world: Path, op: str, declared: int | None, expected: set[str]
) -> None:
    """A 1 MiB block of a 1 GiB bomb must not be inflated whole before the checks run."""
    if declared is None:
        member = file("small.txt", b"benign\n" * 1000, method=DEFLATED)
    else:
        member = file("zeros.bin", b"", method=DEFLATED, payload=zero_bomb(1024), usize=declared)
    name = place(world, build_zip([member], with_manifest=False))
    before = take_before(world)

    proc = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, str(world), name, op],
        capture_output=True,
        text=True,
        timeout=120,
    )

    outcome = proc.stdout.strip()
    assert outcome in expected, f"{outcome!r} under a 900 MiB address-space limit; {proc.stderr}"
    if declared is not None:
        assert_untouched(world, before)


def test_deflate_helper_round_trips() -> None:
    """The corpus relies on these helpers producing what they claim."""
    assert zlib.decompress(deflate(TEXTY), -15) == TEXTY
    assert zlib.decompressobj(-15).decompress(zero_bomb(2)) == bytes(2 << 20)


def test_an_archive_holding_our_state_folder_restores_without_it_and_says_so(
    run_dir: Path,
) -> None:
    # What WEPPcloud's archiver makes of a run we touched: everything but archives/.
    data = build_zip(
        [file(".runarchive/lock"), file(".runarchive/journal.json", b"{}"), file("a.txt", b"a")],
        with_manifest=False,
    )
    name = place(run_dir, data)
    result = restore_archive(run_dir, name)
    assert (run_dir / "a.txt").read_bytes() == b"a"
    assert not (run_dir / ".runarchive").exists()
    assert any("Skipped 2 entries under .runarchive/" in w for w in result.warnings)
