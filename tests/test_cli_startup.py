"""What the CLI imports at start: local commands and ``--help`` load no service layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from runarchive.cli import SERVICE_COMMANDS, cli

SERVICE_MODULES = ("rq", "redis", "flask", "valkey", "sqlalchemy", "gunicorn")


def _imports_after(
    args: list[str],
    env_extra: dict[str, str] | None = None,
    heavy: tuple[str, ...] = (*SERVICE_MODULES, "rich"),
) -> list[str]:
    """Run the CLI with ``args`` in a fresh interpreter; return which ``heavy`` ones it loaded."""
    probe = (
        "import json, sys\n"
        "from runarchive.cli import cli\n"
        "try:\n"
        "    cli(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"heavy = {heavy!r}\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **(env_extra or {})}
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_the_help_table_of_service_commands_matches_the_real_commands() -> None:
    from runarchive.cli.jobs_commands import COMMANDS
    from runarchive.cli.web_commands import COMMANDS as WEB_COMMANDS

    real = {c.name: (c.help or "").split("\n\n")[0].strip() for c in COMMANDS + WEB_COMMANDS}
    assert real == SERVICE_COMMANDS
    assert not any(c.hidden or c.short_help or c.deprecated for c in COMMANDS + WEB_COMMANDS)


def test_help_lists_every_command_as_click_would_with_the_real_ones() -> None:
    import click

    from runarchive.cli.jobs_commands import COMMANDS
    from runarchive.cli.web_commands import COMMANDS as WEB_COMMANDS

    shown = CliRunner().invoke(cli, ["--help"], terminal_width=100).output
    every = {c.name or "": c for c in COMMANDS + WEB_COMMANDS} | cli.commands
    plain = click.Group("cli", commands=every, help=cli.help, params=cli.params)
    assert shown == CliRunner().invoke(plain, ["--help"], terminal_width=100).output


def test_help_imports_neither_the_service_layers_nor_rich() -> None:
    assert _imports_after(["--help"]) == []


def test_list_and_archive_off_a_terminal_import_neither_the_service_layers_nor_rich(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    (run / "wepp").mkdir(parents=True)
    (run / "wepp" / "H1.pass").write_text("x" * 1000)
    assert _imports_after(["archive", str(run)]) == []
    assert _imports_after(["list", str(run)]) == []


def test_a_service_command_still_runs_when_named() -> None:
    shown = CliRunner().invoke(cli, ["worker", "--help"])
    assert shown.exit_code == 0 and "Run RQ worker(s)" in shown.output


# What only creating or restoring needs: the deflate library, the thread pool, the journal.
ENGINE_MODULES = (
    "runarchive.core.create",
    "runarchive.core.restore",
    "concurrent.futures",
    "secrets",
    "subprocess",
)


def test_help_and_list_load_neither_the_create_nor_the_restore_engine(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert _imports_after(["--help"], heavy=(*ENGINE_MODULES, "isal")) == []
    assert _imports_after(["list", str(run)], heavy=ENGINE_MODULES) == []


def test_help_loads_no_run_code_at_all() -> None:
    # Naming the link modes for --links must not load the tree scan and the run handles.
    run_code = ("runarchive.core.tree", "runarchive.core.rundir", "runarchive.core.manifest")
    assert _imports_after(["--help"], heavy=run_code) == []


def test_archive_loads_the_create_engine_and_not_the_restore_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.txt").write_text("a")
    loaded = _imports_after(["archive", str(run)], heavy=ENGINE_MODULES)
    assert loaded == ["concurrent.futures", "runarchive.core.create", "secrets"]


# What reading central directories does not need: the deflate library, hashlib (OpenSSL),
# logging (catalog warns through it only when a state file fails) and strptime's module.
READER_EXTRAS = ("isal", "hashlib", "_hashlib", "logging", "_strptime")


def test_list_of_a_run_with_an_archive_loads_no_inflate_hashing_logging_or_strptime(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    (run / "wepp").mkdir(parents=True)
    (run / "wepp" / "H1.pass").write_text("x" * 1000)
    assert _imports_after(["archive", str(run)]) == []
    assert _imports_after(["list", str(run)], heavy=READER_EXTRAS) == []


def test_archive_parses_archive_names_without_strptime(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.txt").write_text("a")
    assert _imports_after(["archive", str(run)], heavy=("_strptime",)) == []
    # The second archive reads the first one as its files cache, and prunes after it.
    assert (
        _imports_after(["archive", str(run)], heavy=("_strptime", "runarchive.core.restore")) == []
    )
