"""Fork: an archive restored into a new run folder that did not exist, appearing by one rename.

Hostile inputs first (names that climb, something planted where the new run or its shard
would go, an archive entry that climbs), then the round trip and what the new run holds.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from runarchive.core import (
    InvalidInput,
    NotFound,
    RunExists,
    UnsafeArchive,
    UnsafeRun,
    create_archive,
    fork_archive,
    recover_forks_in,
)
from runarchive.core.fork import STAGE_PREFIX
from tests.support.tree import Dir, File, Link, Spec, build_tree, snapshot
from tests.support.zipcraft import build_zip, file

SPEC: Spec = {
    "a.txt": File(b"archived a\n"),
    "wepp": Dir(),
    "wepp/output": Dir(0o750),
    "wepp/output/H1.dat": File(b"h1\n" * 300, 0o600),
    "wepp/empty": Dir(),
    "soil": Dir(0o555),
    "soil/f.sol": File(b"soil\n"),
    "latest": Link("a.txt"),
    "wepp.nodb": File(b'{"wd": "/somewhere/ambitious-pinecone"}\n'),
}


@pytest.fixture
def archived(run_dir: Path) -> tuple[Path, str, dict[str, tuple[object, ...]]]:
    build_tree(run_dir, SPEC)
    name = create_archive(run_dir).name
    return run_dir, name, snapshot(run_dir)


def _entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_a_fork_makes_a_new_run_holding_exactly_the_archive_and_no_archives(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]],
) -> None:
    run, name, archived_tree = archived
    (run / "a.txt").write_bytes(b"edited since\n")  # the source changes; the fork is the archive
    source_after = snapshot(run)
    new = run.parent / "forked-run"

    result = fork_archive(run, name, new.parent, new.name)

    assert result.runid == "forked-run" and result.path == new and result.name == name
    assert snapshot(new) == archived_tree
    assert not (new / "archives").exists()  # only what the archive holds
    assert result.nodb_files == ["wepp.nodb"]
    assert snapshot(run) == source_after  # the source is untouched
    assert os.stat(new).st_mode & 0o777 == os.stat(run).st_mode & 0o777
    assert [n for n in _entries(run.parent) if n.startswith(STAGE_PREFIX)] == []


@pytest.mark.parametrize(
    "bad", ["..", ".", "a/b", "../escape", "nul\x00x", "sp ace", "x" * 201, "", "/abs"]
)
def test_a_new_run_name_that_is_no_run_id_is_refused_before_anything_is_made(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]], bad: str
) -> None:
    run, name, _ = archived
    before = _entries(run.parent)
    with pytest.raises(InvalidInput):
        fork_archive(run, name, run.parent, bad)
    assert _entries(run.parent) == before


@pytest.mark.parametrize("kind", ["folder", "file", "link", "dangling-link", "empty-folder"])
def test_anything_at_the_new_runs_name_is_refused_and_left_as_it_was(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]], tmp_path: Path, kind: str
) -> None:
    run, name, _ = archived
    new = run.parent / "taken"
    outside = tmp_path / "outside"
    outside.mkdir()
    if kind == "folder":
        new.mkdir()
        (new / "mine.txt").write_text("someone's run\n")
    elif kind == "empty-folder":
        new.mkdir()  # rename(2) would replace an empty folder: the fork must not
    elif kind == "file":
        new.write_text("a file\n")
    elif kind == "link":
        new.symlink_to(outside)
    else:
        new.symlink_to(tmp_path / "nowhere")
    before_parent = snapshot(run.parent, with_dir_times=False)

    with pytest.raises(RunExists):
        fork_archive(run, name, new.parent, new.name)

    assert snapshot(run.parent, with_dir_times=False) == before_parent
    assert _entries(outside) == []  # nothing written through the link


def test_a_link_or_file_planted_as_the_shard_folder_is_refused(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]], tmp_path: Path
) -> None:
    run, name, _ = archived
    root, outside = run.parent, tmp_path / "outside"
    outside.mkdir()
    (root / "fo").symlink_to(outside)
    with pytest.raises(UnsafeRun, match="symbolic link"):
        fork_archive(run, name, root / "fo", "fork-one", make_parent=True)
    assert _entries(outside) == []
    (root / "ba").write_text("not a shard\n")
    with pytest.raises(UnsafeRun, match="not a folder"):
        fork_archive(run, name, root / "ba", "bar-run", make_parent=True)
    assert (root / "ba").read_text() == "not a shard\n"


def test_a_missing_shard_is_made_and_the_run_appears_in_it(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]],
) -> None:
    run, name, archived_tree = archived
    new = run.parent / "ne" / "new-sharded"
    fork_archive(run, name, new.parent, new.name, make_parent=True)
    assert snapshot(new) == archived_tree


def test_an_archive_entry_that_climbs_is_refused_and_no_run_appears(run_dir: Path) -> None:
    archives = run_dir / "archives"
    archives.mkdir()
    name = "ambitious-pinecone.20240102T030405Z.zip"
    (archives / name).write_bytes(
        build_zip([file("ok.txt"), file("../../escaped.txt", b"gotcha\n")])
    )
    new = run_dir.parent / "climbing"
    with pytest.raises(UnsafeArchive):
        fork_archive(run_dir, name, new.parent, new.name)
    assert not new.exists() and not (run_dir.parent.parent / "escaped.txt").exists()
    assert [n for n in _entries(run_dir.parent) if n.startswith(STAGE_PREFIX)] == []


@pytest.mark.parametrize("bad", ["../other.zip", "x/../../y.zip", "/etc/passwd", "a\x00.zip"])
def test_an_archive_name_that_climbs_is_refused(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]], bad: str
) -> None:
    run, _, _ = archived
    with pytest.raises(InvalidInput):
        fork_archive(run, bad, run.parent, "forked")
    assert not (run.parent / "forked").exists()


def test_a_missing_archive_or_holder_folder_is_refused(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]], tmp_path: Path
) -> None:
    run, _, _ = archived
    with pytest.raises(NotFound):
        fork_archive(run, "ambitious-pinecone.20000101T000000Z.zip", run.parent, "forked")
    with pytest.raises(InvalidInput, match="does not exist"):
        fork_archive(run, "ambitious-pinecone.20000101T000000Z.zip", tmp_path / "no", "x")


def test_before_publish_sees_the_staged_run_which_is_not_visible_yet(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]],
) -> None:
    run, name, _ = archived
    new = run.parent / "hooked"
    seen: list[tuple[bool, bytes]] = []

    def before_publish(stage: object) -> None:
        from runarchive.core import ForkStage

        assert isinstance(stage, ForkStage)
        assert stage.final == new and stage.nodb_files == ("wepp.nodb",)
        seen.append((new.exists(), (stage.path / "wepp.nodb").read_bytes()))
        fd = stage.folder.open_file("wepp.nodb", os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b'{"wd": "rewritten"}\n')
        os.close(fd)

    fork_archive(run, name, new.parent, new.name, before_publish=before_publish)
    assert seen == [(False, SPEC_NODB)]
    assert (new / "wepp.nodb").read_bytes() == b'{"wd": "rewritten"}\n'


SPEC_NODB = b'{"wd": "/somewhere/ambitious-pinecone"}\n'


def test_a_failing_before_publish_leaves_no_run_and_no_stage(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]],
) -> None:
    run, name, _ = archived
    new = run.parent / "refused"

    def before_publish(stage: object) -> None:
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError):
        fork_archive(run, name, new.parent, new.name, before_publish=before_publish)
    assert not new.exists()
    assert [n for n in _entries(run.parent) if n.startswith(STAGE_PREFIX)] == []


def test_two_forks_racing_for_one_name_one_wins_and_the_other_is_refused(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]],
) -> None:
    run, name, archived_tree = archived
    new = run.parent / "contested"
    both_staged = threading.Barrier(2)
    outcomes: list[str] = []

    def fork() -> None:
        try:
            fork_archive(
                run, name, new.parent, new.name, before_publish=lambda _stage: both_staged.wait(10)
            )
            outcomes.append("won")
        except RunExists:
            outcomes.append("refused")

    threads = [threading.Thread(target=fork) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["refused", "won"]
    assert snapshot(new) == archived_tree
    assert [n for n in _entries(run.parent) if n.startswith(STAGE_PREFIX)] == []


def test_recover_forks_removes_dead_stages_but_not_live_ones_or_runs(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]],
) -> None:
    run, name, _ = archived
    root = run.parent
    dead = root / f"{STAGE_PREFIX}deadbeef0000"
    (dead / "run" / "sub").mkdir(parents=True)
    (dead / "run" / "sub" / "f").write_text("half made\n")
    os.chmod(dead / "run" / "sub", 0o500)
    counted: list[int] = []

    def before_publish(stage: object) -> None:
        counted.append(recover_forks_in(root))  # our own live stage stays

    fork_archive(run, name, root, "alive", before_publish=before_publish)
    assert counted == [0]  # the dead one was already removed when the fork began
    assert not dead.exists()
    assert (root / "alive").is_dir() and run.is_dir()


def test_a_link_planted_in_the_shard_at_the_new_name_is_refused(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]], tmp_path: Path
) -> None:
    run, name, _ = archived
    shard, outside = run.parent / "sh", tmp_path / "outside"
    shard.mkdir()
    outside.mkdir()
    (shard / "sharded-new").symlink_to(outside)
    with pytest.raises(RunExists):
        fork_archive(run, name, shard, "sharded-new", make_parent=True)
    assert (shard / "sharded-new").is_symlink() and _entries(outside) == []
    assert [n for n in _entries(shard) if n.startswith(STAGE_PREFIX)] == []


@pytest.mark.parametrize("planted", ["link", "empty-folder", "file"])
def test_something_planted_at_the_new_name_while_staging_wins_and_the_fork_leaves_no_trace(
    archived: tuple[Path, str, dict[str, tuple[object, ...]]], tmp_path: Path, planted: str
) -> None:
    run, name, _ = archived
    new, outside = run.parent / "raced", tmp_path / "outside"
    outside.mkdir()

    def plant(stage: object) -> None:  # after the check, before the rename
        if planted == "link":
            new.symlink_to(outside)
        elif planted == "empty-folder":
            new.mkdir()
        else:
            new.write_text("planted\n")

    with pytest.raises(RunExists):
        fork_archive(run, name, new.parent, new.name, before_publish=plant)
    assert _entries(outside) == []
    if planted == "empty-folder":
        assert new.is_dir() and _entries(new) == []  # not replaced by the fork
    elif planted == "file":
        assert new.read_text() == "planted\n"
    else:
        assert new.is_symlink()
    assert [n for n in _entries(run.parent) if n.startswith(STAGE_PREFIX)] == []


def test_the_nodb_rewrite_changes_whole_paths_only_and_never_follows_a_link(
    run_dir: Path, tmp_path: Path
) -> None:
    from runarchive.core import rewrite_run_paths

    victim = tmp_path / "victim.nodb"
    victim.write_text(str(run_dir))
    src = str(run_dir)
    build_tree(run_dir, {
        "wepp.nodb": File(f'{{"wd": "{src}", "f": "{src}/a/b", "n": "{src}-2/x"}}'.encode()),
        "sub": Dir(),
        "sub/linked.nodb": Link(str(victim)),
    })  # fmt: skip
    name = create_archive(run_dir).name
    changed: list[list[str]] = []

    def rewrite(stage: object) -> None:
        from runarchive.core import ForkStage

        assert isinstance(stage, ForkStage)
        changed.append(rewrite_run_paths(stage, [src]))

    fork_archive(run_dir, name, run_dir.parent, "rewritten", before_publish=rewrite,
                 allow_external_links=True)  # fmt: skip
    new = run_dir.parent / "rewritten"
    assert changed == [["wepp.nodb"]]  # the link is not a .nodb file of the plan
    assert (new / "wepp.nodb").read_text() == (
        f'{{"wd": "{new}", "f": "{new}/a/b", "n": "{src}-2/x"}}'
    )
    assert os.stat(new / "wepp.nodb").st_mtime_ns == 1_600_000_000_123_456_789
    assert victim.read_text() == str(run_dir)
