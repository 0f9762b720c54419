"""A run tree written by an attacker: planted state, links where folders belong, swapped files.

Each test plants what someone who can write into their own run could plant, runs the library
operation on that run, and checks that nothing outside the run changed (another run next to
it, a file outside the runs root), byte for byte and mode for mode. Every test here failed on
the code before the run-handle module (``core/rundir.py``) existed.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive.core import (
    DamagedArchive,
    InvalidInput,
    LimitExceeded,
    NoSpace,
    ProgressEvent,
    RunArchiveError,
    UnsafeArchive,
    UnsafeRun,
    catalog,
    create_archive,
    delete_archive,
    list_archives,
    normalize_comment,
    recover_run,
    restore_archive,
    rundir,
    validate_archive_name,
    validate_runid,
    verify_archive,
)
from runarchive.core.create import FORK_MIN_ENTRIES
from runarchive.core.limits import Limits
from runarchive.core.zipformat import DEFLATED
from tests.support.journal import write_journal
from tests.support.tree import Dir, File, Link, Spec, build_tree, snapshot, tree_bytes
from tests.support.zipcraft import build_zip, file, place

ARCHIVE = "attacker.20240102T030405Z.zip"


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each attack with the kernel's resolve-beneath and with the portable walk."""
    if request.param == "openat2" and not rundir.use_openat2:
        pytest.skip("this kernel has no openat2")
    monkeypatch.setattr(rundir, "use_openat2", request.param == "openat2")
    return str(request.param)


class World:
    """Two runs side by side under one root, and a secret outside it."""

    def __init__(self, base: Path) -> None:
        self.root = base / "runs"
        self.attacker = build_tree(self.root / "attacker", {"a.txt": File(b"mine\n")})
        self.victim = build_tree(
            self.root / "victim",
            {"data/v.txt": File(b"victim data\n", mode=0o600), "PRIVATE": File(b"x")},
        )
        self.victim_archive = create_archive(self.victim, "victim's").name
        self.outside = build_tree(base / "outside", {"secret.key": File(b"S3CRET" * 10)})
        self.before = self.state()

    def state(self) -> tuple[object, ...]:
        return (
            snapshot(self.victim),
            tree_bytes(self.victim / "archives"),
            snapshot(self.outside),
            _modes(self.victim),
            _modes(self.outside),
        )

    def assert_untouched(self) -> None:
        assert self.state() == self.before


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): os.lstat(p).st_mode for p in [root, *sorted(root.rglob("*"))]}


@pytest.fixture
def world(tmp_path: Path, resolver: str) -> World:
    return World(tmp_path)


# ---------------------------------------------------------------------------------------------
# Planted journals
# ---------------------------------------------------------------------------------------------

HOSTILE_JOURNALS = {
    "id-climbs-out": {"id": "x/../../../victim", "archive": ARCHIVE, "state": "staging"},
    "id-not-ours": {"id": "x", "archive": ARCHIVE, "state": "staging"},
    "old-names-another-run": {
        "id": "0123456789ab", "archive": ARCHIVE, "state": "swapping",
        "old": ["../victim/data"], "new": [],
    },
    "new-plants-public": {
        "id": "0123456789ab", "archive": ARCHIVE, "state": "swapping",
        "old": [], "new": ["../victim/PUBLIC"],
    },
    "modes-chmod-outside": {
        "id": "0123456789ab", "archive": ARCHIVE, "state": "swapping",
        "old": [], "new": [], "modes": {"/outside/secret.key": 0o4777},
    },
    "setuid-bits": {
        "id": "0123456789ab", "archive": ARCHIVE, "state": "swapping",
        "old": [], "new": ["a.txt"], "modes": {"a.txt": 0o4755},
    },
    "extra-field": {"id": "0123456789ab", "archive": ARCHIVE, "state": "staging", "x": 1},
    "not-json": None,
}  # fmt: skip


