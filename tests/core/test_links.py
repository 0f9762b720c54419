"""Link modes: ``store`` keeps links as links, ``follow`` archives what in-run links point to.

The tool table in docs/integration.md ("Links and other unzip tools") is ``RESTORED`` below:
each cell is measured by ``test_each_tool_restores_links_as_the_integration_table_says``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from runarchive.core import (
    InvalidInput,
    Limits,
    Phase,
    ProgressCallback,
    ProgressEvent,
    create_archive,
    list_archives,
    restore_archive,
    verify_archive,
)
from tests.support.tree import File, Link, Spec, build_tree, snapshot

SECRET = b"TOP-SECRET-OUTSIDE-THE-RUN"
RUN: Spec = {
    "climate/station.cli": File(b"CLIMATE " * 64, 0o640, 1_600_000_000_000_000_000),
    "data/dem.tif": File(b"DEM", 0o600, 1_650_000_000_000_000_000),
    "data/soil/a.sol": File(b"SOIL"),
    "wepp/cli/climate.cli": Link("../../climate/station.cli"),  # a `..` file link
    "dem.tif": Link("data/dem.tif"),  # a plain file link
    "datalink": Link("data"),  # a folder link
}
PROBES = {"file link": "dem.tif", "dir link": "datalink", ".. link": "wepp/cli/climate.cli"}


def _extract(tool: str, archive: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    dest.mkdir()
    commands = {
        "unzip": ["unzip", "-q", str(archive)],
        "7zz x": ["7zz", "x", "-y", "-bso0", "-bsp0", str(archive)],
        "bsdtar -xf": ["bsdtar", "-xf", str(archive)],
        "zipfile.extractall": [
            sys.executable, "-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall()",
            str(archive),
        ],
        "jar xf": ["jar", "xf", str(archive)],
    }  # fmt: skip
    return subprocess.run(commands[tool], cwd=dest, capture_output=True, text=True, check=False)


def _kind(path: Path) -> str:
    if path.is_symlink():
        return "link"
    if path.is_dir():
        return "dir"
    if path.is_file():
        return "text file" if path.read_bytes() == os.fsencode(_link_text(path)) else "file"
    return "missing"


def _link_text(path: Path) -> str:
    return {"dem.tif": "data/dem.tif", "datalink": "data"}.get(
        path.name, "../../climate/station.cli"
    )


# tool -> mode -> (exit status 0?, what a file link, a dir link and a `..` link become)
# "file"/"dir": the target's content; "link": a symlink again; "text file": a file holding
# the link's text; "empty file": 7-Zip's refusal of a `..` link.
RESTORED: dict[str, dict[str, tuple[bool, dict[str, str]]]] = {
    "unzip": {
        "store": (True, {"file link": "link", "dir link": "link", ".. link": "link"}),
        "follow": (True, {"file link": "file", "dir link": "dir", ".. link": "file"}),
    },
    "7zz x": {
        "store": (False, {"file link": "link", "dir link": "link", ".. link": "empty file"}),
        "follow": (True, {"file link": "file", "dir link": "dir", ".. link": "file"}),
    },
    "bsdtar -xf": {
        "store": (True, {"file link": "link", "dir link": "link", ".. link": "link"}),
        "follow": (True, {"file link": "file", "dir link": "dir", ".. link": "file"}),
    },
    "zipfile.extractall": {
        "store": (
            True,
            {"file link": "text file", "dir link": "text file", ".. link": "text file"},
        ),
        "follow": (True, {"file link": "file", "dir link": "dir", ".. link": "file"}),
    },
    "jar xf": {
        "store": (
            True,
            {"file link": "text file", "dir link": "text file", ".. link": "text file"},
        ),
        "follow": (True, {"file link": "file", "dir link": "dir", ".. link": "file"}),
    },
}


def _observed(root: Path) -> dict[str, str]:
    seen = {}
    for label, rel in PROBES.items():
        path = root / rel
        kind = _kind(path)
        seen[label] = "empty file" if kind == "file" and path.stat().st_size == 0 else kind
    return seen


@pytest.mark.parametrize("mode", ["store", "follow"])
@pytest.mark.parametrize("tool", sorted(RESTORED))
def test_each_tool_restores_links_as_the_integration_table_says(
    run_dir: Path, tmp_path: Path, tool: str, mode: str
) -> None:
    if tool != "zipfile.extractall" and shutil.which(tool.split()[0]) is None:
        pytest.skip(f"{tool} not installed (make sysdeps)")
    build_tree(run_dir, RUN)
    archive = create_archive(run_dir, mode, links=mode).path
    done = _extract(tool, archive, tmp_path / "out")
    ok, kinds = RESTORED[tool][mode]
    assert (done.returncode == 0) is ok, done.stderr + done.stdout
    assert _observed(tmp_path / "out") == kinds


def test_our_restore_brings_stored_links_back_exactly(run_dir: Path) -> None:
    build_tree(run_dir, RUN)
    before = snapshot(run_dir)
    name = create_archive(run_dir, links="store").name
    for rel in PROBES.values():
        (run_dir / rel).unlink()
    restore_archive(run_dir, name)
    assert snapshot(run_dir) == before
    assert _observed(run_dir) == {"file link": "link", "dir link": "link", ".. link": "link"}


def test_our_restore_of_a_followed_archive_gives_the_targets_as_files_and_folders(
    run_dir: Path,
) -> None:
    build_tree(run_dir, RUN)
    result = create_archive(run_dir, links="follow")
    assert (result.links, result.followed, result.warnings) == ("follow", 3, [])
    assert verify_archive(run_dir, result.name).ok
    restore_archive(run_dir, result.name)
    assert _observed(run_dir) == {"file link": "file", "dir link": "dir", ".. link": "file"}


def test_seven_zip_extracts_a_followed_run_with_dotdot_links_and_files_hold_their_targets(
    run_dir: Path, tmp_path: Path
) -> None:
    build_tree(run_dir, RUN)
    archive = create_archive(run_dir, links="follow").path
    done = _extract("7zz x", archive, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    station = out / "wepp/cli/climate.cli"
    assert station.read_bytes() == b"CLIMATE " * 64
    assert (out / "datalink/soil/a.sol").read_bytes() == b"SOIL"
    assert (out / "dem.tif").read_bytes() == b"DEM"
    # The target's mode and mtime, not the link's.
    assert station.stat().st_mode & 0o777 == 0o640
    assert station.stat().st_mtime_ns // 10**9 == 1_600_000_000


def test_zipfile_extractall_of_a_followed_archive_gives_real_files_and_folders(
    run_dir: Path, tmp_path: Path
) -> None:
    build_tree(run_dir, RUN)
    archive = create_archive(run_dir, links="follow").path
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "wepp/cli/climate.cli").read_bytes() == b"CLIMATE " * 64
    assert (out / "datalink").is_dir() and not (out / "datalink").is_symlink()
    assert (out / "datalink/dem.tif").read_bytes() == b"DEM"


def test_the_manifest_names_each_followed_link_with_its_text(run_dir: Path) -> None:
    build_tree(run_dir, RUN)
    archive = create_archive(run_dir, links="follow").path
    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read(".runarchive/manifest.json"))
    followed = {e["path"]: (e["type"], e["followed_link"]) for e in manifest["entries"]
                if "followed_link" in e}  # fmt: skip
    assert followed == {
        "dem.tif": ("file", "data/dem.tif"),
        "datalink": ("dir", "data"),
        "wepp/cli/climate.cli": ("file", "../../climate/station.cli"),
    }


def _all_bytes(archive: Path) -> bytes:
    with zipfile.ZipFile(archive) as zf:
        return archive.read_bytes() + b"".join(zf.read(i) for i in zf.infolist())


def test_a_link_that_leaves_the_run_is_never_followed_and_no_outside_byte_is_archived(
    run_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    build_tree(run_dir, {
        "absolute": Link(str(outside / "secret.txt")),
        "dotdot": Link("../../outside/secret.txt"),
        "outdir": Link("../../outside"),
        "sub/up": Link(".."),
        "via-other-link": Link("sub/up/../../outside/secret.txt"),
        "kept.txt": File(b"kept"),
    })  # fmt: skip
    result = create_archive(run_dir, links="follow")
    assert SECRET not in _all_bytes(result.path)
    with zipfile.ZipFile(result.path) as zf:
        links = {
            i.filename for i in zf.infolist() if (i.external_attr >> 16) & 0o170000 == 0o120000
        }
    assert {"absolute", "dotdot", "outdir", "via-other-link"} <= links
    for name in ("absolute", "dotdot", "outdir", "via-other-link"):
        assert any(w.startswith(f"{name} -> ") and "never followed" in w for w in result.warnings)
    assert len(result.external_links) == 4


def test_links_into_the_archives_folder_or_to_nothing_stay_links(run_dir: Path) -> None:
    build_tree(run_dir, {"a.txt": File(b"a"), "nowhere": Link("missing/file")})
    first = create_archive(run_dir).name
    os.symlink("archives", run_dir / "all-archives")
    os.symlink(f"archives/{first}", run_dir / "first.zip")
    result = create_archive(run_dir, links="follow")
    with zipfile.ZipFile(result.path) as zf:
        kinds = {i.filename: (i.external_attr >> 16) & 0o170000 for i in zf.infolist()}
    assert {kinds[n] for n in ("all-archives", "first.zip", "nowhere")} == {0o120000}
    assert not any(n.startswith("all-archives/") for n in kinds)
    assert result.followed == 0
    assert sum("points to nothing archived in the run" in w for w in result.warnings) == 3


def test_folder_link_cycles_terminate_and_the_archive_restores(
    run_dir: Path, tmp_path: Path
) -> None:
    build_tree(run_dir, {
        "a/up": Link(".."),
        "a/b/loop": Link("../../a"),
        "x/to-y": Link("../y"),
        "y/to-x": Link("../x"),
        "x/f.txt": File(b"x"),
        "y/g.txt": File(b"y"),
        "self": Link("."),
    })  # fmt: skip
    result = create_archive(run_dir, links="follow")
    assert result.external_links == []
    assert any("loops back" in w for w in result.warnings)
    with zipfile.ZipFile(result.path) as zf:
        names = set(zf.namelist())
    assert {"x/to-y/g.txt", "y/to-x/f.txt", "x/to-y/to-x", "y/to-x/to-y"} <= names
    assert verify_archive(run_dir, result.name).ok
    restore_archive(run_dir, result.name)
    # The link kept inside the copy still reaches the same folder from its new place.
    assert (run_dir / "x/to-y/to-x").resolve() == (run_dir / "x").resolve()


def test_links_nested_past_the_entry_limit_stop_being_followed(run_dir: Path) -> None:
    spec: Spec = {"d0/f.bin": File(b"1" * 100)}
    for level in range(1, 12):  # each level holds two links to the one below: 2**11 copies
        spec[f"d{level}/l1"] = Link(f"../d{level - 1}")
        spec[f"d{level}/l2"] = Link(f"../d{level - 1}")
    build_tree(run_dir, spec)
    result = create_archive(run_dir, links="follow", limits=Limits(max_entries=500))
    assert result.entries <= 500 + len(spec) + 12
    assert any(w.startswith("Stopped following links") for w in result.warnings)
    assert verify_archive(run_dir, result.name).ok


def _swap_on_scan(action: Callable[[], None]) -> ProgressCallback:
    """Run ``action`` when the scan is done and before any file is read (same thread)."""

    def progress(event: ProgressEvent) -> None:
        if event.phase is Phase.SCAN:
            action()

    return progress


@pytest.mark.parametrize("swapped", ["the link", "the target", "a folder on the way"])
def test_a_link_swapped_to_point_outside_between_scan_and_read_is_not_followed(
    run_dir: Path, tmp_path: Path, swapped: str
) -> None:
    outside = tmp_path / "outside"
    (outside / "data").mkdir(parents=True)
    (outside / "data/dem.tif").write_bytes(SECRET)
    build_tree(run_dir, {"data/dem.tif": File(b"DEM"), "dem.tif": Link("data/dem.tif")})

    def swap() -> None:
        if swapped == "the link":
            (run_dir / "dem.tif").unlink()
            os.symlink(outside / "data/dem.tif", run_dir / "dem.tif")
        elif swapped == "the target":
            (run_dir / "data/dem.tif").unlink()
            os.symlink(outside / "data/dem.tif", run_dir / "data/dem.tif")
        else:
            shutil.rmtree(run_dir / "data")
            os.symlink(outside / "data", run_dir / "data")

    result = create_archive(run_dir, links="follow", progress=_swap_on_scan(swap))
    assert SECRET not in _all_bytes(result.path)
    with zipfile.ZipFile(result.path) as zf:
        held = zf.read("dem.tif") if "dem.tif" in zf.namelist() else None
    if swapped == "the link":
        assert held == b"DEM"  # the target scanned, read by handle: the new link is not read
    else:
        assert held is None
        assert "dem.tif (vanished while archiving)" in result.skipped


def test_list_counts_the_link_entries_of_each_archive(run_dir: Path, tmp_path: Path) -> None:
    build_tree(run_dir, {**RUN, "outside": Link("/etc/hostname")})
    stored = create_archive(run_dir, "s", links="store").name
    followed = create_archive(run_dir, "f", links="follow").name
    counts = {info.name: info.links for info in list_archives(run_dir)}
    assert counts == {stored: 4, followed: 1}


@pytest.mark.parametrize("mode", ["", "Follow", "copy", "follow "])
def test_an_unknown_links_mode_is_refused_before_anything_is_written(
    run_dir: Path, mode: str
) -> None:
    build_tree(run_dir, RUN)
    with pytest.raises(InvalidInput, match="links mode"):
        create_archive(run_dir, links=mode)
    assert not (run_dir / "archives").exists()
