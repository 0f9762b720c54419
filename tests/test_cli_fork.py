"""``runarchive fork RUN_DIR NAME NEW_RUN_DIR`` as a process, typed as a user types it.

Relative paths from another working directory, the exit codes of every refusal, and what
the new run holds (the archive exactly, its ``.nodb`` paths rewritten, no ``archives/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runarchive.core import create_archive
from runarchive.core.fork import STAGE_PREFIX
from tests.support.processes import CLI, environment
from tests.support.tree import Dir, File, Link, build_tree, snapshot


def fork_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "fork", *args], capture_output=True, text=True, timeout=60, cwd=cwd,
        env=environment(),
    )  # fmt: skip


def _source(run_dir: Path) -> tuple[str, dict[str, tuple[object, ...]]]:
    build_tree(run_dir, {"a.txt": File(b"a\n"), "w": Dir(0o750), "w/x": File(b"x\n"),
                         "latest": Link("a.txt")})  # fmt: skip
    (run_dir / "wepp.nodb").write_text(json.dumps({"wd": str(run_dir)}))
    name = create_archive(run_dir).name
    return name, snapshot(run_dir)


def test_fork_with_relative_paths_from_another_folder_makes_the_new_run(
    run_dir: Path, tmp_path: Path
) -> None:
    name, archived = _source(run_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "a.txt").write_bytes(b"edited since\n")
    source_now = snapshot(run_dir)

    proc = fork_cli("../runs/ambitious-pinecone", name, "../runs/forked-pinecone/", cwd=elsewhere)

    new = run_dir.parent / "forked-pinecone"
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"Fork complete: forked-pinecone from {name} at {new} (3 files)"
    forked = snapshot(new)
    assert {k for k in archived if forked[k] != archived[k]} == {"wepp.nodb"}
    assert set(forked) == set(archived) and not (new / "archives").exists()
    assert json.loads((new / "wepp.nodb").read_text()) == {"wd": str(new)}
    assert snapshot(run_dir) == source_now
    assert not elsewhere.joinpath("forked-pinecone").exists()
    assert [n for n in os.listdir(run_dir.parent) if n.startswith(STAGE_PREFIX)] == []


def test_fork_json_and_keep_nodb_paths(run_dir: Path) -> None:
    name, archived = _source(run_dir)
    proc = fork_cli(str(run_dir), name, "kept", "--json", "--keep-nodb-paths", cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["runid"] == "kept" and out["name"] == name and out["files"] == 3
    assert out["nodb_files"] == ["wepp.nodb"]
    assert snapshot(run_dir.parent / "kept") == archived  # byte for byte, paths as archived


def test_fork_refusals_have_their_exit_codes_and_change_nothing(
    run_dir: Path, tmp_path: Path
) -> None:
    name, _ = _source(run_dir)
    root = run_dir.parent
    (root / "taken").mkdir()
    (root / "linked").symlink_to(tmp_path)
    before = sorted(os.listdir(root))
    cases = [
        (("ambitious-pinecone", name, "taken"), 2, "already exists"),
        (("ambitious-pinecone", name, "linked"), 2, "already exists"),
        (("ambitious-pinecone", name, "x/.."), 2, "Invalid run id"),
        (("ambitious-pinecone", name, "."), 2, "Invalid run id"),
        (("ambitious-pinecone", name, "no-such-folder/new"), 2, "does not exist"),
        (("ambitious-pinecone", "../../etc/passwd.zip", "new"), 2, "Invalid archive name"),
        (("ambitious-pinecone", "ambitious-pinecone.20000101T000000Z.zip", "new"), 1,
         "not found"),
        (("no-such-run", name, "new"), 1, "not found"),
    ]  # fmt: skip
    for args, code, says in cases:
        proc = fork_cli(*args, cwd=root)
        assert proc.returncode == code, (args, proc.stderr)
        assert says in proc.stderr, (args, proc.stderr)
    assert sorted(os.listdir(root)) == before
    assert sorted(os.listdir(tmp_path)) == ["runs"]  # nothing written through the link


def test_fork_loads_no_service_layer(run_dir: Path) -> None:
    name, _ = _source(run_dir)
    probe = (
        "import json, sys\n"
        "from runarchive.cli import cli\n"
        "try:\n"
        "    cli(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('rq', 'redis', 'flask', 'valkey', 'sqlalchemy', 'gunicorn')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    target = str(run_dir.parent / "light")
    done = subprocess.run(
        [sys.executable, "-c", probe, "fork", str(run_dir), name, target],
        capture_output=True, text=True, env=environment(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert (run_dir.parent / "light" / "wepp.nodb").is_file()