class StatePlace:
    """Where state is planted: this version's (journal in ``archives/.runarchive``, transient
    folders at the top, prefixed) or an older version's (all in a top-level ``.runarchive``),
    which recover reads once to migrate it — the same attacks apply to both."""

    def __init__(self, run: Path, legacy: bool) -> None:
        self.legacy = legacy
        self.work = run / ".runarchive" if legacy else run / "archives" / ".runarchive"
        self.transient_in = self.work if legacy else run
        self.prefix = "" if legacy else ".runarchive-"
        self.work.mkdir(parents=True, exist_ok=True)

    def transient(self, name: str) -> Path:
        return self.transient_in / f"{self.prefix}{name}"

    def journal(self, body: bytes) -> None:
        (self.work / "journal.json").write_bytes(body)


@pytest.fixture(params=["current", "legacy"])
def state_place(request: pytest.FixtureRequest, world: World) -> StatePlace:
    return StatePlace(world.attacker, request.param == "legacy")


@pytest.mark.parametrize("case", sorted(HOSTILE_JOURNALS))
def test_a_planted_journal_is_refused_and_reaches_nothing_outside_the_run(
    world: World, state_place: StatePlace, case: str
) -> None:
    journal = HOSTILE_JOURNALS[case]
    if journal is None:
        state_place.journal(b"{not json")
    else:
        state_place.journal(json.dumps(journal).replace("/outside/", f"{world.outside}/").encode())
    state_place.transient("stage-x").mkdir()
    mine = snapshot(world.attacker)

    assert list_archives(world.attacker) == []  # list still answers
    for operation in (
        lambda: recover_run(world.attacker),
        lambda: create_archive(world.attacker),
        lambda: delete_archive(world.attacker, ARCHIVE),
    ):
        with pytest.raises(UnsafeRun, match="journal"):
            operation()

    world.assert_untouched()
    assert snapshot(world.attacker) == mine
    assert (state_place.work / "journal.json").exists()  # refused means left as it was


def test_a_journal_that_is_a_link_is_refused(world: World, state_place: StatePlace) -> None:
    os.symlink(world.victim / "PRIVATE", state_place.work / "journal.json")
    with pytest.raises(UnsafeRun, match="cannot be opened"):
        recover_run(world.attacker)
    world.assert_untouched()


def test_a_stage_folder_that_is_a_link_to_another_run_is_never_emptied(
    world: World, state_place: StatePlace
) -> None:
    jid = "0123456789ab"
    state_place.journal(json.dumps({"id": jid, "archive": ARCHIVE, "state": "staging"}).encode())
    os.symlink(world.victim / "data", state_place.transient(f"stage-{jid}"))
    with pytest.raises(UnsafeRun, match="not a folder runarchive made"):
        recover_run(world.attacker)
    world.assert_untouched()


@pytest.mark.parametrize("planted", ["trash-0123456789ab", "old-0123456789ab"])
def test_a_state_folder_link_without_a_journal_is_refused(
    world: World, state_place: StatePlace, planted: str
) -> None:
    os.symlink(world.victim, state_place.transient(planted))
    with pytest.raises(UnsafeRun):
        create_archive(world.attacker)
    world.assert_untouched()
    assert (world.victim / "data" / "v.txt").read_bytes() == b"victim data\n"


def test_an_older_versions_state_folder_is_finished_and_retired(world: World) -> None:
    legacy = StatePlace(world.attacker, legacy=True)
    (legacy.work / "lock").write_bytes(b"")
    build_tree(legacy.transient("trash-0123456789ab"), {"old.txt": File(b"replaced")})
    (legacy.work / "someone-elses.txt").write_bytes(b"not ours")  # left where it is
    result = recover_run(world.attacker)
    assert result.removed_temp >= 1
    assert sorted(os.listdir(legacy.work)) == ["someone-elses.txt"]
    (legacy.work / "someone-elses.txt").unlink()
    recover_run(world.attacker)
    assert not legacy.work.exists()  # empty, so retired
    assert sorted(os.listdir(world.attacker / "archives" / ".runarchive")) == ["lock"]
    world.assert_untouched()


