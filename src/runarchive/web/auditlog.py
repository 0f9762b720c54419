"""The audit log's storage: an append-only SQL table, and a durable spool for when SQL fails.

Who writes: the web layer for every request it accepts or refuses, the worker for every job's
end (it installs an ``AuditLog`` as the jobs layer's recorder), and the local CLI (which opens
this module lazily, with SQLAlchemy but without Flask, RQ or redis-py). The same table is read
by ``GET /runs/<runid>/archive/audit``, ``GET /audit`` and ``runarchive audit``.

Failure semantics: an action's outcome never depends on its row. ``record`` first replays the
spool (older events go in first, so the ids keep the order the events happened in), then
inserts the event; when either fails (the database locked past ``wait`` seconds, read-only,
disk full, gone), the event is appended to the spool instead: one JSON line per event, in the
data dir, fsynced before ``record`` returns, so the caller may report the action done. The
spool is replayed, in order, by the next ``record`` that can write, and at start-up (web app,
worker). Replaying is idempotent: every event carries a unique ``event_id`` and an insert of
an id already stored does nothing, so a replay that dies after its commit and before it empties
the spool stores nothing twice when it runs again. Appends and replays hold an exclusive
``flock`` on the spool (processes and threads alike). A line that does not read back as an
event (a torn write of a process killed mid-append) is moved to ``<spool>.rejected`` and
logged, never dropped silently nor allowed to block the rest. Only if the spool cannot be
written either does ``record`` raise; the jobs layer then logs it and the action still stands.

Append-only: this module offers inserts and reads only; the model refuses updates and deletes
(``models.AuditRecord``). Rows are ordered by their id, which only grows; a page's cursor is
the last id it showed (opaque to clients: ``core.audit_cursor``, validated on the way back).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError

from runarchive.core import AuditEvent, audit_cursor, check_limit, iso_utc, parse_audit_cursor

from .db import Database
from .models import AuditRecord

log = logging.getLogger(__name__)
SPOOL_FILE = "audit-spool.jsonl"
DEFAULT_WAIT = 5.0  # seconds an audit write waits for a locked database before spooling
RETRY_AFTER = 1.0  # seconds after a failed write before SQL is tried again
DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Page:
    """One page of events, newest first, and the cursor of the next (None: the last page)."""

    events: list[dict[str, Any]]
    next: str | None


class AuditLog:
    """The audit log of one database, with its spool; a jobs-layer ``Recorder``."""

    def __init__(self, url: str, spool_dir: Path, *, wait: float = DEFAULT_WAIT) -> None:
        self.url = url
        self.wait = wait
        self._database: Database | None = None  # opened on first use: a failure then spools
        self.spool = Path(spool_dir) / SPOOL_FILE
        self._lock = threading.Lock()  # one writer per process at a time keeps the order
        self._pid = os.getpid()
        self._retry_at = 0.0  # monotonic time before which writes go straight to the spool

    @property
    def database(self) -> Database:
        """The database, opened (tables made, as at every start-up) on first use."""
        if self._database is None:
            self._database = Database(self.url, busy_timeout=self.wait)
        return self._database

    def _engine(self) -> Engine:
        """The engine, fresh in a forked child (a worker's work horse): pooled connections of
        the parent are never shared with it (SQLAlchemy's rule for ``fork``)."""
        if os.getpid() != self._pid:
            self.database.engine.dispose(close=False)
            self._pid = os.getpid()
        return self.database.engine

    def close(self) -> None:
        """Close the log's connections."""
        if self._database is not None:
            self._database.close()
            self._database = None

    # --- writing -----------------------------------------------------------------------------

    def record(self, event: AuditEvent) -> None:
        """Store ``event``: in SQL, else in the spool (raise only if both fail).

        After a failed write, the next ``RETRY_AFTER`` seconds' events go to the spool at
        once: a database that stopped answering costs one request ``wait`` seconds, not every
        request of the process in turn (they queue on the lock that keeps the order).
        """
        with self._lock:
            if time.monotonic() < self._retry_at:
                self._append(event)
                return
            try:
                self._replay()
                with self._engine().begin() as conn:
                    _insert(conn, [event])
                return
            except (SQLAlchemyError, OSError) as exc:  # OSError: the SQLite file cannot be made
                self._retry_at = time.monotonic() + RETRY_AFTER
                log.warning("audit: database not writable (%s); event %s spooled",
                            type(exc).__name__, event.event_id)  # fmt: skip
            self._append(event)

    def replay(self) -> int:
        """Move every spooled event into SQL, in order; return how many (0 if SQL fails)."""
        with self._lock:
            try:
                found = self._replay()
                self._retry_at = 0.0
                return found
            except (SQLAlchemyError, OSError) as exc:  # OSError: the SQLite file cannot be made
                log.warning("audit: spool not replayed, database not writable (%s)", exc)
                return 0

    def spooled(self) -> list[AuditEvent]:
        """Return the events waiting in the spool (for tests and ``runarchive audit``)."""
        if not self.spool.exists():
            return []
        with self._spool_file() as fd:
            good, _bad = _read_lines(_read_all(fd))
        return good

    def _append(self, event: AuditEvent) -> None:
        line = json.dumps(event.to_spool(), ensure_ascii=True, separators=(",", ":")) + "\n"
        with self._spool_file() as fd:
            os.lseek(fd, 0, os.SEEK_END)
            data = line.encode("ascii")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)

    def _replay(self) -> int:
        try:
            if self.spool.stat().st_size == 0:
                return 0
        except FileNotFoundError:
            return 0
        with self._spool_file() as fd:
            good, bad = _read_lines(_read_all(fd))
            if good:
                with self._engine().begin() as conn:
                    _insert(conn, good)
            if bad:
                self._reject(bad)
            os.ftruncate(fd, 0)  # only after the commit: a crash before it replays again
            os.fsync(fd)
        if good:
            log.info("audit: replayed %d spooled event(s)", len(good))
        return len(good)

    def _reject(self, lines: list[bytes]) -> None:
        log.error("audit: %d spooled line(s) unreadable, kept in %s.rejected", len(lines),
                  self.spool)  # fmt: skip
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        fd = os.open(f"{self.spool}.rejected", flags, 0o600)
        try:
            os.write(fd, b"".join(line + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _spool_file(self) -> Iterator[int]:
        self.spool.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.spool, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    # --- reading -----------------------------------------------------------------------------

    def page(self, runid: str | None, cursor: str | None, limit: int | None = None) -> Page:
        """Return the newest events (of run ``runid``, or all) older than the cursor's."""
        size = check_limit(limit, DEFAULT_LIMIT)
        scope = runid or "*"
        before = parse_audit_cursor(cursor, scope)
        query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(size + 1)
        if runid is not None:
            query = query.where(AuditRecord.runid == runid)
        if before is not None:
            query = query.where(AuditRecord.id < before)
        with self._engine().connect() as conn:
            rows = list(conn.execute(query).mappings())
        shown = rows[:size]
        more = len(rows) > size
        return Page(
            [event_json(r) for r in shown], audit_cursor(scope, shown[-1]["id"]) if more else None
        )

    def since(self, runid: str | None, moment: datetime | None) -> list[dict[str, Any]]:
        """Return every event (of run ``runid``, or all) at or after ``moment``, oldest first."""
        query = select(AuditRecord).order_by(AuditRecord.id)
        if runid is not None:
            query = query.where(AuditRecord.runid == runid)
        if moment is not None:
            query = query.where(AuditRecord.time >= moment)
        with self._engine().connect() as conn:
            return [event_json(r) for r in conn.execute(query).mappings()]


def event_json(row: Any) -> dict[str, Any]:
    """Return one stored event as the API and ``runarchive audit --json`` show it."""
    return {
        "id": row["id"], "time": iso_utc(row["time"]), "user": row["user"],
        "remote_addr": row["remote_addr"], "runid": row["runid"], "archive": row["archive"],
        "action": row["action"], "outcome": row["outcome"], "job_id": row["job_id"],
        "bytes": row["bytes"], "detail": row["detail"],
    }  # fmt: skip


def _values(event: AuditEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id, "time": event.time, "user": event.user,
        "remote_addr": event.remote_addr, "runid": event.runid, "archive": event.archive,
        "action": event.action.value, "outcome": event.outcome.value, "job_id": event.job_id,
        "bytes": event.bytes, "detail": event.detail,
    }  # fmt: skip


def _insert(conn: Connection, events: Sequence[AuditEvent]) -> None:
    """Insert ``events`` in order; an ``event_id`` already stored is skipped (idempotent)."""
    dialect = conn.dialect.name
    for event in events:
        values = _values(event)
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            conn.execute(sqlite_insert(AuditRecord).values(values).on_conflict_do_nothing())
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(AuditRecord).values(values).on_conflict_do_nothing())
        else:
            found = conn.scalar(
                select(AuditRecord.id).where(AuditRecord.event_id == event.event_id)
            )
            if found is None:
                conn.execute(insert(AuditRecord).values(values))


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_lines(data: bytes) -> tuple[list[AuditEvent], list[bytes]]:
    """Split the spool into the events it holds and the lines that are not one."""
    good: list[AuditEvent] = []
    bad: list[bytes] = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            good.append(AuditEvent.from_spool(json.loads(line.decode("ascii"))))
        except (ValueError, UnicodeDecodeError):
            bad.append(line)
    return good, bad
