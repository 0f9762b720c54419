"""``runarchive ls``, ``cat``, ``extract`` and ``diff`` as a user types them.

Real processes started in another folder than the run's, with relative paths; real archives.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from runarchive.core import create_archive
from tests.support.tree import File, Link, build_tree, tree_bytes

LOCAL_ENV = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RUNARCHIVE_REDIS_URL")}
BINARY = bytes(range(256)) * 40 + b"\r\n\x00\x1a end"
NOISE = random.Random(7).randbytes(3_000_000)  # stored, streamed in three pieces
TEXT = b"".join(b"row %d\n" % i for i in range(500))


def cli(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """The command as typed in folder ``cwd`` (bytes out: ``cat`` is binary)."""
    return subprocess.run(
        [sys.executable, "-m", "runarchive", *map(str, args)],
        capture_output=True, timeout=120, env=LOCAL_ENV, cwd=cwd,
    )  # fmt: skip


@pytest.fixture
def run(run_dir: Path) -> tuple[Path, str]:
    build_tree(run_dir, {
        "wepp/out/loss.txt": File(TEXT), "wepp/H1.dat": File(b"h1\n"), "blob.bin": File(BINARY),
        "README.md": File(b"# run\n"), "latest": Link("wepp/H1.dat"),
    })  # fmt: skip
    return run_dir, create_archive(run_dir, "cli").name


def rel(run_dir: Path) -> str:
    """The run as typed from its runs folder's parent (``runs/<id>``)."""
    return f"runs/{run_dir.name}"


def test_ls_prints_folders_first_with_their_sizes_then_files_and_links(
    run: tuple[Path, str],
) -> None:
    run_dir, name = run
    home = run_dir.parent.parent
    listed = cli(home, "ls", rel(run_dir), name)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert [line.split()[0] for line in lines] == ["dir", "file", "file", "symlink"]
    assert lines[0].endswith("  wepp/") and "3.8 KiB in 2 files" in lines[0]
    assert lines[1].endswith("  README.md") and "6 B" in lines[1]
    assert lines[2].endswith("  blob.bin") and "10.0 KiB" in lines[2]
    assert lines[3].endswith("  latest -> wepp/H1.dat")
    deep = cli(home, "ls", rel(run_dir), name, "wepp", "--recursive").stdout.decode()
    assert [line.split()[-1] for line in deep.splitlines()] == [
        "wepp/H1.dat", "wepp/out/", "wepp/out/loss.txt"
    ]  # fmt: skip


def test_ls_json_is_the_routes_shape_for_the_whole_folder(run: tuple[Path, str]) -> None:
    run_dir, name = run
    body = json.loads(cli(run_dir.parent, "ls", run_dir.name, name, "wepp/", "--json").stdout)
    assert set(body) == {"entries", "next", "total", "hidden"}
    assert body["next"] is None and body["total"] == 2 and body["hidden"] == 0
    folder, h1 = body["entries"]
    assert (folder["path"], folder["type"], folder["files"], folder["bytes"]) == (
        "wepp/out", "dir", 1, len(TEXT)
    )  # fmt: skip
    assert h1["path"] == "wepp/H1.dat" and h1["size"] == 3 and h1["mtime"].endswith("Z")
    assert set(h1) == {"path", "type", "size", "mode", "mtime", "sha256", "target"}


def test_ls_search_lists_the_paths_containing_the_text(run: tuple[Path, str]) -> None:
    run_dir, name = run
    home = run_dir.parent.parent
    found = cli(home, "ls", rel(run_dir), name, "--search", ".DAT")
    assert found.returncode == 0, found.stderr
    assert [line.split()[-1] for line in found.stdout.decode().splitlines()] == ["wepp/H1.dat"]
    body = json.loads(cli(home, "ls", rel(run_dir), name, "wepp", "-s", "o", "--json").stdout)
    assert [e["path"] for e in body["entries"]] == ["wepp/out", "wepp/out/loss.txt"]
    assert body["total"] == 2
    none = cli(home, "ls", rel(run_dir), name, "--search", "nothing here")
    assert (
        none.returncode == 0 and none.stdout.decode().strip() == "(no path contains 'nothing here')"
    )
    bad = cli(home, "ls", rel(run_dir), name, "--search", "a\tb")
    assert bad.returncode == 2 and b"control character" in bad.stderr