def test_a_swapping_journal_naming_nothing_that_exists_is_refused(world: World) -> None:
    write_journal(
        world.attacker,
        {"id": "0123456789ab", "archive": ARCHIVE, "state": "swapping",
         "old": ["never-existed"], "new": ["nor-this"]},
    )  # fmt: skip
    with pytest.raises(UnsafeRun, match="neither"):
        recover_run(world.attacker)


# ---------------------------------------------------------------------------------------------
# Our folders replaced by links
# ---------------------------------------------------------------------------------------------


def test_archives_as_a_link_to_another_runs_archives_is_refused_everywhere(world: World) -> None:
    os.symlink(world.victim / "archives", world.attacker / "archives")
    name = world.victim_archive
    for operation in (
        lambda: list_archives(world.attacker),
        lambda: create_archive(world.attacker),
        lambda: restore_archive(world.attacker, name),
        lambda: delete_archive(world.attacker, name),
        lambda: verify_archive(world.attacker, name),
    ):
        with pytest.raises(UnsafeRun, match="archives is a symbolic link"):
            operation()
    world.assert_untouched()


@pytest.mark.parametrize("where", ["archives/.runarchive", ".runarchive"])
def test_the_state_folder_as_a_link_is_refused(world: World, where: str) -> None:
    (world.victim / where).mkdir(parents=True, exist_ok=True)
    world.before = world.state()
    (world.attacker / where).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(world.victim / where, world.attacker / where)
    with pytest.raises(UnsafeRun, match=r"\.runarchive is a symbolic link"):
        create_archive(world.attacker)
    world.assert_untouched()


def test_archives_as_a_regular_file_gives_a_clear_error_not_a_crash(world: World) -> None:
    (world.attacker / "archives").write_bytes(b"not a folder")
    with pytest.raises(UnsafeRun, match="archives is not a folder"):
        list_archives(world.attacker)
    with pytest.raises(UnsafeRun):
        create_archive(world.attacker)


def test_a_folder_named_like_a_temp_archive_does_not_break_list(world: World) -> None:
    create_archive(world.attacker)
    (world.attacker / "archives" / ".tmp-x.partial").mkdir()
    write_journal(world.attacker, {"id": "0123456789ab", "archive": ARCHIVE, "state": "staging"})
    assert len(list_archives(world.attacker)) == 1
    assert len(list_archives(world.attacker)) == 1  # and again: nothing broke for good
    assert (world.attacker / "archives" / ".tmp-x.partial").is_dir()


def test_a_lock_file_that_is_a_link_is_refused(world: World) -> None:
    work = world.attacker / "archives" / ".runarchive"
    work.mkdir(parents=True)
    os.symlink(world.outside / "secret.key", work / "lock")
    with pytest.raises(UnsafeRun, match="lock"):
        create_archive(world.attacker)
    world.assert_untouched()


def test_a_fifo_planted_as_an_archive_or_a_run_file_never_blocks(world: World) -> None:
    os.mkfifo(world.attacker / "pipe.dat")
    result = create_archive(world.attacker)
    assert any("pipe.dat" in s for s in result.skipped)
    fifo_archive = world.attacker / "archives" / "attacker.20240102T030405Z.zip"
    os.mkfifo(fifo_archive)
    rows = {i.name: i for i in list_archives(world.attacker)}
    assert not rows[fifo_archive.name].readable
    with pytest.raises(Exception, match="not a regular file"):
        restore_archive(world.attacker, fifo_archive.name)


# ---------------------------------------------------------------------------------------------
# Races: a folder swapped for a link while we work
# ---------------------------------------------------------------------------------------------


class Swapper:
    """Swaps the attacker's ``sub`` folder for a link to the outside secret folder, and back."""

    def __init__(self, world: World) -> None:
        self.sub, self.aside = world.attacker / "sub", world.attacker / "sub.real"
        build_tree(self.sub, {f"f{i:03}.txt": File(b"own %d\n" % i) for i in range(200)})
        self.outside = world.outside
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._swap, daemon=True)

    def _swap(self) -> None:
        # A restore replaces ``sub`` under the swapper's feet: each step may fail, and is
        # simply tried again on the next round.
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                os.rename(self.sub, self.aside)
                os.symlink(self.outside, self.sub)
            time.sleep(0.0005)
            with contextlib.suppress(OSError):
                if os.path.islink(self.sub):
                    os.unlink(self.sub)
                os.rename(self.aside, self.sub)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


