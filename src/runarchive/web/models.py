"""The accounts tables: users, who owns which run, and personal API tokens.

Passwords are stored as werkzeug hashes (scrypt); API tokens as the SHA-256 of the token — a
token is 256 random bits, so a fast hash is enough and lets a request find its token by an
indexed lookup instead of trying every row. Run access is by run id (a string), not by a foreign
key to a run table: runs live on the filesystem and may be granted before they exist.

``User.session_generation`` is the user's session epoch: a login stores it in the session
cookie, every request compares the two, and logout, a password change or a removal changes it
(or the row), so every copy of an older cookie is refused on its next request in every process.
A new user starts at a random generation: SQLite may give a re-added user the row id of a
removed one, and the removed user's cookies must not fit the new account. ``ApiToken.prefix``
is the token's first characters (``ra_`` and 8 more, 48 of its 256 random bits), kept so the
CLI can list and revoke tokens without the token itself.

``User.quota_bytes``/``quota_count`` override the site's per-owner archive quota for that user
(``runarchive users quota``; NULL: the site's ``RUNARCHIVE_QUOTA_OWNER_*``); a database made
before them gains the columns on open (``db.ADDED_COLUMNS``).

``AuditRecord`` is one row of the audit log (``auditlog.py``): append-only. The model refuses
to be updated or deleted (mapper events raise ``AppendOnly``), its id only grows (SQLite's
``AUTOINCREMENT``: an id is never handed out twice, so the id is the order and the cursor), and
``event_id`` is unique, so a spooled event replayed twice is stored once.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def _now() -> datetime:
    return datetime.now(UTC)


def first_generation() -> int:
    """Return a new user's session generation: random, so no removed user's cookie fits."""
    return secrets.randbelow(1 << 30) + 1


class Base(DeclarativeBase):
    """Declarative base of the accounts schema."""


class User(Base):
    """A person (or a script's owner) who logs in; ``is_admin`` may read and write every run."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    session_generation: Mapped[int] = mapped_column(
        Integer, default=first_generation, server_default="0"
    )
    # The user's own quota on all their runs' archives (None: the site's per-owner setting).
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    quota_count: Mapped[int | None] = mapped_column(Integer, default=None)

    runs: Mapped[list[RunAccess]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )
    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    # Flask-Login's user protocol (kept here so the model needs no mixin from the web stack).
    is_active = True
    is_anonymous = False

    @property
    def is_authenticated(self) -> bool:
        """Always true for a stored user (Flask-Login protocol)."""
        return True

    def get_id(self) -> str:
        """Return the id Flask-Login keeps in the session."""
        return str(self.id)

    @property
    def username(self) -> str:
        """Alias of ``name`` for templates."""
        return self.name


class RunAccess(Base):
    """``user`` owns run ``runid``: may read and write it."""

    __tablename__ = "run_access"
    __table_args__ = (UniqueConstraint("runid", "user_id", name="uq_run_access"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    runid: Mapped[str] = mapped_column(String(200), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

    user: Mapped[User] = relationship(back_populates="runs")


class ApiToken(Base):
    """A personal API token of ``user``; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str | None] = mapped_column(String(16), default=None)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

    user: Mapped[User] = relationship(back_populates="tokens")


class AppendOnly(RuntimeError):
    """An attempt to change or remove a row of the audit log."""


class AuditRecord(Base):
    """One recorded action: who, from where, on which run and archive, how it ended."""

    __tablename__ = "audit_events"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    user: Mapped[str] = mapped_column(String(200), index=True)
    remote_addr: Mapped[str] = mapped_column(String(200))
    runid: Mapped[str | None] = mapped_column(String(200), index=True)
    archive: Mapped[str | None] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(String(128))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[str | None] = mapped_column(Text)


def _refuse_change(mapper: object, connection: object, target: AuditRecord) -> None:
    raise AppendOnly(f"The audit log is append-only: row {target.id} cannot be changed.")


event.listen(AuditRecord, "before_update", _refuse_change)
event.listen(AuditRecord, "before_delete", _refuse_change)