def test_ls_of_a_missing_archive_or_folder_exits_1_and_a_climbing_prefix_2(
    run: tuple[Path, str],
) -> None:
    run_dir, name = run
    home = run_dir.parent
    missing = cli(home, "ls", run_dir.name, f"{run_dir.name}.20200101T000000Z.zip", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"
    nowhere = cli(home, "ls", run_dir.name, name, "nowhere/")
    assert nowhere.returncode == 1 and b"holds nothing" in nowhere.stderr
    assert cli(home, "ls", run_dir.name, name, "../..").returncode == 2


def test_cat_writes_the_files_exact_bytes_to_stdout(run: tuple[Path, str]) -> None:
    run_dir, name = run
    home = run_dir.parent
    got = cli(home, "cat", run_dir.name, name, "blob.bin")
    assert got.returncode == 0 and got.stdout == BINARY and got.stderr == b""
    assert cli(home, "cat", run_dir.name, name, "wepp/out/loss.txt").stdout == TEXT
    folder = cli(home, "cat", run_dir.name, name, "wepp")
    assert folder.returncode == 1 and folder.stdout == b""
    assert cli(home, "cat", run_dir.name, name, "wepp/../blob.bin").returncode == 2


def test_cat_of_a_file_damaged_mid_way_stops_with_exit_1(run_dir: Path) -> None:
    build_tree(run_dir, {"noise.bin": File(NOISE)})
    name = create_archive(run_dir).name
    path = run_dir / "archives" / name
    data = bytearray(path.read_bytes())
    data[data.index(NOISE[2_500_000:2_500_032])] ^= 0xFF
    path.write_bytes(bytes(data))
    got = cli(run_dir.parent, "cat", run_dir.name, name, "noise.bin")
    assert got.returncode == 1 and b"CRC mismatch" in got.stderr
    assert 0 < len(got.stdout) < len(NOISE) and got.stdout == NOISE[: len(got.stdout)]


def test_extract_writes_below_a_relative_dest_and_never_into_the_run_unless_asked(
    run: tuple[Path, str], tmp_path: Path
) -> None:
    run_dir, name = run
    (tmp_path / "out").mkdir()
    before = tree_bytes(run_dir)
    done = cli(tmp_path, "extract", f"runs/{run_dir.name}", name, "wepp", "README.md",
               "-o", "out", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "files": ["wepp/H1.dat", "wepp/out/loss.txt", "README.md"],
        "bytes": 3 + len(TEXT) + 6, "dest": "out",
    }  # fmt: skip
    assert (tmp_path / "out" / "wepp" / "out" / "loss.txt").read_bytes() == TEXT
    again = cli(tmp_path, "extract", f"runs/{run_dir.name}", name, "README.md", "-o", "out")
    assert again.returncode == 2 and b"exists" in again.stderr
    assert cli(tmp_path, "extract", f"runs/{run_dir.name}", name, "README.md", "-o", "out",
               "--overwrite").returncode == 0  # fmt: skip

    (run_dir / "README.md").write_bytes(b"changed\n")
    into = cli(run_dir, "extract", ".", name, "README.md", "-o", ".")
    assert into.returncode == 2 and b"inside the run" in into.stderr
    inside = cli(run_dir / "wepp", "extract", "..", name, "README.md", "-o", ".")
    assert inside.returncode == 2
    assert tree_bytes(run_dir) == {**before, "README.md": b"changed\n"}  # nothing written
    asked = cli(run_dir, "extract", ".", name, "README.md", "-o", ".", "--into-run",
                "--overwrite")  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert (run_dir / "README.md").read_bytes() == b"# run\n"


def test_diff_groups_the_changes_and_stat_gives_only_the_summary(run: tuple[Path, str]) -> None:
    run_dir, name = run
    (run_dir / "wepp" / "out" / "loss.txt").write_bytes(TEXT.replace(b"row 7\n", b"ROW 7\n"))
    (run_dir / "new.txt").write_bytes(b"hello\n")
    (run_dir / "README.md").unlink()
    home = run_dir.parent
    shown = cli(home, "diff", run_dir.name, name)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert "Added (1):\n  + new.txt  6 B\n" in text
    assert "Removed (1):\n  - README.md  6 B\n" in text
    assert "Modified (1):\n  ~ wepp/out/loss.txt  " in text and "[content]" in text
    assert "Type changed" not in text
    stat = cli(home, "diff", run_dir.name, name, "--stat").stdout.decode()
    assert stat.splitlines() == [text.splitlines()[-1]]
    assert stat.startswith("added 1 (1 file, 6 B); removed 1 (1 file, 6 B); modified 1")

    body = json.loads(cli(home, "diff", run_dir.name, name, "--json").stdout)
    assert [r["path"] for r in body["added"]] == ["new.txt"]
    assert body["total"] == 3 and body["next"] is None and body["against"] is None
    summary = json.loads(cli(home, "diff", run_dir.name, name, "--stat", "--json").stdout)
    assert "added" not in summary and summary["summary"]["removed"]["entries"] == 1


def test_diff_against_another_archive_and_when_nothing_changed(run: tuple[Path, str]) -> None:
    run_dir, name = run
    home = run_dir.parent
    same = cli(home, "diff", run_dir.name, name).stdout.decode()
    assert same.startswith(f"No changes from {name} to the run.\n")
    (run_dir / "new.txt").write_bytes(b"hello\n")
    second = create_archive(run_dir).name
    body = json.loads(cli(home, "diff", run_dir.name, name, second, "--json").stdout)
    assert body["against"] == second and [r["path"] for r in body["added"]] == ["new.txt"]
    missing = cli(home, "diff", run_dir.name, name, f"{run_dir.name}.20200101T000000Z.zip")
    assert missing.returncode == 1