@pytest.fixture
def swapper(world: World) -> Iterator[Swapper]:
    found = Swapper(world)
    yield found
    found.finish()


def test_an_archive_never_holds_outside_files_while_a_folder_is_swapped_for_a_link(
    world: World, swapper: Swapper
) -> None:
    import zipfile

    swapper.start()
    for _ in range(15):
        result = create_archive(world.attacker)
        with zipfile.ZipFile(result.path) as zf:
            for info in zf.infolist():
                if info.filename.startswith("sub/") and not info.is_dir():
                    data = zf.read(info)
                    assert b"S3CRET" not in data, info.filename
                    assert data.startswith(b"own "), info.filename
    swapper.finish()
    world.assert_untouched()


def test_files_swapped_after_the_scan_are_never_read_by_the_worker_processes(
    world: World,
) -> None:
    # A run big enough for the worker processes; between the scan and the first read (the
    # scan's hook) a file becomes a link to the secret, another a fifo, a third is removed,
    # a fourth becomes a folder, and a folder becomes a link to the outside folder. The
    # workers open every file by handle beneath the run: each reads as vanished.
    run = world.attacker
    spec: Spec = {f"many/f{i:04}.txt": File(b"own %d\n" % i) for i in range(FORK_MIN_ENTRIES)}
    for name in ("link-me", "fifo-me", "gone", "folder-me"):
        spec[f"x/{name}.txt"] = File(b"own %s\n" % name.encode())
    spec |= {"sub/s1.txt": File(b"own s1\n"), "sub/s2.txt": File(b"own s2\n")}
    build_tree(run, spec)

    def swap(tree: object) -> None:
        for name in ("link-me", "fifo-me", "gone", "folder-me"):
            os.unlink(run / "x" / f"{name}.txt")
        os.symlink(world.outside / "secret.key", run / "x" / "link-me.txt")
        os.mkfifo(run / "x" / "fifo-me.txt")
        os.mkdir(run / "x" / "folder-me.txt")
        os.rename(run / "sub", run / "sub.real")
        os.symlink(world.outside, run / "sub")

    forked: list[int] = []

    def watch(event: ProgressEvent) -> None:
        if event.phase == "write" and not forked:
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as fh:
                    forked.extend(int(pid) for pid in fh.read().split())

    result = create_archive(run, on_scan=swap, progress=watch)

    assert len(forked) == 2, "built by the worker processes"
    swapped = ["sub/s1.txt", "sub/s2.txt"] + [
        f"x/{name}.txt" for name in ("fifo-me", "folder-me", "gone", "link-me")
    ]
    assert sorted(result.skipped) == sorted(f"{p} (vanished while archiving)" for p in swapped)
    import zipfile

    with zipfile.ZipFile(result.path) as zf:
        names = set(zf.namelist())
        assert not names & set(swapped)
        for info in zf.infolist():
            assert b"S3CRET" not in zf.read(info), info.filename
    assert result.files == FORK_MIN_ENTRIES + 1  # and the world's own a.txt
    world.assert_untouched()


def test_a_restore_never_writes_outside_while_a_folder_is_swapped_for_a_link(
    world: World, swapper: Swapper
) -> None:
    name = create_archive(world.attacker).name
    swapper.start()
    for _ in range(10):
        # A restore may fail under the race; it must never write elsewhere.
        with contextlib.suppress(OSError, RunArchiveError):
            restore_archive(world.attacker, name)
    swapper.finish()
    world.assert_untouched()
    assert sorted(os.listdir(world.outside)) == ["secret.key"]


# ---------------------------------------------------------------------------------------------
# Archives that lie
# ---------------------------------------------------------------------------------------------


