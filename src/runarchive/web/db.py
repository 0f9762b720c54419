"""The accounts database: one engine per app, one session per thread, closed after each request.

Any SQLAlchemy URL works (PostgreSQL in production, the SQLite file in the data dir by
default). Tables are created on first use (``create_all``). ``create_all`` never changes an
existing table, so every column added since the first schema is a row of ``ADDED_COLUMNS``,
added with ``ALTER TABLE … ADD COLUMN`` when a database lacks it (another process adding it
at the same moment is fine: the column is looked up again after a failed ``ALTER``). SQLite
gets WAL journaling, a busy timeout and enforced foreign keys, so the CLI can add users while
the service runs; its file, and the ``-wal``/``-shm``/``-journal`` files SQLite makes with the
same mode, are readable by the owner only (0600). Tables added since the first schema (the
audit log, ``audit_events``) are made the same way, by ``create_all``. This module imports no
Flask at load time: the local CLI opens the database to record and read the audit log.
"""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from .models import Base

if TYPE_CHECKING:  # Flask is imported where an app is served: the CLI opens databases without
    from flask import Flask

EXTENSION = "runarchive.db"
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

# (table, column, column definition) of every column added after the first schema.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("users", "session_generation", "INTEGER NOT NULL DEFAULT 0"),
    ("api_tokens", "prefix", "VARCHAR(16)"),
    ("users", "quota_bytes", "BIGINT"),
    ("users", "quota_count", "INTEGER"),
)


class Database:
    """An engine and a thread-scoped session factory for one database URL."""

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                _private_sqlite_file(Path(path))
            kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            wait_ms = int(busy_timeout * 1000)
            event.listen(self.engine, "connect", lambda c, r: _sqlite_pragmas(c, r, wait_ms))
        self.sessions = scoped_session(sessionmaker(self.engine, expire_on_commit=False))
        Base.metadata.create_all(self.engine)
        add_missing_columns(self.engine)
        guard_audit_table(self.engine)

    @property
    def session(self) -> Session:
        """This thread's session."""
        return self.sessions()

    def remove(self) -> None:
        """Close this thread's session (end of a request)."""
        self.sessions.remove()

    def close(self) -> None:
        """Close every pooled connection."""
        self.sessions.remove()
        self.engine.dispose()


def _private_sqlite_file(path: Path) -> None:
    """Create the SQLite file 0600 (its side files get the same mode); tighten an existing one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for name in (path, *(path.with_name(path.name + end) for end in SQLITE_SIDE_FILES)):
        with suppress(FileNotFoundError, PermissionError):
            if name.stat().st_mode & 0o077:
                name.chmod(FILE_MODE)


def _columns(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def add_missing_columns(engine: Engine) -> list[str]:
    """Add the ``ADDED_COLUMNS`` a database made by an older version lacks; return them."""
    added = []
    for table, column, definition in ADDED_COLUMNS:
        if column in _columns(engine, table):
            continue
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {definition}"))
        except DBAPIError:
            if column not in _columns(engine, table):  # not a concurrent add: a real failure
                raise
            continue
        added.append(f"{table}.{column}")
    return added


# SQLite refuses to change or remove an audit row, whoever asks (the model refuses it too).
_AUDIT_GUARDS = (
    "CREATE TRIGGER IF NOT EXISTS audit_events_append_only_update BEFORE UPDATE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_events_append_only_delete BEFORE DELETE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)


def guard_audit_table(engine: Engine) -> None:
    """Make the database itself refuse updates and deletes of audit rows (SQLite triggers)."""
    if engine.dialect.name != "sqlite":
        return
    with engine.begin() as conn:
        for statement in _AUDIT_GUARDS:
            conn.execute(text(statement))


def _sqlite_pragmas(dbapi_connection: Any, record: Any, busy_timeout_ms: int = 30000) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.close()


def init_app(app: Flask, url: str) -> Database:
    """Open the database of ``url`` for ``app``; each request's session is closed after it."""
    database = Database(url)
    app.extensions[EXTENSION] = database

    @app.teardown_appcontext
    def _close_session(exc: BaseException | None) -> None:
        database.remove()

    return database


def db() -> Database:
    """Return the current app's database."""
    from flask import current_app

    found: Database = current_app.extensions[EXTENSION]
    return found
