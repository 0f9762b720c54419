"""The command line as a script sees it: real processes, exit codes, stdout/stderr, JSON."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from runarchive.core import open_run, run_lock
from runarchive.core.create import FORK_MIN_ENTRIES
from tests.support.tree import File, archive_files, build_tree

# Local only: a Redis URL in the caller's environment would make the CLI consult that server.
LOCAL_ENV = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RUNARCHIVE_REDIS_URL")}


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from runarchive.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=LOCAL_ENV,
    )


@pytest.fixture
def run(run_dir: Path) -> Path:
    return build_tree(
        run_dir, {"wepp/H1.loss.dat": File(b"1 2 3\n" * 1000), "ron.nodb": File(b"{}")}
    )


def test_full_cycle_through_the_cli_with_json(run: Path) -> None:
    made = cli("archive", run, "--comment", "first try", "--json")
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    name = result["name"]
    assert result["files"] == 2

    listed = json.loads(cli("list", run, "--json").stdout)["archives"]
    assert [(a["name"], a["comment"], a["files"]) for a in listed] == [(name, "first try", 2)]
    assert listed[0]["created"].endswith("Z")

    assert json.loads(cli("verify", run, name, "--json").stdout)["ok"] is True
    (run / "ron.nodb").write_text("broken")
    restored = cli("restore", run, name)
    assert restored.returncode == 0 and f"Restore complete: {name}" in restored.stdout
    assert (run / "ron.nodb").read_bytes() == b"{}"

    deleted = cli("delete", run, name)
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"Archive deleted: {name}"
    after = json.loads(cli("list", run, "--json").stdout)
    assert after["archives"] == []
    # Issue 14: --json also says what `undo` would put back (the restore above kept it).
    assert (after["undo"]["available"], after["undo"]["restored"]) == (True, name)


def test_archive_of_many_small_files_by_worker_processes_through_the_cli(run_dir: Path) -> None:
    # Enough small files for create's worker processes: the command answers as with threads
    # and its archive verifies.
    files = FORK_MIN_ENTRIES + 100
    build_tree(
        run_dir, {f"out/H{i % 9}/f{i:05d}.txt": File(b"%d\n" % i * 40) for i in range(files)}
    )
    made = cli("archive", run_dir, "--json")
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert (result["files"], result["entries"], result["skipped"]) == (files, files + 10, [])
    verified = json.loads(cli("verify", run_dir, result["name"], "--json").stdout)
    assert verified["ok"] is True


def test_human_output_names_the_archive(run: Path) -> None:
    made = cli("archive", run, "-c", "hello")
    assert made.returncode == 0
    assert made.stdout.startswith("Archive ready: ambitious-pinecone.")
    assert "hello" in cli("list", run).stdout


def test_usage_errors_exit_2_and_say_what_is_wrong(run: Path) -> None:
    bad_name = cli("restore", run, "../../etc/passwd")
    assert bad_name.returncode == 2
    assert "Invalid archive name" in bad_name.stderr and "Traceback" not in bad_name.stderr
    hidden = cli("archive", run, "--comment", "evil\u202etxt")
    assert hidden.returncode == 2 and "direction-changing" in hidden.stderr
    assert cli("archive").returncode == 2
    assert not (run / "archives").exists() or archive_files(run / "archives") == []


def test_failed_operations_exit_1_with_a_json_error(run: Path) -> None:
    missing = cli("verify", run, "ambitious-pinecone.20200101T000000Z.zip", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"


def test_verify_of_a_damaged_archive_exits_1(run: Path) -> None:
    name = json.loads(cli("archive", run, "--json").stdout)["name"]
    path = run / "archives" / name
    data = bytearray(path.read_bytes())
    # Inside the first entry's data, past its local header's name and extra fields.
    head = data.index(b"PK\x03\x04")
    name_len, extra_len = struct.unpack_from("<HH", data, head + 26)
    at = head + 30 + name_len + extra_len + 2
    data[at] ^= 0x55
    path.write_bytes(bytes(data))
    out = cli("verify", run, name)
    assert out.returncode == 1 and "DAMAGED" in out.stdout


def test_a_busy_run_exits_3(run: Path) -> None:
    with open_run(run) as handle, run_lock(handle):
        busy = cli("archive", run)
    assert busy.returncode == 3 and "busy" in busy.stderr


def test_recover_reports_what_it_did(run: Path) -> None:
    (run / "archives").mkdir()
    (run / "archives" / ".tmp-x.partial").write_bytes(b"half")
    out = cli("recover", run, "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout) == {"action": "cleaned", "removed_temp": 1}
    assert archive_files(run / "archives") == []


def test_local_commands_without_a_redis_url_never_import_rq_redis_or_flask(run: Path) -> None:
    probe = (
        "import sys\n"
        "from runarchive.cli import cli\n"
        "for args in (['archive', sys.argv[1]], ['list', sys.argv[1]]):\n"
        "    try:\n"
        "        cli(args)\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "print(sorted(m for m in ('rq', 'redis', 'flask', 'valkey') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(run)], capture_output=True, text=True, env=LOCAL_ENV
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_long_comment_is_cut_to_40_characters_with_a_note_as_everywhere(run: Path) -> None:
    made = cli("archive", run, "--comment", "calibrated against the 2019 gauge data, v2")
    assert made.returncode == 0, made.stderr
    assert (
        "note: the comment was cut to 40 characters: 'calibrated against the 2019 gauge data,'"
        in (made.stderr)
    )
    [row] = json.loads(cli("list", run, "--json").stdout)["archives"]
    assert row["comment"] == "calibrated against the 2019 gauge data,"


def test_list_prints_plain_aligned_uncut_columns_when_piped(run: Path) -> None:
    long = "a comment of exactly forty characters ok"
    names = [json.loads(cli("archive", run, "-c", c, "--json").stdout)["name"] for c in (long, "b")]
    out = cli("list", run).stdout.splitlines()
    assert out[0].split() == ["name", "comment", "size", "created", "(UTC)", "files", "links", "ok"]
    assert len(out) == 3 and long in out[2] and names[0] in out[2] and names[1] in out[1]
    assert out[1].index(" b ") + 1 == out[0].index("comment")  # aligned under its heading
    assert not any(ch in "\u2500\u2502\u2026" for line in out for ch in line)  # no box, no …


def test_archive_links_follow_archives_link_targets_and_list_counts_the_links_kept(
    run: Path,
) -> None:
    os.symlink("wepp/H1.loss.dat", run / "loss.dat")
    os.symlink("/etc/hostname", run / "outside")
    stored = json.loads(cli("archive", run, "-c", "store", "--json").stdout)
    assert (stored["links"], stored["followed"]) == ("store", 0)
    made = cli("archive", run, "-c", "follow", "--links", "follow")
    assert made.returncode == 0, made.stderr
    assert "followed 1 link\n" in made.stdout
    assert "warning: outside -> /etc/hostname leaves the run and is never followed" in made.stdout
    listed = json.loads(cli("list", run, "--json").stdout)["archives"]
    assert {a["comment"]: a["links"] for a in listed} == {"store": 2, "follow": 1}


def test_the_links_mode_comes_from_runarchive_links_and_a_bad_one_is_a_usage_error(
    run: Path,
) -> None:
    os.symlink("wepp/H1.loss.dat", run / "loss.dat")
    env = {**LOCAL_ENV, "RUNARCHIVE_LINKS": "follow"}
    argv = [sys.executable, "-c", "from runarchive.cli import main; main()"]
    done = subprocess.run([*argv, "archive", str(run), "--json"], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert json.loads(done.stdout)["followed"] == 1
    bad = cli("archive", run, "--links", "copy")
    assert bad.returncode == 2 and "'copy' is not one of 'store', 'follow'" in bad.stderr


def test_recover_says_what_it_checked_and_found(run: Path) -> None:
    out = cli("recover", run)
    assert out.returncode == 0
    assert out.stdout.strip() == (
        "recover: checked the journal, state folders and temp files: "
        "no interrupted restore, nothing left over."
    )


def test_restore_says_how_many_newer_files_it_removes(run: Path) -> None:
    name = json.loads(cli("archive", run, "--json").stdout)["name"]
    (run / "made-later.txt").write_text("after the archive\n")
    (run / "also-later.dat").write_bytes(b"x" * 2048)
    done = cli("restore", run, name)
    assert done.returncode == 0, done.stderr
    assert "This restore removes 2 files created since the archive (2.0 KiB)" in done.stderr
    assert not (run / "made-later.txt").exists()


def test_restore_of_chosen_paths_says_what_it_restores_changes_and_removes_there_only(
    run: Path,
) -> None:
    chosen = run / "chosen"
    chosen.mkdir()
    (chosen / "edited.txt").write_bytes(b"e" * 100)
    (chosen / "lost.txt").write_bytes(b"l" * 50)
    name = json.loads(cli("archive", run, "--json").stdout)["name"]
    (chosen / "edited.txt").write_bytes(b"E" * 300)  # changed: 100 B written back
    (chosen / "lost.txt").unlink()  # restored: 50 B
    (chosen / "later.txt").write_text("after the archive\n")  # removed: under the chosen folder
    (run / "outside-later.txt").write_text("kept: not chosen\n")
    done = cli("restore", run, name, "--path", "chosen/")
    assert done.returncode == 0, done.stderr
    assert "This restore of chosen/ restores 1 file (50 B), changes 1 (100 B)" in done.stderr
    assert "This restore removes 1 file created since the archive (18 B)" in done.stderr
    assert (chosen / "edited.txt").read_bytes() == b"e" * 100
    assert (chosen / "lost.txt").read_bytes() == b"l" * 50
    assert not (chosen / "later.txt").exists() and (run / "outside-later.txt").exists()
