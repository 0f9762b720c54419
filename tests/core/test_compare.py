"""Diffs: an archive against the live run and against another archive, paging, text diffs.

The central property: for random trees and random edits, the diff lists exactly the edits
(expected buckets computed from byte-exact snapshots of the tree before and after), both
against the run and against an archive of the edited run.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runarchive.core import InvalidInput, compare, create_archive, open_archive, open_run
from runarchive.core.compare import (
    BUCKETS,
    Diff,
    Proof,
    Reason,
    diff_against_run,
    diff_archives,
    diff_text,
    page_diff,
)
from runarchive.core.errors import EntryNotFound, InvalidCursor, NotText
from runarchive.core.inside import Contents, read_contents
from runarchive.core.rundir import RunDir
from tests.support.tree import Dir, File, Link, Spec, build_tree, snapshot

T0 = 1_700_000_000_000_000_000


@contextmanager
def against_run(run: Path, name: str) -> Iterator[tuple[Contents, RunDir]]:
    with open_run(run) as handle, open_archive(handle, name) as reader:
        yield read_contents(reader), handle


def run_diff(run: Path, name: str) -> Diff:
    with against_run(run, name) as (contents, handle):
        return diff_against_run(contents, handle)


def archives_diff(run: Path, a: str, b: str) -> Diff:
    with open_run(run) as handle, open_archive(handle, a) as ra, open_archive(handle, b) as rb:
        return diff_archives(read_contents(ra), read_contents(rb))


def paths(diff: Diff) -> dict[str, list[str]]:
    return {name: [c.path for c in getattr(diff, name)] for name in BUCKETS}


BASE: Spec = {
    "a.txt": File(b"alpha\n" * 10, 0o644, T0),
    "b.bin": File(bytes(range(200)), 0o600, T0),
    "dir": Dir(0o755, T0),
    "dir/c.txt": File(b"gamma\n", 0o644, T0),
    "dir/d.txt": File(b"delta\n", 0o644, T0),
    "link": Link("dir/c.txt"),
}


@pytest.fixture
def base(run_dir: Path) -> tuple[Path, str]:
    build_tree(run_dir, BASE)
    return run_dir, create_archive(run_dir).name


def test_an_untouched_run_is_unchanged_by_metadata_without_reading_a_file(
    base: tuple[Path, str],
) -> None:
    run, name = base
    diff = run_diff(run, name)
    assert diff.total == 0 and diff.changes == 0
    assert diff.unchanged == len(BASE)
    assert diff.unchanged_by == {Proof.SHA256: 0, Proof.METADATA: 4, Proof.CRC32: 0}
    assert (diff.hashed_files, diff.hashed_bytes) == (0, 0)


def test_each_kind_of_edit_lands_in_its_bucket_with_its_reason(base: tuple[Path, str]) -> None:
    run, name = base
    (run / "a.txt").write_bytes(b"ALPHA\n" + b"alpha\n" * 9)  # same size, new content
    os.chmod(run / "b.bin", 0o644)
    (run / "dir/d.txt").write_bytes(b"delta, longer\n")
    (run / "link").unlink()
    os.symlink("a.txt", run / "link")
    (run / "new.txt").write_bytes(b"new\n")
    shutil.rmtree(run / "dir")
    (run / "dir").write_bytes(b"now a file\n")
    diff = run_diff(run, name)
    assert paths(diff) == {
        "added": ["new.txt"],
        "removed": ["dir/c.txt", "dir/d.txt"],
        "modified": ["a.txt", "b.bin", "link"],
        "type_changed": ["dir"],
    }
    reasons = {c.path: c.reason for c in diff.modified}
    assert reasons == {"a.txt": Reason.CONTENT, "b.bin": Reason.MODE, "link": Reason.TARGET}
    moved = diff.type_changed[0]
    assert (moved.type, moved.type_a, moved.size_b) == ("file", "dir", 11)
    assert diff.summary["removed"].as_json() == {"entries": 2, "files": 2, "bytes": 12}
    assert diff.summary["added"].as_json() == {"entries": 1, "files": 1, "bytes": 4}
    row = diff.as_json()["modified"][0]  # type: ignore[index]
    assert row == {
        "path": "a.txt", "type": "file", "size_a": 60, "size_b": 60,
        "mtime_a": "2023-11-14T22:13:20Z", "mtime_b": row["mtime_b"], "reason": "content",
    }  # fmt: skip


def test_a_touched_file_is_read_and_proven_unchanged_by_sha256(base: tuple[Path, str]) -> None:
    run, name = base
    os.utime(run / "a.txt", ns=(T0 + 1, T0 + 1))
    diff = run_diff(run, name)
    assert diff.changes == 0
    assert diff.unchanged_by[Proof.SHA256] == 1 and diff.unchanged_by[Proof.METADATA] == 3
    assert (diff.hashed_files, diff.hashed_bytes) == (1, 60)


def test_the_metadata_rule_cannot_see_a_rewrite_that_restores_size_mtime_and_mode(
    base: tuple[Path, str],
) -> None:
    # The documented blind spot of "same size, mtime and mode": pinned so the doc stays true.
    run, name = base
    (run / "a.txt").write_bytes(b"ALPHA\n" + b"alpha\n" * 9)
    os.utime(run / "a.txt", ns=(T0, T0))
    assert run_diff(run, name).changes == 0
    os.utime(run / "a.txt", ns=(T0 + 1, T0 + 1))
    assert paths(run_diff(run, name))["modified"] == ["a.txt"]


def test_archives_and_our_state_are_not_part_of_the_run(base: tuple[Path, str]) -> None:
    run, name = base
    create_archive(run)  # a second archive and the lock in archives/.runarchive
    (run / ".runarchive-stage-0123456789ab").mkdir()  # a restore's transient folder
    (run / ".runarchive").mkdir()  # an older version's state folder
    assert run_diff(run, name).changes == 0


def test_a_link_in_the_run_where_a_file_was_is_a_type_change_and_is_never_read(
    base: tuple[Path, str], tmp_path: Path
) -> None:
    run, name = base
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"alpha\n" * 10)  # same bytes and size as a.txt
    (run / "a.txt").unlink()
    os.symlink(secret, run / "a.txt")
    diff = run_diff(run, name)
    assert paths(diff)["type_changed"] == ["a.txt"]
    assert diff.hashed_files == 0


def test_an_archive_made_following_links_compares_with_the_run_followed(run_dir: Path) -> None:
    build_tree(run_dir, {**BASE, "dirlink": Link("dir")})
    name = create_archive(run_dir, links="follow").name
    diff = run_diff(run_dir, name)
    assert diff.changes == 0
    (run_dir / "dir/c.txt").write_bytes(b"GAMMA\n")
    assert paths(run_diff(run_dir, name))["modified"] == ["dir/c.txt", "dirlink/c.txt", "link"]


def test_two_archives_compare_by_manifest_sha256_reading_no_content(base: tuple[Path, str]) -> None:
    run, first = base
    os.utime(run / "a.txt", ns=(T0 + 9, T0 + 9))  # touched: same sha256
    (run / "b.bin").write_bytes(bytes(reversed(range(200))))
    (run / "dir/d.txt").unlink()
    second = create_archive(run).name
    diff = archives_diff(run, first, second)
    assert paths(diff) == {"added": [], "removed": ["dir/d.txt"], "modified": ["b.bin"],
                           "type_changed": []}  # fmt: skip
    assert diff.unchanged_by[Proof.SHA256] == 2 and diff.against == second


needs_zip = pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP zip")


@needs_zip
def test_an_archive_without_a_manifest_proves_unchanged_by_crc32_and_size_and_says_so(
    base: tuple[Path, str],
) -> None:
    run, ours = base
    names = sorted(p for p in BASE if p != "link")
    subprocess.run(["zip", "-q", "-y", "archives/other.zip", *names, "link"], cwd=run, check=True)
    diff = run_diff(run, "other.zip")
    assert diff.changes == 0
    assert diff.unchanged_by == {Proof.SHA256: 0, Proof.METADATA: 0, Proof.CRC32: 4}
    assert diff.hashed_files == 4
    (run / "a.txt").write_bytes(b"ALPHA\n" + b"alpha\n" * 9)
    assert paths(run_diff(run, "other.zip"))["modified"] == ["a.txt"]
    between = archives_diff(run, ours, "other.zip")
    assert between.unchanged_by[Proof.CRC32] == 4 and between.changes == 0


def test_pages_of_a_diff_join_up_to_the_whole_and_keep_the_totals(run_dir: Path) -> None:
    build_tree(run_dir, {f"f{i:02d}.txt": File(b"%d" % i, mtime_ns=T0) for i in range(30)})
    name = create_archive(run_dir).name
    for i in range(0, 30, 3):
        (run_dir / f"f{i:02d}.txt").unlink()
    for i in range(1, 30, 3):
        (run_dir / f"f{i:02d}.txt").write_bytes(b"changed")
    for i in range(7):
        (run_dir / f"g{i}.txt").write_bytes(b"new")
    whole = run_diff(run_dir, name)
    assert whole.total == 10 + 10 + 7
    rows: dict[str, list[str]] = {name: [] for name in BUCKETS}
    cursor = None
    while True:
        page = page_diff(whole, cursor, limit=4)
        assert page.summary == whole.summary and page.unchanged == whole.unchanged
        assert page.changes <= 4
        for bucket, found in paths(page).items():
            rows[bucket].extend(found)
        if (cursor := page.next) is None:
            break
    assert rows == paths(whole)
    first_cursor = page_diff(whole, limit=4).next
    other = archives_diff(run_dir, name, create_archive(run_dir).name)
    with pytest.raises(InvalidCursor):
        page_diff(other, first_cursor)
    with pytest.raises(InvalidInput):
        page_diff(whole, limit=5000)


TEXT_A = "".join(f"line {i}\n" for i in range(100))


def test_a_modified_text_file_gives_difflibs_unified_diff(base: tuple[Path, str]) -> None:
    run, _ = base
    (run / "notes.txt").write_text(TEXT_A)
    name = create_archive(run).name
    changed = TEXT_A.replace("line 50\n", "line fifty\n") + "no newline"
    (run / "notes.txt").write_text(changed)
    with against_run(run, name) as (contents, handle):
        got = diff_text(contents, "notes.txt", handle)
    expected = list(difflib.unified_diff(TEXT_A.splitlines(True), changed.splitlines(True),
                                         "a/notes.txt", "b/notes.txt"))  # fmt: skip
    assert got.lines[: len(expected) - 1] == tuple(expected[:-1])
    assert got.lines[-2:] == ("+no newline\n", "\\ No newline at end of file\n")
    assert not got.cut and got.note is None


def test_a_long_text_diff_is_cut_at_2000_lines_and_says_so(base: tuple[Path, str]) -> None:
    run, _ = base
    (run / "big.txt").write_text("".join(f"{i}\n" for i in range(5000)))
    name = create_archive(run).name
    (run / "big.txt").write_text("".join(f"{i}!\n" for i in range(5000)))
    with against_run(run, name) as (contents, handle):
        got = diff_text(contents, "big.txt", handle)
    assert len(got.lines) == 2000 and got.cut
    assert got.note == "Diff cut at 2,000 lines."


def test_a_file_on_one_side_only_diffs_against_dev_null(base: tuple[Path, str]) -> None:
    run, name = base
    (run / "fresh.txt").write_text("hello\n")
    with against_run(run, name) as (contents, handle):
        added = diff_text(contents, "fresh.txt", handle)
        (run / "dir/c.txt").unlink()
        removed = diff_text(contents, "dir/c.txt", handle)
        with pytest.raises(EntryNotFound):
            diff_text(contents, "neither.txt", handle)
        same = diff_text(contents, "a.txt", handle)
    assert added.lines[:2] == ("--- /dev/null\n", "+++ b/fresh.txt\n")
    assert removed.lines[:2] == ("--- a/dir/c.txt\n", "+++ /dev/null\n")
    assert same.lines == () and same.note == "No differences."


def test_binary_large_and_non_text_files_get_no_text_diff(base: tuple[Path, str]) -> None:
    run, name = base
    (run / "big.txt").write_bytes(b"x" * ((1 << 20) + 1))
    (run / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with against_run(run, name) as (contents, handle):
        for path in ("b.bin", "big.txt", "latin1.txt", "dir", "link"):
            with pytest.raises(NotText):
                diff_text(contents, path, handle)


def test_a_text_diff_never_reads_outside_the_run_or_our_state(
    base: tuple[Path, str], tmp_path: Path
) -> None:
    run, name = base
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    os.symlink(secret, run / "leak.txt")
    os.symlink(tmp_path, run / "out")
    with against_run(run, name) as (contents, handle):
        for path in ("leak.txt", "out/secret.txt", "archives/.runarchive/lock"):
            with pytest.raises(EntryNotFound):
                diff_text(contents, path, handle)
        for path in ("../secret.txt", "/etc/passwd", "dir/../../x"):
            with pytest.raises(InvalidInput):
                diff_text(contents, path, handle)


# --- the property: random trees, random edits, the diff lists exactly the edits -------------

segments = st.sampled_from(["a", "b", "c.txt", "d.dat", "e"])
EDITS = ["content", "grow", "touch", "chmod", "remove", "add", "to_dir", "to_link"]


@st.composite
def trees(draw: st.DrawFn) -> Spec:
    spec: Spec = {}
    for parts in draw(st.lists(st.lists(segments, min_size=1, max_size=3), max_size=20)):
        rel = "/".join(parts)
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        clash = any(p in spec and not isinstance(spec[p], Dir) for p in parents)
        if rel in spec or clash or any(k.startswith(rel + "/") for k in spec):
            continue
        for p in parents:
            spec[p] = Dir(mtime_ns=T0)
        data = draw(st.binary(min_size=1, max_size=200))
        spec[rel] = Dir(mtime_ns=T0) if draw(st.integers(0, 4)) == 0 else File(data, 0o644, T0)
    return spec


def _apply(run: Path, spec: Spec, edits: list[tuple[str, int]]) -> None:
    files = sorted(p for p, n in spec.items() if isinstance(n, File))
    done: set[str] = set()
    for kind, pick in edits:
        if kind == "add":
            (run / f"added-{pick}.txt").write_bytes(b"added %d\n" % pick)
            continue
        if not files:
            continue
        rel = files[pick % len(files)]
        if rel in done:
            continue
        done.add(rel)
        path = run / rel
        node = spec[rel]
        assert isinstance(node, File)
        if kind == "content":
            path.write_bytes(bytes(b ^ 0x5A for b in node.data))  # same size, new bytes
        elif kind == "grow":
            path.write_bytes(node.data + b"+")
        elif kind == "touch":
            os.utime(path, ns=(T0 + 7, T0 + 7))
        elif kind == "chmod":
            os.chmod(path, 0o600)
        elif kind == "remove":
            path.unlink()
        elif kind == "to_dir":
            path.unlink()
            path.mkdir()
        elif kind == "to_link":
            path.unlink()
            os.symlink("elsewhere", path)


def _expected(
    before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {name: [] for name in BUCKETS}
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        if a is None:
            out["added"].append(path)
        elif b is None:
            out["removed"].append(path)
        elif a[0] != b[0]:
            out["type_changed"].append(path)
        elif a[1:3] != b[1:3] if a[0] == "file" else a[:2] != b[:2]:
            out["modified"].append(path)  # digest or mode (files); mode (dirs); target (links)
    return out


def _sorted(diff: Diff) -> dict[str, list[str]]:
    return {name: sorted(found) for name, found in paths(diff).items()}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=trees(), edits=st.lists(st.tuples(st.sampled_from(EDITS), st.integers(0, 99))))
def test_a_diff_lists_exactly_the_edits_against_the_run_and_against_an_archive(
    tmp_path_factory: pytest.TempPathFactory, spec: Spec, edits: list[tuple[str, int]]
) -> None:
    run = build_tree(tmp_path_factory.mktemp("runs") / "r1", spec)
    before = snapshot(run, with_dir_times=False)
    first = create_archive(run).name
    _apply(run, spec, edits)
    after = snapshot(run, with_dir_times=False)
    expected = _expected(before, after)
    live = run_diff(run, first)
    assert _sorted(live) == expected
    unchanged = len(before.keys() & after.keys()) - len(expected["modified"])
    assert live.unchanged == unchanged - len(expected["type_changed"])
    second = create_archive(run).name
    assert _sorted(archives_diff(run, first, second)) == expected
    assert run_diff(run, second).changes == 0
    shutil.rmtree(run.parent)


def test_a_file_or_folder_swapped_for_a_link_after_the_scan_is_never_read_through(
    base: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, name = base
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(b"alpha\n" * 10)  # a.txt's very bytes: a read would match
    (outside / "c.txt").write_bytes(b"gamma\n")
    os.utime(run / "a.txt", ns=(T0 + 1, T0 + 1))  # so that a.txt must be read to be proven
    os.utime(run / "dir/c.txt", ns=(T0 + 1, T0 + 1))
    real_scan = compare.scan_run

    def scan_then_swap(handle: RunDir) -> object:
        tree = real_scan(handle)  # the real scan; then the run changes under the diff
        (run / "a.txt").unlink()
        os.symlink(outside / "a.txt", run / "a.txt")
        shutil.rmtree(run / "dir")
        os.symlink(outside, run / "dir")
        return tree

    monkeypatch.setattr(compare, "scan_run", scan_then_swap)
    diff = run_diff(run, name)
    assert paths(diff)["removed"] == ["a.txt", "dir/c.txt"]
    assert diff.hashed_files == 0
