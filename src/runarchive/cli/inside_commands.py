"""Commands inside one archive: ``ls``, ``cat``, ``extract`` and ``diff`` (issue 14's read side).

The same core values the HTTP routes answer with (``core.inside``, ``core.member``,
``core.compare``): ``--json`` prints their ``as_json()`` (the whole listing or diff, never a
page). Registered on ``runarchive`` by ``cli/__init__.py``; like every local command they import
only click and the core. Exit codes from ``exits.py``: a run, archive or path that is not
there is 1 (not found), a path that climbs 2, damage 1.

``cat`` streams one file to stdout, binary safe, one bounded piece at a time; damage found
after bytes went out ends it with exit 1 and a message on stderr (the bytes before it were
right). ``extract`` writes below DEST by handle (``core.extract_files``) and refuses a DEST
inside the run unless ``--into-run`` says so: restore is the way to change a run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runarchive.core import human_bytes

if TYPE_CHECKING:  # each command imports what it runs when it runs (start-up: --help, list)
    from runarchive.core import Change, Diff, Entry

from .exits import reporting

F = TypeVar("F", bound=Callable[..., Any])
RUN_DIR = click.Path(exists=False, file_okay=False, path_type=Path, resolve_path=True)
PAGE = 1000  # the largest page the core gives: the CLI prints whole listings
PIECE = 1 << 20
BUCKETS = (("added", "Added", "+"), ("removed", "Removed", "-"),
           ("modified", "Modified", "~"), ("type_changed", "Type changed", "!"))  # fmt: skip


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(func)


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def _when(entry: Entry) -> str:
    iso = entry.as_json()["mtime"]
    return str(iso)[:19].replace("T", " ") if iso else "-"


def _row(entry: Entry) -> str:
    """One line of ``ls``: kind, size (a folder's: its subtree's), time, path."""
    if entry.type == "dir":
        size = f"{human_bytes(entry.bytes or 0)} in {entry.files} file{'s' * (entry.files != 1)}"
        name = entry.path + "/"
    else:
        size = human_bytes(entry.size) if entry.type == "file" else ""
        name = entry.path + (f" -> {entry.target}" if entry.target is not None else "")
    return f"{entry.type:<7}  {size:>22}  {_when(entry):<19}  {name}"


@click.command("ls")
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@click.argument("prefix", default="")
@click.option("--recursive", "-r", is_flag=True, help="The whole subtree, each folder first.")
@click.option("--search", "-s", metavar="TEXT",
              help="Only the subtree's paths containing TEXT (case-insensitive).")  # fmt: skip
@_json_option
def ls(
    run_dir: Path, name: str, prefix: str, recursive: bool, search: str | None, as_json: bool
) -> None:
    """List folder PREFIX (default: the top) inside archive NAME of RUN_DIR, folders first."""
    from runarchive.core import Listing, list_entries, open_contents, open_run

    with reporting(as_json), open_run(run_dir) as run, open_contents(run, name) as contents:
        page = list_entries(contents, prefix, limit=PAGE, recursive=recursive, search=search)
        rows = list(page.entries)
        while page.next is not None:
            page = list_entries(contents, prefix, cursor=page.next, limit=PAGE,
                                recursive=recursive, search=search)  # fmt: skip
            rows += page.entries
    whole = Listing(page.prefix, tuple(rows), None, page.total, page.hidden)
    if as_json:
        _echo_json(whole.as_json())
        return
    for entry in rows:
        click.echo(_row(entry))
    if not rows:
        click.echo(f"(no path contains {search!r})" if search else "(empty folder)")
    if whole.hidden:
        click.echo(f"note: {whole.hidden} entries of the archive are not shown (names a restore "
                   "would refuse, or held twice); none can be read.", err=True)  # fmt: skip


@click.command("cat")
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@click.argument("path")
def cat(run_dir: Path, name: str, path: str) -> None:
    """Write file PATH of archive NAME to stdout, byte for byte, streamed from the zip."""
    from runarchive.core import open_contents, open_member, open_run

    out = sys.stdout.buffer
    with (
        reporting(),
        open_run(run_dir) as run,
        open_contents(run, name) as contents,
        open_member(contents, path) as stream,
    ):
        try:
            for piece in stream.chunks(PIECE):
                out.write(piece)
            out.flush()
        except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            sys.exit(1)


@click.command("extract")
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    "dest",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="An existing folder to write into (never inside the run, unless --into-run).",
)
@click.option(
    "--into-run",
    is_flag=True,
    help="Allow DEST inside RUN_DIR (restore is the way to bring a run back).",
)
@click.option("--overwrite", is_flag=True, help="Replace files that exist in DEST (whole).")
@_json_option
def extract(run_dir: Path, name: str, paths: tuple[str, ...], dest: Path, into_run: bool,
            overwrite: bool, as_json: bool) -> None:  # fmt: skip
    """Write files PATH… (a folder: every file below it) of archive NAME below DEST."""
    from runarchive.core import extract_files, open_contents, open_run

    with reporting(as_json), open_run(run_dir) as run, open_contents(run, name) as contents:
        done = extract_files(contents, list(paths), dest, run_path=run_dir, into_run=into_run,
                             overwrite=overwrite)  # fmt: skip
    if as_json:
        _echo_json({"files": list(done.files), "bytes": done.bytes, "dest": str(dest)})
        return
    n = len(done.files)
    click.echo(f"Extracted {n} file{'s' * (n != 1)} ({human_bytes(done.bytes)}) to {dest}")


def _change(mark: str, change: Change) -> str:
    if change.type_a is not None:
        return f"  {mark} {change.path}  ({change.type_a} -> {change.type})"
    sizes = [human_bytes(s) for s in (change.size_a, change.size_b) if s is not None]
    how = f"  [{change.reason.value}]" if change.reason is not None else ""
    shown = " -> ".join(sizes) if change.type == "file" else change.type
    return f"  {mark} {change.path}  {shown}{how}"


def _stat(diff: Diff) -> str:
    parts = []
    for bucket, title, _ in BUCKETS:
        tally = diff.summary[bucket]
        files = f"{tally.files} file{'s' * (tally.files != 1)}, {human_bytes(tally.bytes)}"
        parts.append(f"{title.lower()} {tally.entries} ({files})")
    proofs = ", ".join(f"{p.value} {n}" for p, n in diff.unchanged_by.items())
    return "; ".join(parts) + f"; unchanged {diff.unchanged} (proven by {proofs})"


@click.command("diff")
@click.argument("run_dir", type=RUN_DIR)
@click.argument("name")
@click.argument("other", required=False)
@click.option("--stat", "stat_only", is_flag=True, help="Only the summary.")
@_json_option
def diff(run_dir: Path, name: str, other: str | None, stat_only: bool, as_json: bool) -> None:
    """Show what changed from archive NAME to the run (or to archive OTHER of the run).

    Exit 0 whether or not anything changed.
    """
    from runarchive.core import (
        diff_against_run,
        diff_archives,
        open_contents,
        open_run,
    )

    with reporting(as_json), open_run(run_dir) as run, open_contents(run, name) as contents:
        if other is None:
            found = diff_against_run(contents, run)
        else:
            with open_contents(run, other) as target:
                found = diff_archives(contents, target)
    if as_json:
        body = found.as_json()
        if stat_only:
            body = {k: v for k, v in body.items() if k not in {b for b, _, _ in BUCKETS}}
        _echo_json(body)
        return
    if not stat_only:
        for bucket, title, mark in BUCKETS:
            rows: tuple[Change, ...] = getattr(found, bucket)
            if rows:
                click.echo(f"{title} ({len(rows)}):")
                for change in rows:
                    click.echo(_change(mark, change))
        if found.total == 0:
            click.echo(f"No changes from {name} to {other or 'the run'}.")
    click.echo(_stat(found))
    if found.skipped:
        click.echo(f"note: {len(found.skipped)} run paths were not compared (special files, "
                   "names not UTF-8).", err=True)  # fmt: skip


COMMANDS = [ls, cat, extract, diff]
