"""Inside an archive: listings, paging, one file's bytes, and hostile archives and inputs.

Archives are real: ours from ``create_archive`` over a real tree, other tools' from the real
``zip`` and ``7zz`` processes, hostile ones byte by byte (``_zipcraft``).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import subprocess
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runarchive.core import (
    DamagedArchive,
    InvalidArchive,
    InvalidInput,
    LimitExceeded,
    Limits,
    UnsafeArchive,
    create_archive,
    open_archive,
    open_run,
)
from runarchive.core.errors import EntryNotFound, InvalidCursor
from runarchive.core.inside import (
    Contents,
    Entry,
    check_path,
    list_entries,
    open_contents,
    read_contents,
    stat_entry,
)
from runarchive.core.isotime import iso_from_ns
from runarchive.core.member import extract_files, open_member
from runarchive.core.safety import check_entry_name, entry_path
from runarchive.core.zipformat import CentralEntry
from tests.support.tree import Dir, File, Link, Spec, build_tree
from tests.support.zipcraft import (
    DEFLATED,
    Member,
    ZipBuilder,
    build_zip,
    deflate,
    file,
    folder,
    place,
    symlink,
    zero_bomb,
)

T0 = 1_700_000_000_123_456_789
RUN: Spec = {
    "README.md": File(b"# run\n", mtime_ns=T0),
    "wepp": Dir(0o750, T0),
    "wepp/output": Dir(0o755, T0),
    "wepp/output/H1.pass.dat": File(b"0.0 1.0\n" * 300, 0o640, T0 + 1),
    "wepp/output/H2.pass.dat": File(b"2.0 3.0\n" * 100, 0o644, T0 + 2),
    "wepp/runs.txt": File(b"p1\n", 0o600, T0 + 3),
    "climate": Dir(0o755, T0),
    "climate/cli.bin": File(bytes(range(256)) * 64, 0o644, T0 + 4),
    "empty": Dir(0o700, T0),
    "latest": Link("wepp/output"),
}


@contextmanager
def opened(run: Path, name: str, limits: Limits | None = None) -> Iterator[Contents]:
    with open_run(run) as handle, open_archive(handle, name, limits) as reader:
        yield read_contents(reader)


@pytest.fixture
def archived(run_dir: Path) -> tuple[Path, str]:
    build_tree(run_dir, RUN)
    return run_dir, create_archive(run_dir).name


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_top_lists_folders_first_with_subtree_totals_then_files_and_links(
    archived: tuple[Path, str],
) -> None:
    run, name = archived
    with opened(run, name) as contents:
        page = list_entries(contents)
    assert [(e.path, e.type) for e in page.entries] == [
        ("climate", "dir"), ("empty", "dir"), ("wepp", "dir"),
        ("README.md", "file"), ("latest", "symlink"),
    ]  # fmt: skip
    wepp = page.entries[2]
    sizes = [2400, 800, 3]
    assert (wepp.files, wepp.bytes, wepp.mode, wepp.mtime_ns) == (3, sum(sizes), 0o750, T0)
    assert (page.entries[1].files, page.entries[1].bytes) == (0, 0)
    assert page.entries[3] == Entry("README.md", "file", 6, 0o644, T0, sha(b"# run\n"))
    assert page.entries[4].target == "wepp/output"
    assert (page.total, page.next, page.hidden) == (5, None, 0)
    assert page.as_json()["entries"][3] == {  # type: ignore[index]
        "path": "README.md", "type": "file", "size": 6, "mode": 0o644,
        "mtime": "2023-11-14T22:13:20.123456Z", "sha256": sha(b"# run\n"), "target": None,
    }  # fmt: skip


def test_a_folder_lists_its_direct_children_only(archived: tuple[Path, str]) -> None:
    run, name = archived
    with opened(run, name) as contents:
        for prefix in ("wepp/", "wepp"):
            page = list_entries(contents, prefix)
            assert [e.path for e in page.entries] == ["wepp/output", "wepp/runs.txt"]
            assert (page.entries[0].files, page.entries[0].bytes) == (2, 3200)
            assert page.entries[1].sha256 == sha(b"p1\n")


def test_a_recursive_listing_walks_the_subtree_each_folder_before_its_content(
    archived: tuple[Path, str],
) -> None:
    run, name = archived
    with opened(run, name) as contents:
        page = list_entries(contents, "wepp", recursive=True)
        everything = list_entries(contents, recursive=True, limit=1000)
    assert [e.path for e in page.entries] == [
        "wepp/output", "wepp/output/H1.pass.dat", "wepp/output/H2.pass.dat", "wepp/runs.txt",
    ]  # fmt: skip
    assert [e.path for e in everything.entries][:3] == ["README.md", "climate", "climate/cli.bin"]
    assert everything.total == len(RUN)


def test_a_search_lists_the_paths_of_the_subtree_containing_the_text_in_pre_order(
    archived: tuple[Path, str],
) -> None:
    run, name = archived
    with opened(run, name) as contents:
        found = list_entries(contents, search="PASS")
        within = list_entries(contents, "climate/", search="pass")
        folders = list_entries(contents, search="WePp/")
        nothing = list_entries(contents, search="no such path")
    assert [e.path for e in found.entries] == ["wepp/output/H1.pass.dat", "wepp/output/H2.pass.dat"]
    assert found.total == 2 and found.next is None
    assert found.entries[0].sha256 == sha(b"0.0 1.0\n" * 300)  # whole rows, not names only
    assert (within.total, within.entries) == (0, ())
    assert [e.path for e in folders.entries] == [
        "wepp/output", "wepp/output/H1.pass.dat", "wepp/output/H2.pass.dat", "wepp/runs.txt",
    ]  # fmt: skip
    assert folders.entries[0].files == 2  # a folder row keeps its totals
    assert nothing.total == 0


def test_search_pages_join_up_and_take_only_their_own_cursor(run_dir: Path) -> None:
    spec: Spec = {f"d{i % 3}/f{i:03d}{'.sol' if i % 2 else '.cli'}": File(b"x") for i in range(60)}
    build_tree(run_dir, spec)
    name = create_archive(run_dir).name
    with opened(run_dir, name) as contents:
        whole = list_entries(contents, search=".SOL", limit=1000)
        assert whole.total == 30
        seen: list[Entry] = []
        cursor = None
        while True:
            page = list_entries(contents, search=".sol", cursor=cursor, limit=7)
            assert page.total == 30
            seen.extend(page.entries)
            cursor = page.next
            if cursor is None:
                break
        assert seen == list(whole.entries)
        first = list_entries(contents, search=".sol", limit=7).next
        with pytest.raises(InvalidCursor):
            list_entries(contents, search=".cli", cursor=first)
        with pytest.raises(InvalidCursor):
            list_entries(contents, cursor=first, recursive=True)


@pytest.mark.parametrize("text", ["a\x00b", "tab\there", "x" * 201])
def test_a_search_text_no_path_can_hold_is_refused(archived: tuple[Path, str], text: str) -> None:
    run, name = archived
    with opened(run, name) as contents, pytest.raises(InvalidInput):
        list_entries(contents, search=text)


def test_pages_join_up_to_the_whole_listing(run_dir: Path) -> None:
    spec: Spec = {f"many/f{i:03d}.txt": File(str(i).encode()) for i in range(57)}
    spec.update({f"many/d{i}": Dir() for i in range(5)})
    build_tree(run_dir, spec)
    name = create_archive(run_dir).name
    with opened(run_dir, name) as contents:
        whole = list_entries(contents, "many", limit=1000)
        seen: list[Entry] = []
        cursor = None
        pages = 0
        while True:
            page = list_entries(contents, "many/", cursor=cursor, limit=10)
            assert page.total == 62
            seen.extend(page.entries)
            pages += 1
            cursor = page.next
            if cursor is None:
                break
    assert pages == 7
    assert seen == list(whole.entries)
    assert [e.type for e in seen[:5]] == ["dir"] * 5


def test_a_cursor_only_pages_through_the_listing_that_gave_it(archived: tuple[Path, str]) -> None:
    run, name = archived
    other = create_archive(run).name
    with opened(run, name) as contents, opened(run, other) as second:
        cursor = list_entries(contents, limit=2).next
        assert cursor is not None
        list_entries(contents, cursor=cursor, limit=2)  # its own listing takes it
        with pytest.raises(InvalidCursor):
            list_entries(contents, "wepp", cursor=cursor)
        with pytest.raises(InvalidCursor):
            list_entries(contents, cursor=cursor, recursive=True)
        with pytest.raises(InvalidCursor):
            list_entries(second, cursor=cursor)


@pytest.mark.parametrize(
    "cursor",
    ["!!", "a b", "a" * 7000, "Zm9v", "YzE", "YzEAAAAAAAAAAAB4", "%2e%2e", "YzE/", "\x00"],
)
def test_a_forged_or_damaged_cursor_is_refused(archived: tuple[Path, str], cursor: str) -> None:
    run, name = archived
    with opened(run, name) as contents, pytest.raises(InvalidCursor):
        list_entries(contents, cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9, True])
def test_a_limit_outside_1_to_1000_is_refused(archived: tuple[Path, str], limit: int) -> None:
    run, name = archived
    with opened(run, name) as contents, pytest.raises(InvalidInput):
        list_entries(contents, limit=limit)


CLIMBING = ["..", "../", "wepp/../..", "wepp/../../etc", "/etc", "//", "./wepp", "wepp//output",
            "wepp/\x00", "a\\b", "wepp/./output", "x" * 5000, "wepp/\n"]  # fmt: skip


@pytest.mark.parametrize("path", CLIMBING)
def test_a_prefix_or_path_that_climbs_or_hides_is_refused(
    archived: tuple[Path, str], path: str
) -> None:
    run, name = archived
    with opened(run, name) as contents:
        with pytest.raises(InvalidInput):
            list_entries(contents, path)
        with pytest.raises(InvalidInput):
            stat_entry(contents, path)
        with pytest.raises(InvalidInput):
            open_member(contents, path)


def test_a_prefix_that_is_missing_or_not_a_folder_is_not_found(archived: tuple[Path, str]) -> None:
    run, name = archived
    with opened(run, name) as contents:
        assert list_entries(contents, "/") == list_entries(contents, "")  # both the top
        for prefix in ("nothing/", "README.md", "latest", "wepp/output/H1.pass.dat/"):
            with pytest.raises(EntryNotFound):
                list_entries(contents, prefix)


def test_a_file_reads_back_whole_and_by_any_range(run_dir: Path) -> None:
    rng = random.Random(7)
    noise = rng.randbytes(3 * (1 << 20) + 17)  # stored (does not shrink), three pieces
    text = b"".join(b"line %d of a text file\n" % i for i in range(150_000))  # deflated, 3 MiB
    build_tree(run_dir, {"noise.bin": File(noise), "text.txt": File(text), "none": File(b"")})
    name = create_archive(run_dir).name
    with opened(run_dir, name) as contents:
        for path, data in (("noise.bin", noise), ("text.txt", text), ("none", b"")):
            with open_member(contents, path) as stream:
                assert stream.checks_crc and stream.size == len(data)
                assert stream.read() == data
            n = len(data)
            cuts = {(0, n), (0, 0), (n, n), (0, min(1, n)), (max(n - 1, 0), n)}
            cuts |= {tuple(sorted(rng.randrange(n + 1) for _ in range(2))) for _ in range(12)}
            cuts |= {((1 << 20) - 1, (1 << 20) + 1)} if n > 1 << 21 else set()
            for start, stop in cuts:
                with open_member(contents, path, start=start, stop=stop) as stream:
                    got = b"".join(stream.chunks(rng.choice([4096, 100_000, 1 << 20])))
                assert got == data[start:stop], (path, start, stop)
            with open_member(contents, path, start=n // 2, stop=min(n // 2 + 300, n)) as stream:
                assert b"".join(stream.chunks(1)) == data[n // 2 : n // 2 + 300]
    methods = {e.name: e.method for e in _directory(run_dir, name)}
    assert (methods["noise.bin"], methods["text.txt"]) == (0, DEFLATED)


def _directory(run: Path, name: str) -> list[object]:
    with open_run(run) as handle, open_archive(handle, name) as reader:
        return list(reader.entries)


def test_a_range_outside_the_file_is_refused(archived: tuple[Path, str]) -> None:
    run, name = archived
    with opened(run, name) as contents:
        for start, stop in ((0, 7), (5, 4), (-1, 3)):
            with pytest.raises(InvalidInput):
                open_member(contents, "README.md", start=start, stop=stop)


def test_folders_links_and_missing_paths_are_not_files(archived: tuple[Path, str]) -> None:
    run, name = archived
    with opened(run, name) as contents:
        for path in ("wepp", "latest", "nothing.txt", "README.md/x"):
            with pytest.raises(EntryNotFound):
                open_member(contents, path)
        assert stat_entry(contents, "wepp/").type == "dir"


def test_the_stream_closes_its_reader_when_it_owns_it(archived: tuple[Path, str]) -> None:
    run, name = archived
    with open_run(run) as handle:
        reader = open_archive(handle, name)
    stream = open_member(read_contents(reader), "README.md", owns_reader=True)
    assert stream.read() == b"# run\n"
    stream.close()
    assert reader.fd == -1


def _flip(run: Path, name: str, needle: bytes, offset: int = 0) -> None:
    path = run / "archives" / name
    data = bytearray(path.read_bytes())
    at = data.index(needle) + offset
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_stored_file_fails_its_crc_at_the_end(run_dir: Path) -> None:
    noise = random.Random(1).randbytes(200_000)
    build_tree(run_dir, {"noise.bin": File(noise)})
    name = create_archive(run_dir).name
    _flip(run_dir, name, noise[150_000:150_032])
    with opened(run_dir, name) as contents:
        with open_member(contents, "noise.bin") as stream:
            assert stream.read(100_000) == noise[:100_000]  # handed out before the damage
            with pytest.raises(DamagedArchive, match="CRC"):
                stream.read()
        # A range that stops short cannot check the CRC and says so.
        with open_member(contents, "noise.bin", start=10, stop=1000) as stream:
            assert not stream.checks_crc
            assert stream.read() == noise[10:1000]


def test_damaged_deflate_data_is_a_damaged_archive(run_dir: Path) -> None:
    text = b"".join(b"row %d\n" % i for i in range(20_000))
    data = build_zip([file("t.txt", text, method=DEFLATED)], with_manifest=False)
    packed = deflate(text)
    name = place(run_dir, data.replace(packed[40:80], bytes(40)))
    with opened(run_dir, name) as contents:
        stream = open_member(contents, "t.txt")
        with stream, pytest.raises(DamagedArchive):
            stream.read()


def test_a_member_inflating_past_its_declared_size_is_stopped_at_once(run_dir: Path) -> None:
    bomb = Member("bomb.txt", b"small", method=DEFLATED, payload=zero_bomb(64), usize=1000)
    name = place(run_dir, build_zip([bomb], with_manifest=False))
    with opened(run_dir, name) as contents:
        tracemalloc.start()
        try:
            stream = open_member(contents, "bomb.txt")
            with stream, pytest.raises(DamagedArchive, match="more data than its declared"):
                stream.read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20  # 64 MiB of zeros never inflated whole


def test_a_member_over_the_ratio_limit_is_stopped(run_dir: Path) -> None:
    bomb = Member("bomb.txt", b"", method=DEFLATED, payload=zero_bomb(8), usize=8 << 20)
    bomb.crc = 0
    name = place(run_dir, build_zip([bomb], with_manifest=False))
    with opened(run_dir, name, Limits(max_ratio=50)) as contents:
        stream = open_member(contents, "bomb.txt")
        with stream, pytest.raises(LimitExceeded):
            stream.read()


def test_an_entry_whose_local_header_names_another_file_is_refused_before_reading(
    run_dir: Path,
) -> None:
    zb = ZipBuilder()
    decoy = file("decoy.txt", b"decoy")
    offset = zb.add_local(decoy)
    zb.add_central(file("real.txt", b"decoy"), offset)
    name = place(run_dir, zb.finish())
    with opened(run_dir, name) as contents, pytest.raises(InvalidArchive, match="names"):
        open_member(contents, "real.txt")


HOSTILE_NAMES = [b"../evil.txt", b"/abs.txt", b"a\\b.txt", b"nul\x00.txt", b"ctl\x1b[2J.txt",
                 b"archives/x.zip", b".runarchive-stage-0123456789ab/x", b".runarchive/journal",
                 b"\xff\xfe.txt", b"a/../../up.txt", b"./dot.txt", b"a//b.txt"]  # fmt: skip


def test_hostile_entry_names_are_hidden_counted_and_never_reachable(run_dir: Path) -> None:
    members = [file(raw) for raw in HOSTILE_NAMES]
    members += [file("ok.txt", b"fine"), file("dup.txt", b"one"), file("dup.txt", b"two")]
    members += [file("twice", b"1"), file("twice", b"2"), file("twice/below.txt")]
    members += [symlink("lnk", "/etc"), file("lnk/passwd", b"root:x:0:0")]
    members += [file("f", b"a file"), file("f/g/h.txt", b"beneath a file")]
    legacy = file(b"caf\x82.txt", flags=0)  # a cp437 name: restore refuses it too
    members.append(legacy)
    name = place(run_dir, build_zip(members, with_manifest=False))
    with opened(run_dir, name) as contents:
        page = list_entries(contents, recursive=True)
        assert [e.path for e in page.entries] == ["f", "lnk", "ok.txt"]
        assert page.hidden == len(HOSTILE_NAMES) + 2 + 3 + 1 + 1 + 1
        for path in ("dup.txt", "twice", "twice/below.txt", "lnk/passwd", "f/g/h.txt", "f/g",
                     "evil.txt", "abs.txt", "archives/x.zip", ".runarchive/journal"):  # fmt: skip
            with pytest.raises(EntryNotFound):
                open_member(contents, path)
        with open_member(contents, "ok.txt") as stream:
            assert stream.read() == b"fine"


def test_a_manifest_that_disagrees_with_its_zip_vouches_for_nothing(run_dir: Path) -> None:
    members = [file("a.txt", b"right"), file("b.txt", b"bee")]

    def lie(doc: dict[str, object]) -> None:
        entries = doc["entries"]
        assert isinstance(entries, list)
        entries[0]["size"] = 999

    name = place(run_dir, build_zip(members, patch=lie))
    with opened(run_dir, name) as contents:
        rows = {e.path: e for e in list_entries(contents).entries}
    assert rows["a.txt"].sha256 is None and rows["a.txt"].size == 5
    assert rows["b.txt"].sha256 == sha(b"bee")


def test_a_central_directory_over_the_entry_limit_is_refused_before_it_is_parsed(
    run_dir: Path,
) -> None:
    name = place(run_dir, build_zip([file(f"f{i}") for i in range(40)], with_manifest=False))
    with open_run(run_dir) as handle, pytest.raises(LimitExceeded):
        open_archive(handle, name, Limits(max_entries=10))


def test_an_end_record_claiming_millions_of_entries_costs_no_memory(run_dir: Path) -> None:
    data = bytearray(build_zip([file("a.txt")], with_manifest=False))
    eocd = data.rindex(b"PK\x05\x06")
    data[eocd + 8 : eocd + 12] = (0xFFFE).to_bytes(2, "little") * 2
    name = place(run_dir, bytes(data))
    tracemalloc.start()
    try:
        with open_run(run_dir) as handle, pytest.raises(InvalidArchive):
            open_archive(handle, name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


needs_zip = pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP zip")
needs_7zz = pytest.mark.skipif(shutil.which("7zz") is None, reason="needs 7-Zip (7zz)")
FOREIGN: Spec = {
    "docs": Dir(0o755, T0),
    "docs/a.txt": File(b"alpha\n" * 50, 0o640, 1_700_000_010_250_000_000),
    "docs/deep/b.txt": File(b"beta\n", 0o644, 1_700_000_020_000_000_000),
    "top.txt": File(b"top\n", 0o600, 1_700_000_030_500_000_000),
}


def _foreign(run: Path, tmp: Path, command: list[str]) -> str:
    src = build_tree(tmp / "src", FOREIGN)
    (run / "archives").mkdir(exist_ok=True)
    out = run / "archives" / "foreign.zip"
    subprocess.run([*command, str(out), *sorted(FOREIGN)], cwd=src, check=True,
                   capture_output=True)  # fmt: skip
    return out.name


@needs_zip
def test_an_info_zip_archive_lists_times_from_ut_no_sha256_and_its_unrecorded_folders(
    run_dir: Path, tmp_path: Path
) -> None:
    name = _foreign(run_dir, tmp_path, ["zip", "-q", "-D"])  # -D: no folder entries
    with opened(run_dir, name) as contents:
        top = list_entries(contents)
        docs = list_entries(contents, "docs", recursive=True)
        with open_member(contents, "docs/deep/b.txt") as stream:
            assert stream.read() == b"beta\n"
    assert [(e.path, e.type, e.mode, e.mtime_ns) for e in top.entries] == [
        ("docs", "dir", None, None),
        ("top.txt", "file", 0o600, 1_700_000_030 * 10**9),  # UT: whole seconds
    ]
    assert (top.entries[0].files, top.entries[0].bytes) == (2, 305)
    assert [e.path for e in docs.entries] == ["docs/a.txt", "docs/deep", "docs/deep/b.txt"]
    assert all(e.sha256 is None for e in docs.entries)


@needs_7zz
def test_a_7zip_archive_lists_times_to_the_100_ns_from_its_ntfs_extra(
    run_dir: Path, tmp_path: Path
) -> None:
    name = _foreign(run_dir, tmp_path, ["7zz", "a", "-tzip", "-bd"])
    with opened(run_dir, name) as contents:
        row = stat_entry(contents, "docs/a.txt")
    assert (row.type, row.size, row.sha256) == ("file", 300, None)
    assert row.mtime_ns == 1_700_000_010_250_000_000


def test_iso_times_are_utc_and_out_of_range_ones_are_none() -> None:
    assert iso_from_ns(0) == "1970-01-01T00:00:00Z"
    assert iso_from_ns(1_500_000_000 * 10**9 + 5_000) == "2017-07-14T02:40:00.000005Z"
    assert iso_from_ns(10**30) is None
    assert iso_from_ns(None) is None


# Names from a small alphabet, so that trees nest and names collide across folders.
segments = st.sampled_from(["a", "b", "c", "d.txt", "e", "A"])


@st.composite
def nested_trees(draw: st.DrawFn) -> Spec:
    spec: Spec = {}
    for parts in draw(st.lists(st.lists(segments, min_size=1, max_size=4), max_size=25)):
        rel = "/".join(parts)
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        clash = any(p in spec and not isinstance(spec[p], Dir) for p in parents)
        if rel in spec or clash or any(k.startswith(rel + "/") for k in spec):
            continue
        for p in parents:
            spec[p] = Dir()
        size = draw(st.integers(0, 3000))
        spec[rel] = Dir() if draw(st.booleans()) else File(b"x" * size)
    return spec


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=nested_trees(), limit=st.integers(1, 7))
def test_every_folder_pages_through_exactly_its_children_with_true_totals(
    tmp_path_factory: pytest.TempPathFactory, spec: Spec, limit: int
) -> None:
    run = build_tree(tmp_path_factory.mktemp("runs") / "r1", spec)
    name = create_archive(run).name
    with opened(run, name) as contents:
        for folder in ["", *(p for p, n in spec.items() if isinstance(n, Dir))]:
            rows: list[Entry] = []
            cursor = None
            while True:
                page = list_entries(contents, folder, cursor=cursor, limit=limit)
                rows.extend(page.entries)
                if (cursor := page.next) is None:
                    break
            parent = f"{folder}/" if folder else ""
            kids = sorted(
                (not isinstance(n, Dir), p.rpartition("/")[2])
                for p, n in spec.items()
                if p.startswith(parent) and "/" not in p[len(parent) :]
            )
            assert [(e.type != "dir", e.name) for e in rows] == kids
            for row in rows:
                inside = [n for p, n in spec.items() if p.startswith(row.path + "/")]
                files = [n for n in inside if isinstance(n, File)]
                if row.type == "dir":
                    assert (row.files, row.bytes) == (len(files), sum(len(f.data) for f in files))
                else:
                    node = spec[row.path]
                    assert isinstance(node, File) and row.sha256 == sha(node.data)
    shutil.rmtree(run.parent)


def test_a_foreign_entry_without_unix_mode_has_none_and_is_still_served(run_dir: Path) -> None:
    members = [file("dos.txt", b"from windows", unix=False, mode=0), folder("d", unix=False)]
    name = place(run_dir, build_zip(members, with_manifest=False))
    with opened(run_dir, name) as contents:
        rows = {e.path: e for e in list_entries(contents).entries}
        with open_member(contents, "dos.txt") as stream:
            assert stream.read() == b"from windows"
    assert rows["dos.txt"].mode is None and rows["dos.txt"].type == "file"
    assert rows["d"].type == "dir"
    assert stat.S_IFMT(os.stat(run_dir / "archives" / name).st_mode) == stat.S_IFREG


@settings(max_examples=300, deadline=None)
@given(
    path=st.one_of(
        st.text(max_size=40),
        st.lists(
            st.sampled_from(["..", ".", "", "wepp", "output", "/", "\x00", "\\", "README.md"]),
            max_size=6,
        ).map("/".join),
    )
)
def test_any_path_from_outside_is_refused_or_names_a_plain_path_inside(path: str) -> None:
    try:
        rel = check_path(path, folder=True)
    except InvalidInput:
        return
    parts = rel.split("/") if rel else []
    assert all(p not in ("", ".", "..") and "\x00" not in p and "\\" not in p for p in parts)
    assert not rel.startswith("/")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(
        st.one_of(
            st.binary(min_size=1, max_size=12),
            st.lists(
                st.sampled_from([b"..", b".", b"", b"a", b"b", b"/", b"\\", b"\x00", b"archives"]),
                min_size=1,
                max_size=4,
            ).map(b"/".join),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_an_archive_of_any_entry_names_lists_only_plain_paths_and_serves_only_those(
    tmp_path_factory: pytest.TempPathFactory, names: list[bytes]
) -> None:
    run = tmp_path_factory.mktemp("runs") / "r1"
    run.mkdir()
    members = [file(raw, raw) for raw in names if raw]
    name = place(run, build_zip(members, with_manifest=False))
    with opened(run, name) as contents:
        page = list_entries(contents, recursive=True, limit=1000)
        shown = {e.path for e in page.entries}
        for row in page.entries:
            assert check_path(row.path) == row.path
            assert row.path.split("/")[0] not in ("archives", ".runarchive")
        for member in members:
            raw = member.raw_name.decode("utf-8", "replace")
            if raw in shown and member.mode & 0o170000 == 0o100000:
                with open_member(contents, raw) as stream:
                    assert stream.read() == member.data
        recorded = [n for n in contents.nodes.values() if n.central is not None]
    assert len(recorded) + page.hidden == len(members)  # every entry shown or counted hidden


def test_an_archive_is_parsed_once_and_again_when_its_file_changes(
    archived: tuple[Path, str],
) -> None:
    run, name = archived
    with open_run(run) as handle:
        with open_contents(handle, name) as first, open_contents(handle, name) as second:
            assert second.tree is first.tree  # the same file: not parsed again
            assert second.reader.fd != first.reader.fd  # but opened and checked each time
        other = create_archive(run).name
        os.replace(run / "archives" / other, run / "archives" / name)  # same name, new file
        (run / "README.md").write_bytes(b"changed")
        with open_contents(handle, name) as third:
            assert third.tree is not first.tree
            assert stat_entry(third, "README.md").sha256 == sha(b"# run\n")
        path = run / "archives" / name
        data = bytearray(path.read_bytes())
        before = os.stat(path)
        at = data.index(b"# run\n")
        data[at] = ord("!")  # same size; mtime put back: only the ctime tells
        path.write_bytes(bytes(data))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        with open_contents(handle, name) as fourth:
            assert fourth.tree is not third.tree
            with open_member(fourth, "README.md") as stream, pytest.raises(DamagedArchive):
                stream.read()


@settings(max_examples=400, deadline=None)
@given(name=st.text(st.sampled_from("ab./\\\x00\x7f\x01:é"), max_size=10))
def test_the_entry_name_rule_is_the_plain_component_rule(name: str) -> None:
    path = name[:-1] if name.endswith("/") else name
    parts = path.split("/")
    plain = (
        bool(path)
        and not any(ord(c) < 32 or ord(c) == 127 for c in name)
        and "\\" not in name
        and not name.startswith("/")
        and not (len(name) > 1 and name[1] == ":" and name[0].isascii() and name[0].isalpha())
        and all(p not in ("", ".", "..") for p in parts)
    )
    try:
        got = check_entry_name(name)
    except UnsafeArchive:
        assert not plain
    else:
        assert plain and got == path


@settings(max_examples=500, deadline=None)
@given(name=st.text(st.sampled_from("ab_./-+\\\x00:é"), max_size=12))
def test_the_fast_path_for_plain_names_agrees_with_the_full_rule(name: str) -> None:
    entry = CentralEntry(name, name.encode(), 0x800, 0, 0, 0, 0, 0, 0o100644, None, None, True)
    try:
        expected: str | None = check_entry_name(name)
    except UnsafeArchive:
        expected = None
    try:
        got: str | None = entry_path(entry)
    except UnsafeArchive:
        got = None
    assert got == expected
    long = "x" * 256
    assert check_entry_name("a/" + "x" * 255) == "a/" + "x" * 255
    with pytest.raises(UnsafeArchive):
        entry_path(CentralEntry(long, long.encode(), 0x800, 0, 0, 0, 0, 0, 0, None, None, True))


def test_the_tree_cache_stays_within_its_entry_bound(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runarchive.core import inside

    monkeypatch.setattr(inside, "CACHE_MAX_ENTRIES", 25)
    monkeypatch.setattr(inside, "_cache", inside.OrderedDict())
    names = []
    for i in range(3):
        build_tree(run_dir, {f"f{i}-{j}.txt": File(b"x") for j in range(10)})
        names.append(create_archive(run_dir).name)  # 11, 21 and 31 entries (manifest too)
    with open_run(run_dir) as handle:
        for name in names:
            open_contents(handle, name).reader.close()
    held = [len(parsed[0].entries) for parsed in inside._cache.values()]
    assert held == [21]  # the 31-entry archive is never kept; the 11 made room for the 21


def test_extract_writes_files_and_folders_with_their_modes_and_times(
    archived: tuple[Path, str], tmp_path: Path
) -> None:
    run, name = archived
    dest = tmp_path / "out"
    dest.mkdir()
    with open_run(run) as handle, open_contents(handle, name) as contents:
        done = extract_files(contents, ["README.md", "wepp/output"], dest, run_path=run)
    assert done.files == ("README.md", "wepp/output/H1.pass.dat", "wepp/output/H2.pass.dat")
    assert done.bytes == 6 + 2400 + 800
    h1 = dest / "wepp/output/H1.pass.dat"
    assert h1.read_bytes() == b"0.0 1.0\n" * 300
    assert (stat.S_IMODE(h1.stat().st_mode), h1.stat().st_mtime_ns) == (0o640, T0 + 1)
    assert sorted(p.name for p in dest.rglob("*")) == [
        "H1.pass.dat",
        "H2.pass.dat",
        "README.md",
        "output",
        "wepp",
    ]  # fmt: skip  (no temporary file left)


def test_extract_refuses_the_run_itself_unless_asked_and_never_overwrites_unless_asked(
    archived: tuple[Path, str],
) -> None:
    run, name = archived
    with open_run(run) as handle, open_contents(handle, name) as contents:
        for dest in (run, run / "wepp"):
            with pytest.raises(InvalidInput, match="inside the run"):
                extract_files(contents, ["README.md"], dest, run_path=run)
        (run / "README.md").write_bytes(b"edited")
        with pytest.raises(InvalidInput, match="exists"):
            extract_files(contents, ["README.md"], run, run_path=run, into_run=True)
        assert (run / "README.md").read_bytes() == b"edited"
        extract_files(contents, ["README.md"], run, run_path=run, into_run=True, overwrite=True)
    assert (run / "README.md").read_bytes() == b"# run\n"
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".part")) == []


def test_extract_never_follows_a_link_planted_in_the_destination(
    archived: tuple[Path, str], tmp_path: Path
) -> None:
    run, name = archived
    dest, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, dest / "wepp")
    with open_run(run) as handle, open_contents(handle, name) as contents:
        with pytest.raises(InvalidInput, match="never followed"):
            extract_files(contents, ["wepp/runs.txt"], dest)
        with pytest.raises(EntryNotFound):
            extract_files(contents, ["latest"], dest)
    assert list(elsewhere.iterdir()) == []


def test_extract_of_a_damaged_file_leaves_nothing_behind(run_dir: Path, tmp_path: Path) -> None:
    noise = random.Random(5).randbytes(100_000)
    build_tree(run_dir, {"noise.bin": File(noise)})
    name = create_archive(run_dir).name
    _flip(run_dir, name, noise[50_000:50_032])
    dest = tmp_path / "out"
    dest.mkdir()
    with (
        open_run(run_dir) as handle,
        open_contents(handle, name) as contents,
        pytest.raises(DamagedArchive),
    ):
        extract_files(contents, ["noise.bin"], dest)
    assert list(dest.iterdir()) == []