def test_a_sparse_archive_claiming_a_huge_central_directory_is_listed_unreadable_cheaply(
    world: World,
) -> None:
    import resource

    path = world.attacker / "archives" / ARCHIVE
    path.parent.mkdir()
    claimed = 1_200_000_000
    with open(path, "wb") as fh:
        fh.truncate(claimed)  # sparse: a few KiB on disk
        fh.seek(claimed)
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 50000, 50000, claimed, 0, 0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = list_archives(world.attacker)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert [(r.name, r.readable) for r in rows] == [(ARCHIVE, False)]
    assert rows[0].error
    assert grown_kib < 50 * 1024


def test_many_small_entries_that_inflate_a_thousandfold_together_are_refused(
    world: World,
) -> None:
    # Each entry stays under the per-entry floor (1 MiB); together: 200 MB from ~250 KB.
    members = [file(f"d/f{i:03}.bin", bytes(500_000), method=DEFLATED) for i in range(400)]
    name = place(world.attacker, build_zip(members), ARCHIVE)
    assert (world.attacker / "archives" / name).stat().st_size < 400_000
    before = snapshot(world.attacker)
    with pytest.raises(LimitExceeded, match="over the whole archive"):
        restore_archive(world.attacker, name)
    assert snapshot(world.attacker) == before


def test_the_free_space_reserve_is_never_eaten_and_the_refusal_says_how_much(
    world: World,
) -> None:
    name = create_archive(world.attacker).name
    disk = os.statvfs(world.attacker)
    whole = disk.f_blocks * disk.f_frsize  # more than is ever free, whatever else runs
    with pytest.raises(NoSpace, match=r"needed \(keeping .* in reserve\), .* free"):
        restore_archive(world.attacker, name, limits=Limits(reserve_bytes=whole))
    with pytest.raises(NoSpace, match="in reserve"):
        create_archive(world.attacker, limits=Limits(reserve_bytes=whole))


