"""What the CLI imports at start: local commands and ``--help`` load no service layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

import runarchive
from runarchive.cli import LOCAL_COMMANDS, SERVICE_COMMANDS, cli, local_commands

SERVICE_MODULES = ("rq", "redis", "flask", "valkey", "sqlalchemy", "gunicorn")
# The tree under test, first on the probes' path: not whatever copy the venv has installed.
SOURCE = str(Path(runarchive.__file__).resolve().parents[1])


def _modules_after(
    args: list[str],
    env_extra: dict[str, str] | None = None,
    group: str = "from runarchive.cli import cli\n",
) -> list[str]:
    """Run the CLI (or the ``cli`` that the code ``group`` makes) with ``args`` in a fresh
    interpreter; return every module it loaded (json is imported after, to say it)."""
    probe = (
        "import sys\n"
        f"{group}"
        "try:\n"
        "    cli(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "loaded = sorted(sys.modules)\n"
        "import json\n"
        "print(json.dumps(loaded))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONPATH": SOURCE}
    done = subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True, text=True, env={**env, **(env_extra or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def _imports_after(
    args: list[str],
    env_extra: dict[str, str] | None = None,
    heavy: tuple[str, ...] = (*SERVICE_MODULES, "rich"),
) -> list[str]:
    """Run the CLI with ``args`` in a fresh interpreter; return which ``heavy`` ones it loaded."""
    return sorted(set(heavy) & set(_modules_after(args, env_extra)))


def _every_local_command() -> dict[str, click.Command]:
    return {name: c for module in LOCAL_COMMANDS for name, c in local_commands(module).items()}


def test_the_help_table_of_service_commands_matches_the_real_commands() -> None:
    from runarchive.cli.jobs_commands import COMMANDS
    from runarchive.cli.web_commands import COMMANDS as WEB_COMMANDS

    real = {c.name: (c.help or "").split("\n\n")[0].strip() for c in COMMANDS + WEB_COMMANDS}
    assert real == SERVICE_COMMANDS
    assert not any(c.hidden or c.short_help or c.deprecated for c in COMMANDS + WEB_COMMANDS)


def test_the_help_table_of_the_other_modules_commands_matches_the_real_commands() -> None:
    for module, table in LOCAL_COMMANDS.items():
        real = local_commands(module)
        assert {n: (c.help or "").split("\n\n")[0].strip() for n, c in real.items()} == table
        assert not any(c.hidden or c.short_help or c.deprecated for c in real.values())
    # Every command module of the package is in the table (or is a service one).
    package = Path(SOURCE) / "runarchive" / "cli"
    modules = {p.stem for p in package.glob("*_commands.py")} - {"jobs_commands", "web_commands"}
    assert modules - {"quota_commands"} == set(LOCAL_COMMANDS)


def test_a_command_of_another_module_is_that_command() -> None:
    from runarchive.cli.inside_commands import ls

    group = click.Context(cli)
    assert cli.get_command(group, "ls") is ls
    assert cli.get_command(group, "no-such-command") is None
    assert set(cli.list_commands(group)) == {*cli.commands, *_every_local_command(),
                                              *SERVICE_COMMANDS}  # fmt: skip


def test_a_mistyped_command_is_answered_with_the_same_suggestions_as_before() -> None:
    # click suggests from the group's registered commands: the local ones of every module
    # (registered at import before they were loaded when named), never the service ones.
    for typed, says in [("lis", "(Did you mean one of: 'list', 'ls'?)"),
                        ("undoo", "Did you mean 'undo'?"), ("scrubb", "Did you mean 'scrub'?"),
                        ("serv", "No such command 'serv'.\n")]:  # fmt: skip
        shown = CliRunner().invoke(cli, [typed])
        assert shown.exit_code == 2 and f"Error: No such command {typed!r}." in shown.output
        assert says in shown.output, shown.output


def test_help_lists_every_command_as_click_would_with_the_real_ones() -> None:
    import click

    from runarchive.cli.jobs_commands import COMMANDS
    from runarchive.cli.web_commands import COMMANDS as WEB_COMMANDS

    shown = CliRunner().invoke(cli, ["--help"], terminal_width=100).output
    every = {c.name or "": c for c in COMMANDS + WEB_COMMANDS} | _every_local_command()
    every |= cli.commands
    plain = click.Group("cli", commands=every, help=cli.help, params=cli.params)
    assert shown == CliRunner().invoke(plain, ["--help"], terminal_width=100).output


def test_help_imports_neither_the_service_layers_nor_rich() -> None:
    assert _imports_after(["--help"]) == []


def test_list_and_archive_off_a_terminal_import_neither_the_service_layers_nor_rich(
    tmp_path: Path,
) -> None:
    run = _one_file_run(tmp_path)
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


# A click group of one command, with --version: what click itself loads for a --help.
PLAIN_GROUP = (
    "import click\n"
    "cli = click.version_option('0', prog_name='plain')(click.Group('cli', help='A group.'))\n"
    "cli.add_command(click.Command('one', help='One command.'))\n"
)
# All that --help may load beyond that: the group, the two modules every command shares, and
# of the core the two modules its declarations name (the error base, the link modes).
HELP_MODULES = [
    "runarchive", "runarchive.cli", "runarchive.cli.common", "runarchive.cli.exits",
    "runarchive.core", "runarchive.core.errors", "runarchive.core.linkmode",
]  # fmt: skip


def test_help_loads_nothing_beyond_what_click_loads_for_a_plain_group_but_the_cli() -> None:
    plain = set(_modules_after(["--help"], group=PLAIN_GROUP))
    assert "click" in plain and "runarchive" not in plain
    assert sorted(set(_modules_after(["--help"])) - plain) == HELP_MODULES


# What start-up used to load and --help no longer does: the standard library's path, JSON and
# dataclass modules (click loads none of them), the other commands' modules, the web layer's
# commands, and the core's name rules and file-system helpers.
HELP_EXTRAS = (
    "pathlib", "json", "dataclasses", "getpass", "runarchive.cli.audit_commands",
    "runarchive.cli.retention_commands", "runarchive.cli.inside_commands",
    "runarchive.cli.web_commands", "runarchive.cli.quota_commands", "runarchive.core.names",
    "runarchive.core.fsutil", "runarchive.core.retention",
)  # fmt: skip


def test_help_loads_no_path_json_or_dataclass_module_and_no_other_commands() -> None:
    assert _imports_after(["--help"], heavy=HELP_EXTRAS) == []


def test_list_and_archive_load_only_the_command_modules_they_use(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.txt").write_text("a")

    def cli_modules(args: list[str]) -> list[str]:
        return [m for m in _modules_after(args) if m.startswith("runarchive.cli.")]

    shared = ["runarchive.cli.common", "runarchive.cli.exits"]
    # archive records its audit row and checks the site's quota; getpass only for a row.
    assert cli_modules(["archive", str(run)]) == [
        "runarchive.cli.audit_commands", *shared, "runarchive.cli.quota_commands",
    ]  # fmt: skip
    assert cli_modules(["list", str(run)]) == [*shared, "runarchive.cli.undo_line"]
    assert _imports_after(["archive", str(run)], heavy=("getpass",)) == []


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
    run = _one_file_run(tmp_path)
    assert _imports_after(["archive", str(run)]) == []
    assert _imports_after(["list", str(run)], heavy=READER_EXTRAS) == []


# What listing does not need: the archive reader (verify, restore, delete, pin), with its
# manifest parser and progress events; a list reads central directories and the pins only.
READER_MODULES = ("runarchive.core.reader", "runarchive.core.manifest", "runarchive.core.progress")


def test_list_of_a_run_with_an_archive_loads_no_reader_manifest_or_progress_module(
    tmp_path: Path,
) -> None:
    run = _one_file_run(tmp_path)
    assert _imports_after(["archive", str(run)]) == []
    assert _imports_after(["pin", str(run), "--json", _only_archive(run)]) == []
    assert _imports_after(["list", str(run)], heavy=READER_MODULES) == []


def _one_file_run(tmp_path: Path) -> Path:
    """A run of one small file, under ``tmp_path``."""
    run = tmp_path / "run"
    (run / "wepp").mkdir(parents=True)
    (run / "wepp" / "H1.pass").write_text("x" * 1000)
    return run


def _only_archive(run: Path) -> str:
    [name] = [p.name for p in (run / "archives").glob("*.zip")]
    return name


def test_archive_parses_archive_names_without_strptime(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.txt").write_text("a")
    assert _imports_after(["archive", str(run)], heavy=("_strptime",)) == []
    # The second archive reads the first one as its files cache, and prunes after it.
    assert (
        _imports_after(["archive", str(run)], heavy=("_strptime", "runarchive.core.restore")) == []
    )
