"""``runarchive audit``, and the audit rows of the local commands that change a run.

The local ``archive``, ``restore``, ``undo``, ``delete``, ``prune``, ``pin`` and ``unpin`` run
inside ``audited(run_dir, action, …)``: one row when they end — ``done`` (with the bytes and
archive), or ``refused``/``failed`` with the error's message — in the service's database,
when one is configured: ``RUNARCHIVE_DATABASE_URL``, else the SQLite file of
``RUNARCHIVE_DATA_DIR`` (the settings ``runarchive users`` uses). With neither, a local command
records nothing: the folder may belong to no service at all. The actor is ``cli:<login name>``,
the address ``local``; the run id is the run folder's name, as for the service's locks
(``jobs/local.py``). SQLAlchemy and the store (``web/auditlog.py``, which imports no Flask) are
imported only at that moment, so a local command still loads no Flask, RQ or redis-py, and one
without a database configured not even SQLAlchemy. A row that cannot be written goes to the
spool in the data dir; if even that fails, a warning says so and the command's own outcome and
exit code stand.

``runarchive audit [RUN_ID] [--since ISO] [--json]`` reads the same table, oldest first (a
log), every run or one; ``--since`` keeps the events at or after a moment (ISO 8601; no zone:
UTC). Exit 2 for a bad run id or moment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runarchive.core import RunArchiveError

from .common import database_options
from .exits import reporting

if TYPE_CHECKING:
    from runarchive.core import Outcome

# The core's audit names are imported where a row is made: ``--help`` and the commands that
# change nothing load neither them nor the paging module behind the cursors.
DATABASE_ENV = "RUNARCHIVE_DATABASE_URL"
DATA_DIR_ENV = "RUNARCHIVE_DATA_DIR"


def login_name() -> str:
    """The OS user a command runs as (``cli`` when there is none: a bare container's uid)."""
    import getpass  # here: only a row or a job names its user

    try:
        return getpass.getuser() or "cli"
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER
        return "cli"


def cli_user() -> str:
    """The actor of a command line: ``cli:<login name>``."""
    return f"cli:{login_name()}"


def _default_data_dir() -> Path:
    # ``jobs.settings.default_data_dir``'s rule, restated: importing the jobs layer loads RQ
    # (tests/test_audit_cli.py pins the two to the same folder).
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "runarchive"


def _configured_log(database_url: str | None = None, data_dir: Path | None = None) -> Any:
    """The service's audit log (``web.auditlog.AuditLog``), or None when none is configured."""
    url = database_url or os.environ.get(DATABASE_ENV) or None
    data = data_dir or (Path(os.environ[DATA_DIR_ENV]) if os.environ.get(DATA_DIR_ENV) else None)
    if url is None and data is None:
        return None
    from runarchive.web.auditlog import AuditLog
    from runarchive.web.settings import WebSettings, default_database_url

    wait = WebSettings.from_env().audit_wait
    folder = data if data is not None else _default_data_dir()
    return AuditLog(url or default_database_url(folder), folder, wait=wait)


@dataclass
class Note:
    """What a command learns while it acts, for its row."""

    archive: str | None = None
    bytes: int | None = None
    detail: str | None = None


@contextmanager
def audited(
    run_dir: Path, action: str, archive: str | None = None, detail: str | None = None
) -> Iterator[Note]:
    """Record the local ``action`` (an ``AuditAction`` value) the block performs (see the
    module), then let errors through."""
    note = Note(archive, None, detail)
    try:
        yield note
    except RunArchiveError as exc:
        from runarchive.core import outcome_of

        message = f"{note.detail}; {exc}" if note.detail else str(exc)
        _record(run_dir, action, outcome_of(exc), note, message)
        raise
    from runarchive.core import Outcome

    _record(run_dir, action, Outcome.DONE, note, note.detail)


def _record(run_dir: Path, action: str, outcome: Outcome, note: Note, detail: str | None) -> None:
    if not os.environ.get(DATABASE_ENV) and not os.environ.get(DATA_DIR_ENV):
        return  # nothing configured: nothing imported either
    from runarchive.core import RUNID_RE, AuditAction, AuditEvent, cut_detail

    runid = run_dir.name if RUNID_RE.fullmatch(run_dir.name) else None
    event = AuditEvent(
        user=cli_user(), remote_addr="local", runid=runid, action=AuditAction(action),
        outcome=outcome, archive=note.archive, bytes=note.bytes, detail=cut_detail(detail),
    )  # fmt: skip
    try:
        log = _configured_log()
        try:
            log.record(event)
        finally:
            log.close()
    except Exception as exc:  # the command's own outcome stands, whatever the log does
        click.echo(f"warning: the audit row of this {action} was not recorded: {exc}", err=True)


def _moment(text: str | None) -> datetime | None:
    from runarchive.core import InvalidInput

    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"Invalid --since {text!r}: give an ISO 8601 moment, e.g. 2026-12-01T09:00:00Z."
        ) from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(UTC)


_SAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _line(event: dict[str, Any]) -> str:
    from runarchive.core import human_bytes

    size = "" if event["bytes"] is None else f" {human_bytes(event['bytes'])}"
    parts = [
        event["time"], event["user"], event["remote_addr"], event["runid"] or "-",
        f"{event['action']} {event['outcome']}", event["archive"] or "",
    ]  # fmt: skip
    text = "  ".join(p for p in parts if p) + size
    if event["job_id"]:
        text += f"  job {event['job_id']}"
    if event["detail"]:
        text += f"  ({event['detail']})"
    return _SAFE.sub("?", text)  # a terminal gets no control characters from the log


@click.command()
@click.argument("run_id", required=False)
@click.option("--since", default=None, metavar="ISO", help="Only events at or after this moment.")
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def audit(
    run_id: str | None, since: str | None, data_dir: Path | None, database_url: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Print the audit log (every run, or RUN_ID's), oldest first."""
    from runarchive.core import validate_runid

    with reporting(as_json):
        if run_id is not None:
            validate_runid(run_id)
        moment = _moment(since)
        log = _configured_log(database_url, data_dir)
        if log is None:
            log = _configured_log(data_dir=_default_data_dir())
        try:
            log.replay()
            events = log.since(run_id, moment)
        finally:
            log.close()
    if as_json:
        click.echo(json.dumps({"events": events}, ensure_ascii=False))
        return
    if not events:
        click.echo("No audit events.")
    for event in events:
        click.echo(_line(event))


COMMANDS = [audit]