def _flip_central_crc(path: Path, entry_name: bytes) -> None:
    """Alter the CRC-32 the central directory records for one entry (its data untouched)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while True:
        assert at >= 0, entry_name
        nlen = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + nlen]) == entry_name:
            break
        at = data.find(b"PK\x01\x02", at + 4)
    data[at + 16] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_restore_over_unchanged_files_does_not_trust_an_entry_whose_crc_disagrees(
    world: World,
) -> None:
    build_tree(world.attacker, {"model.out": File(b"results " * 1000)})
    name = create_archive(world.attacker).name
    _flip_central_crc(world.attacker / "archives" / name, b"model.out")
    assert not verify_archive(world.attacker, name).ok
    before = snapshot(world.attacker)
    with pytest.raises(DamagedArchive, match=r"model\.out"):
        restore_archive(world.attacker, name)
    assert snapshot(world.attacker) == before


def _zip_with_prefix() -> bytes:
    body = build_zip([file("a.txt", b"hello\n")])
    prefix = b"#!/bin/sh\nexit 0\n"
    # Shift every offset so the archive is self-consistent after the prefix (as `zip -A` does).
    out = bytearray(prefix + body)
    cd = out.find(b"PK\x01\x02")
    while cd >= 0:
        offset = struct.unpack_from("<I", out, cd + 42)[0]
        struct.pack_into("<I", out, cd + 42, offset + len(prefix))
        cd = out.find(b"PK\x01\x02", cd + 4)
    eocd = out.rfind(b"PK\x05\x06")
    struct.pack_into(
        "<I", out, eocd + 16, struct.unpack_from("<I", out, eocd + 16)[0] + len(prefix)
    )
    return bytes(out)


def _zip_hiding_another_end_record() -> bytes:
    inner = build_zip([file("shown-to-others.txt", b"x")])
    outer = bytearray(build_zip([file("a.txt", b"hello\n")]))
    eocd = outer.rfind(b"PK\x05\x06")
    fake = inner[inner.rfind(b"PK\x05\x06") :]
    struct.pack_into("<H", outer, eocd + 20, len(fake))
    return bytes(outer) + fake


@pytest.mark.parametrize("build", [_zip_with_prefix, _zip_hiding_another_end_record])
def test_an_archive_whose_structure_is_ambiguous_is_not_restored(world: World, build) -> None:  # type: ignore[no-untyped-def]
    name = place(world.attacker, build(), ARCHIVE)
    before = snapshot(world.attacker)
    with pytest.raises(UnsafeArchive, match="ambiguous"):
        restore_archive(world.attacker, name)
    assert snapshot(world.attacker) == before
    try:
        report = verify_archive(world.attacker, name)
    except UnsafeArchive as exc:
        assert "ambiguous" in str(exc)
    else:
        assert not report.ok and any("ambiguous" in p for p in report.problems)


# ---------------------------------------------------------------------------------------------
# Names and comments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [f"{ARCHIVE}\n", "attacker.20240102T030405Z.zip\n\n"])
def test_an_archive_name_with_a_trailing_newline_is_invalid(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate_archive_name(name)


def test_a_run_id_with_a_trailing_newline_is_invalid() -> None:
    with pytest.raises(InvalidInput):
        validate_runid("victim\n")


@pytest.mark.parametrize(
    "comment", ["evil\u202etxt.exe", "zero\u200bwidth", "lone \ud800 surrogate", "line\u2028sep"]
)
def test_hidden_and_direction_changing_characters_are_refused_in_comments(comment: str) -> None:
    with pytest.raises(InvalidInput, match="invisible or direction-changing"):
        normalize_comment(comment)


def test_one_run_with_many_archives_does_not_flush_other_runs_list_cache(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "RUN_CACHE_MAX", 3)
    catalog._cache.clear()
    list_archives(world.victim)
    for i in range(6):
        create_archive(world.attacker, f"a{i}")
    list_archives(world.attacker)
    cached = {name for run in catalog._cache.values() for (name, *_) in run}
    assert world.victim_archive in cached
    assert sum(1 for n in cached if n.startswith("attacker.")) == 3
    # A deleted archive leaves the cache on the next list.
    delete_archive(world.victim, world.victim_archive)
    list_archives(world.victim)
    assert all(world.victim_archive not in run for run in catalog._cache.values())


def test_a_run_folder_that_is_a_link_is_not_opened(world: World) -> None:
    os.symlink(world.victim, world.root / "alias")
    with pytest.raises(UnsafeRun, match="not a real folder"):
        list_archives(world.root / "alias")


def test_link_targets_inside_the_run_are_kept_and_outside_ones_refused_on_restore(
    world: World,
) -> None:
    build_tree(world.attacker, {"in": Link("a.txt"), "out": Link(str(world.outside))})
    name = create_archive(world.attacker).name
    with pytest.raises(UnsafeArchive, match="points outside the run"):
        restore_archive(world.attacker, name)
    assert stat.S_ISLNK(os.lstat(world.attacker / "out").st_mode)


def test_a_readonly_folder_in_a_replaced_tree_is_removed_without_following_links(
    world: World,
) -> None:
    name = create_archive(world.attacker).name
    build_tree(world.attacker, {"ro": Dir(0o500), "ro/f.txt": File(b"x")})
    os.symlink(world.victim / "data", world.attacker / "ro" / "to-victim")
    build_tree(world.attacker, {"later.txt": File(b"new")})
    restore_archive(world.attacker, name)
    world.assert_untouched()
    assert not (world.attacker / "later.txt").exists()
    assert not (world.attacker / "ro").exists()


def test_a_readonly_run_refuses_restore_and_delete_but_archives_and_lists(world: World) -> None:
    from runarchive.core import ReadOnlyRun

    name = create_archive(world.attacker).name
    (world.attacker / "READONLY").write_bytes(b"")
    before = snapshot(world.attacker)
    with pytest.raises(ReadOnlyRun, match="Run attacker is read-only"):
        restore_archive(world.attacker, name)
    with pytest.raises(ReadOnlyRun, match="Run attacker is read-only"):
        delete_archive(world.attacker, name)
    assert snapshot(world.attacker) == before
    second = create_archive(world.attacker).name
    assert {i.name for i in list_archives(world.attacker)} == {name, second}
    assert verify_archive(world.attacker, name).ok
