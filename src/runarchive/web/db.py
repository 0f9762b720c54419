"""The accounts database: one engine per app, one session per thread, closed after each request.

Any SQLAlchemy URL works (PostgreSQL in production, the SQLite file in the data dir by
default). Tables are created on first use (``create_all``); there are no migrations yet, so a
schema change must ship one. SQLite gets WAL journaling, a busy timeout and enforced foreign
keys, so the CLI can add users while the service runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from .models import Base

EXTENSION = "runarchive.db"


class Database:
    """An engine and a thread-scoped session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = scoped_session(sessionmaker(self.engine, expire_on_commit=False))
        Base.metadata.create_all(self.engine)

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


def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
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
    found: Database = current_app.extensions[EXTENSION]
    return found
