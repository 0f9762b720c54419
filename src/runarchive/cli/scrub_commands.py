"""``runarchive scrub [RUN_DIR] [--json]``: verify every archive now, as the periodic scrub does.

A local command (click and the core only; nothing of RQ or redis-py unless a Redis URL is
configured): it checks every archive of RUN_DIR — or of every run under the runs root
(``--runs-root``/``RUNARCHIVE_RUNS_ROOT``, laid out as ``RUNARCHIVE_RUN_LAYOUT`` says) when
RUN_DIR is absent — one archive at a time, by handle, exactly as ``verify`` checks one, and prints
a line (or a JSON row) per archive. With a Redis URL (``--redis-url``, ``REDIS_URL``) each result
is recorded where the scrub job keeps its own (``jobs.health``: outside the run, bound to the
archive file's identity), so the dashboard's badges and the restore refusal follow.

``--rate`` bounds the reads (bytes per second; default unbounded: an operator who types the
command wants the answer now). Exit code ``DAMAGE_FOUND`` (5) when any archive is damaged, so
cron can tell "damage found" from "could not run" (1, 2).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .exits import BAD_INPUT, DAMAGE_FOUND, reporting

if TYPE_CHECKING:
    from runarchive.core import CheckResult, RunDir

RUN_DIR = click.Path(exists=False, file_okay=False, path_type=Path, resolve_path=True)


def _runs(run_dir: Path | None, runs_root: Path | None, layout: str) -> list[Path]:
    from runarchive.core import runs_under

    if run_dir is not None:
        return [run_dir]
    if runs_root is None:
        click.echo(
            "error: give RUN_DIR, or a runs root (--runs-root or RUNARCHIVE_RUNS_ROOT).", err=True
        )
        sys.exit(BAD_INPUT)
    return list(runs_under(runs_root, layout))


@click.command("scrub")
@click.argument("run_dir", type=RUN_DIR, required=False)
@click.option(
    "--runs-root", type=click.Path(file_okay=False, path_type=Path), envvar="RUNARCHIVE_RUNS_ROOT",
    default=None, show_envvar=True, help="Without RUN_DIR: check every run under this folder.",
)  # fmt: skip
@click.option(
    "--run-layout", type=click.Choice(["auto", "flat", "sharded"]), default="auto",
    envvar="RUNARCHIVE_RUN_LAYOUT", show_envvar=True, show_default=True,
    help="How runs sit under the runs root.",
)  # fmt: skip
@click.option(
    "--rate", type=click.IntRange(min=0), default=0, metavar="BYTES",
    help="Read at most BYTES per second (0, the default: unbounded).",
)  # fmt: skip
@click.option(
    "--redis-url", envvar=["REDIS_URL", "RUNARCHIVE_REDIS_URL"], default=None,
    help="Record each result as the scrub job does (the dashboard's health badges).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def scrub(
    run_dir: Path | None,
    runs_root: Path | None,
    run_layout: str,
    rate: int,
    redis_url: str | None,
    as_json: bool,
) -> None:
    """Verify every archive of RUN_DIR (or of every run under the runs root) now."""
    rows: list[dict[str, object]] = []
    with reporting(as_json):
        runs = _runs(run_dir, runs_root, run_layout)
        record: Callable[[str, CheckResult], None] | None = None
        if redis_url:
            from runarchive.jobs.health import recording  # only now: RQ and redis-py load

            with recording(redis_url) as record:
                for path in runs:
                    _scrub_one(path, rate, record, rows, as_json)
        else:
            for path in runs:
                _scrub_one(path, rate, record, rows, as_json)
    damaged = sum(1 for row in rows if row["health"] == "damaged")
    if as_json:
        click.echo(json.dumps({"archives": rows, "checked": len(rows), "damaged": damaged}))
    else:
        runs_seen = len({row["run"] for row in rows})
        click.echo(
            f"Checked {len(rows)} archive{'s' * (len(rows) != 1)} of {runs_seen} "
            f"run{'s' * (runs_seen != 1)}: {damaged} damaged."
        )
    if damaged:
        sys.exit(DAMAGE_FOUND)


def _scrub_one(
    path: Path,
    rate: int,
    record: Callable[[str, CheckResult], None] | None,
    rows: list[dict[str, object]],
    as_json: bool,
) -> None:
    from runarchive.core import scrub_run

    def done(run: RunDir, result: CheckResult) -> None:
        if record is not None:
            record(run.runid, result)
        rows.append({"run": run.runid, **result.as_json()})
        if not as_json:
            verdict = "ok" if result.ok else f"DAMAGED: {result.damage}"
            click.echo(f"{run.runid}/{result.name}: {verdict}")

    scrub_run(path, rate=rate or None, on_result=done)


COMMANDS = [scrub]
