"""Quotas from the command line: the local ``archive`` under the site's per-run quota (exit 4,
nothing kept), and ``users quota``/``users list`` on the accounts database, an existing
database from the previous schema included."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from runarchive.cli import cli
from runarchive.core import create_archive, list_archives
from runarchive.web.db import Database
from runarchive.web.models import User

MIB = 1 << 20


def _files(run_dir: Path) -> list[str]:
    """The archives folder's entries but our state folder: archives and any temp file."""
    return sorted(n for n in os.listdir(run_dir / "archives") if n != ".runarchive")


def _noise(run_dir: Path, size: int) -> None:
    (run_dir / "noise.dat").write_bytes(os.urandom(size))


def test_archive_over_the_run_quota_exits_4_before_any_work(run_dir: Path) -> None:
    _noise(run_dir, MIB)
    first = create_archive(run_dir, "one")
    env = {"RUNARCHIVE_QUOTA_RUN_BYTES": "1.5M"}
    result = CliRunner().invoke(cli, ["archive", str(run_dir), "--json"], env=env)
    assert result.exit_code == 4, result.output
    error = json.loads(result.output)["error"]
    assert error["code"] == "quota_exceeded"
    assert error["message"].startswith(
        f"Run {run_dir.name} uses 1.0 MiB of 1.5 MiB for archives (the next one needs about "
    )
    assert error["message"].endswith("; delete or prune archives, or ask an admin.")
    assert _files(run_dir) == [first.name]


def test_archive_count_quota_of_the_site(run_dir: Path) -> None:
    _noise(run_dir, 1000)
    create_archive(run_dir)
    result = CliRunner().invoke(
        cli, ["archive", str(run_dir)], env={"RUNARCHIVE_QUOTA_RUN_COUNT": "1"}
    )
    assert result.exit_code == 4
    assert f"Run {run_dir.name} has 1 of 1 archives" in result.output
    assert len(list_archives(run_dir)) == 1


def test_archive_larger_than_estimated_is_stopped_and_leaves_no_file(run_dir: Path) -> None:
    (run_dir / "zeros.dat").write_bytes(bytes(4 * MIB))
    tiny = create_archive(run_dir, "zeros")  # a ratio near 0: the next estimate is tiny
    (run_dir / "zeros.dat").unlink()
    _noise(run_dir, 3 * MIB)
    result = CliRunner().invoke(
        cli, ["archive", str(run_dir)], env={"RUNARCHIVE_QUOTA_RUN_BYTES": "2M"}
    )
    assert result.exit_code == 4, result.output
    assert "nothing was kept" in result.output
    assert _files(run_dir) == [tiny.name]  # no partial file


def test_archive_within_the_quota_works(run_dir: Path) -> None:
    _noise(run_dir, 100_000)
    result = CliRunner().invoke(
        cli, ["archive", str(run_dir), "--json"], env={"RUNARCHIVE_QUOTA_RUN_BYTES": "10M"}
    )
    assert result.exit_code == 0, result.output
    assert len(list_archives(run_dir)) == 1


def test_a_bad_quota_setting_is_a_usage_error(run_dir: Path) -> None:
    _noise(run_dir, 1000)
    result = CliRunner().invoke(
        cli, ["archive", str(run_dir)], env={"RUNARCHIVE_QUOTA_RUN_BYTES": "lots"}
    )
    assert result.exit_code == 2
    assert "RUNARCHIVE_QUOTA_RUN_BYTES" in result.output
    assert not (run_dir / "archives").exists() or list_archives(run_dir) == []


# The accounts schema of the release before quotas (users.session_generation, tokens.prefix).
PREVIOUS_SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL UNIQUE,
    password_hash VARCHAR(256) NOT NULL, is_admin BOOLEAN NOT NULL, created_at DATETIME NOT NULL,
    session_generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE run_access (id INTEGER PRIMARY KEY, runid VARCHAR(200) NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE, created_at DATETIME NOT NULL,
    CONSTRAINT uq_run_access UNIQUE (runid, user_id));
CREATE TABLE api_tokens (id INTEGER PRIMARY KEY, token_hash VARCHAR(64) NOT NULL UNIQUE,
    prefix VARCHAR(16), user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at DATETIME NOT NULL);
INSERT INTO users VALUES (1, 'ana', 'scrypt:x', 0, '2026-01-01 00:00:00.000000', 7);
INSERT INTO users VALUES (2, 'root', 'scrypt:y', 1, '2026-01-01 00:00:00.000000', 9);
INSERT INTO run_access VALUES (1, 'run-1', 1, '2026-01-01 00:00:00.000000');
"""


def _old_database(tmp_path: Path) -> str:
    path = tmp_path / "accounts.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(PREVIOUS_SCHEMA)
    return f"sqlite:///{path}"


def test_users_quota_on_a_database_of_the_previous_schema(tmp_path: Path) -> None:
    url = _old_database(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(cli, ["users", "quota", "ana", "--database-url", url])
    assert shown.exit_code == 0, shown.output
    assert shown.output == "quota of ana: bytes site default, archives site default\n"
    set_ = runner.invoke(
        cli, ["users", "quota", "ana", "--bytes", "10G", "--count", "30", "--database-url", url]
    )
    assert set_.exit_code == 0, set_.output
    assert set_.output == "quota of ana: bytes 10.0 GiB, archives 30\n"
    database = Database(url)
    try:
        user = database.session.scalar(select(User).where(User.name == "ana"))
        assert user is not None
        assert (user.quota_bytes, user.quota_count) == (10 << 30, 30)
        assert user.session_generation == 7  # the rest of the row is untouched
    finally:
        database.close()
    listed = runner.invoke(cli, ["users", "list", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["NAME", "ADMIN", "QUOTA", "BYTES", "ARCHIVES", "RUNS"]
    assert lines[1].split() == ["ana", "no", "10.0", "GiB", "30", "1"]
    assert lines[2].split() == ["root", "yes", "-", "-", "0"]
    # one at a time; "none" clears back to the site's
    runner.invoke(cli, ["users", "quota", "ana", "--bytes", "none", "--database-url", url])
    cleared = runner.invoke(cli, ["users", "quota", "ana", "--database-url", url])
    assert cleared.output == "quota of ana: bytes site default, archives 30\n"


def test_users_quota_refuses_bad_sizes_and_unknown_users(tmp_path: Path) -> None:
    url = _old_database(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(cli, ["users", "quota", "ana", "--bytes", "ten", "--database-url", url])
    assert bad.exit_code == 2 and "Invalid size 'ten'" in bad.output
    bad = runner.invoke(cli, ["users", "quota", "ana", "--count", "-3", "--database-url", url])
    assert bad.exit_code == 2
    unknown = runner.invoke(cli, ["users", "quota", "zed", "--bytes", "1G", "--database-url", url])
    assert unknown.exit_code == 1
    shown = runner.invoke(cli, ["users", "quota", "ana", "--database-url", url])
    assert shown.output == "quota of ana: bytes site default, archives site default\n"
