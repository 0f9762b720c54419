"""restore(archive(tree)) reproduces the tree: bytes, empty dirs, modes, mtimes, symlinks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runarchive.core import create_archive, restore_archive, verify_archive
from tests.support.tree import Dir, File, Link, Spec, build_tree, snapshot

NAME_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x00", min_codepoint=32
)
segment = st.text(NAME_CHARS, min_size=1, max_size=12).filter(
    lambda s: s not in {".", ".."} and len(s.encode()) < 200
)
mtimes = st.integers(min_value=315_532_800 * 10**9, max_value=4_000_000_000 * 10**9)
files = st.builds(
    File,
    data=st.one_of(st.binary(max_size=3000), st.text(max_size=2000).map(str.encode)),
    mode=st.sampled_from([0o644, 0o600, 0o755, 0o444, 0o640]),
    mtime_ns=mtimes,
)
dirs = st.builds(Dir, mode=st.sampled_from([0o755, 0o700, 0o750]), mtime_ns=mtimes)


@st.composite
def trees(draw: st.DrawFn) -> Spec:
    paths = draw(st.lists(st.lists(segment, min_size=1, max_size=3), min_size=1, max_size=12))
    spec: Spec = {}
    taken: set[str] = set()
    for parts in paths:
        rel = "/".join(parts)
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if rel in taken or prefixes & {p for p, n in spec.items() if not isinstance(n, Dir)}:
            continue
        if any(p.startswith(rel + "/") for p in taken) or parts[0] in {"archives", ".runarchive"}:
            continue
        taken.add(rel)
        taken.update(prefixes)
        for prefix in prefixes:
            spec.setdefault(prefix, Dir())
        kind = draw(st.sampled_from(["file", "file", "dir", "link"]))
        if kind == "file":
            spec[rel] = draw(files)
        elif kind == "dir":
            spec[rel] = draw(dirs)
        else:
            spec[rel] = Link(draw(st.sampled_from(["../x", "target.txt", "a/b", "."])))
    return spec


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=trees())
def test_restore_reproduces_any_tree_exactly(tmp_path: Path, spec: Spec) -> None:
    root = tmp_path / "runs"
    shutil.rmtree(root, ignore_errors=True)
    run = build_tree(root / "r1", spec)
    before = snapshot(run)
    result = create_archive(run, "prop")
    for child in run.iterdir():
        if child.name not in {"archives", ".runarchive"}:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    (run / "junk.txt").write_text("added after the snapshot")
    restore_archive(run, result.name, allow_external_links=True)
    assert snapshot(run) == before
    assert verify_archive(run, result.name).ok


def test_restore_brings_back_files_dirs_links_modes_and_mtimes(run_dir: Path) -> None:
    spec: Spec = {
        "wepp/output/H1.pass.dat": File(b"1.0 2.0 3.0\n" * 500, 0o640, 1_700_000_000_987_654_321),
        "wepp/empty": Dir(0o750, 1_650_000_000_000_000_000),
        "zero.bin": File(b"", 0o600),
        "Ünïcödé ✓ name.txt": File("χαίρετε".encode(), 0o644),
        "with space/and'quote\".txt": File(b"odd"),
        "link-rel": Link("wepp/output/H1.pass.dat"),
        "link-dangling": Link("nowhere/at/all"),
        "wepp.nodb": File(b'{"py/object": "wepppy.nodb.Wepp"}'),
    }
    build_tree(run_dir, spec)
    before = snapshot(run_dir)
    name = create_archive(run_dir, "everything").name
    (run_dir / "wepp.nodb").write_text("changed")
    shutil.rmtree(run_dir / "wepp")
    (run_dir / "new-file").write_text("new")
    restore_archive(run_dir, name)
    assert snapshot(run_dir) == before


def test_setuid_setgid_and_sticky_bits_are_not_restored(run_dir: Path) -> None:
    build_tree(run_dir, {"tool": File(b"#!/bin/sh\n", 0o755), "shared": Dir(0o755)})
    os.chmod(run_dir / "tool", 0o6755)
    os.chmod(run_dir / "shared", 0o1777)
    name = create_archive(run_dir).name
    restore_archive(run_dir, name)
    assert (run_dir / "tool").stat().st_mode & 0o7777 == 0o755
    assert (run_dir / "shared").stat().st_mode & 0o7777 == 0o777


def test_absolute_link_inside_the_run_is_stored_relative(run_dir: Path) -> None:
    build_tree(run_dir, {"data/dem.tif": File(b"tif")})
    os.symlink(run_dir / "data" / "dem.tif", run_dir / "dem-link")
    result = create_archive(run_dir)
    assert result.external_links == []
    restore_archive(run_dir, result.name)
    assert os.readlink(run_dir / "dem-link") == "data/dem.tif"
    assert (run_dir / "dem-link").read_bytes() == b"tif"


@pytest.mark.slow
def test_large_file_over_100_mb_round_trips_and_unzip_accepts_it(run_dir: Path) -> None:
    block = os.urandom(1 << 20)
    text = b"".join(b"%08d 0.%06d 12.5 -3.25\n" % (i, i * 7 % 999_999) for i in range(40_000))
    with open(run_dir / "big.dat", "wb") as fh:
        for i in range(110):
            fh.write(block if i % 3 == 0 else text[: 1 << 20])
    before = snapshot(run_dir)
    result = create_archive(run_dir)
    (run_dir / "big.dat").write_bytes(b"truncated")
    restore_archive(run_dir, result.name)
    assert snapshot(run_dir) == before
    out = subprocess.run(["unzip", "-tq", str(result.path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_unchanged_files_are_reused_and_changed_ones_extracted(run_dir: Path) -> None:
    spec: Spec = {f"out/H{i}.dat": File(b"%d\n" % i * 500) for i in range(20)}
    build_tree(run_dir, spec)
    before = snapshot(run_dir)
    name = create_archive(run_dir).name
    # Same size and mtime but different bytes: only the checksum can tell.
    sneaky = run_dir / "out/H3.dat"
    st = sneaky.stat()
    sneaky.write_bytes(sneaky.read_bytes().replace(b"3", b"4"))
    os.utime(sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))
    (run_dir / "out/H4.dat").write_text("edited")
    result = restore_archive(run_dir, name)
    assert snapshot(run_dir) == before
    assert result.reused == 18


def test_reuse_never_follows_a_symlinked_folder_out_of_the_run(
    run_dir: Path, tmp_path: Path
) -> None:
    build_tree(run_dir, {"data/a.txt": File(b"inside")})
    name = create_archive(run_dir).name
    outside = tmp_path / "outside"
    build_tree(outside, {"a.txt": File(b"inside")})
    shutil.rmtree(run_dir / "data")
    os.symlink(outside, run_dir / "data")
    result = restore_archive(run_dir, name)
    assert result.reused == 0
    assert not (run_dir / "data").is_symlink()
    assert (run_dir / "data/a.txt").read_bytes() == b"inside"
    assert (outside / "a.txt").stat().st_nlink == 1


def test_deferred_delete_parks_the_old_tree_until_purged(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runarchive.core import purge_trash

    monkeypatch.setenv("RUNARCHIVE_UNDO_TTL", "0")  # kept for undo otherwise (test_undo.py)
    build_tree(run_dir, {"a.txt": File(b"a")})
    name = create_archive(run_dir).name
    (run_dir / "b.txt").write_text("b")
    restore_archive(run_dir, name, defer_delete=True)
    # Out of the run's tree at once: the run is exactly the archive before the purge.
    assert sorted(p.name for p in run_dir.iterdir()) == ["a.txt", "archives"]
    work = run_dir / "archives" / ".runarchive"
    parked = [p.name for p in work.iterdir() if p.name.startswith("trash-")]
    assert len(parked) == 1
    assert (work / parked[0] / "b.txt").read_text() == "b"
    assert purge_trash(run_dir) == 1
    assert sorted(p.name for p in run_dir.iterdir()) == ["a.txt", "archives"]
    assert sorted(p.name for p in (run_dir / "archives" / ".runarchive").iterdir()) == ["lock"]
