"""Account operations shared by the CLI and the web: users, run grants, API tokens, passwords.

Every function takes an explicit SQLAlchemy session and commits its own change, so the CLI and
request handlers use them alike. Names from outside are validated here (user names like run
ids: letters, digits and ``_ . -``; run ids by the core's rule) before they reach the database.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from runarchive.core import InvalidInput, NotFound, validate_runid

from .models import ApiToken, RunAccess, User

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
TOKEN_PREFIX = "ra_"
SHOWN_CHARS = 8  # random characters of a token kept and shown as its prefix
MIN_MATCH_CHARS = 4  # random characters a revoke must name
_dummy_hash: str | None = None


def _dummy() -> str:
    """A real hash of a random password, checked when the user does not exist, so a failed
    login takes as long for an unknown name as for a wrong password (made on first use)."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = generate_password_hash(secrets.token_hex(16))
    return _dummy_hash


def validate_username(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise InvalidInput."""
    if not isinstance(name, str) or not USERNAME_RE.match(name):
        raise InvalidInput(
            f"Invalid user name {name!r}: use 1-64 letters, digits and _ . @ - only."
        )
    return name


def find_user(session: Session, name: str) -> User | None:
    """Return the user called ``name``, or None."""
    return session.scalar(select(User).where(User.name == name))


def require_user(session: Session, name: str) -> User:
    """Return the user called ``name``; raise NotFound."""
    user = find_user(session, validate_username(name))
    if user is None:
        raise NotFound(f"No user called {name!r}.")
    return user


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"Password too short: use at least {MIN_PASSWORD} characters.")


def create_user(session: Session, name: str, password: str, *, admin: bool = False) -> User:
    """Add a user with a hashed password; raise InvalidInput if the name is taken."""
    validate_username(name)
    _check_password(password)
    user = User(name=name, password_hash=generate_password_hash(password), is_admin=admin)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise InvalidInput(f"A user called {name!r} already exists.") from None
    return user


def authenticate(session: Session, name: str, password: str) -> User | None:
    """Return the user if ``password`` is theirs, else None (same cost either way)."""
    user = find_user(session, name) if USERNAME_RE.match(name or "") else None
    if user is None:
        check_password_hash(_dummy(), password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def end_sessions(session: Session, user: User) -> None:
    """Refuse every session cookie ``user`` holds now (an atomic bump of their generation)."""
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(session_generation=User.session_generation + 1)
    )
    session.commit()
    session.refresh(user)


def session_is_current(user: User, generation: object) -> bool:
    """Tell whether a session made at ``generation`` is still valid for ``user``."""
    return isinstance(generation, int) and generation == user.session_generation


def set_password(session: Session, user: User, password: str) -> None:
    """Change ``user``'s password and end every session they hold (their tokens stay)."""
    _check_password(password)
    user.password_hash = generate_password_hash(password)
    session.commit()
    end_sessions(session, user)


def remove_user(session: Session, user: User) -> None:
    """Delete ``user`` with their run grants and tokens; their sessions fail from then on."""
    session.delete(user)
    session.commit()


def grant_run(session: Session, runid: str, user: User) -> bool:
    """Make ``user`` an owner of run ``runid``; return False if they already were."""
    validate_runid(runid)
    exists = session.scalar(
        select(RunAccess).where(RunAccess.runid == runid, RunAccess.user_id == user.id)
    )
    if exists is not None:
        return False
    session.add(RunAccess(runid=runid, user_id=user.id))
    try:
        session.commit()
    except IntegrityError:  # granted concurrently
        session.rollback()
        return False
    return True


def revoke_run(session: Session, runid: str, user: User) -> bool:
    """Remove ``user``'s ownership of run ``runid``; return whether there was one."""
    row = session.scalar(
        select(RunAccess).where(RunAccess.runid == runid, RunAccess.user_id == user.id)
    )
    if row is None:
        return False
    session.delete(row)
    session.commit()
    return True


def owns_run(session: Session, user: User, runid: str) -> bool:
    """Tell whether ``user`` was granted run ``runid``."""
    row = session.scalar(
        select(RunAccess.id).where(RunAccess.runid == runid, RunAccess.user_id == user.id)
    )
    return row is not None


def runs_of(session: Session, user: User) -> list[str]:
    """Return the run ids granted to ``user``, sorted."""
    rows = session.scalars(
        select(RunAccess.runid).where(RunAccess.user_id == user.id).order_by(RunAccess.runid)
    )
    return list(rows)


def owners_of(session: Session, runid: str) -> list[User]:
    """Return the users granted run ``runid``, by name."""
    rows = session.scalars(
        select(User).join(RunAccess).where(RunAccess.runid == runid).order_by(User.name)
    )
    return list(rows)


def set_quota(
    session: Session, user: User, quota_bytes: int | None, quota_count: int | None
) -> None:
    """Set ``user``'s own quota on all their runs' archives (None: back to the site's)."""
    user.quota_bytes, user.quota_count = quota_bytes, quota_count
    session.commit()


def list_users(session: Session) -> list[User]:
    """Return every user, by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def hash_token(token: str) -> str:
    """Return the stored form of an API token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, user: User) -> str:
    """Create a personal API token for ``user``; return it (only its hash and prefix are kept)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    prefix = token[: len(TOKEN_PREFIX) + SHOWN_CHARS]
    session.add(ApiToken(token_hash=hash_token(token), prefix=prefix, user_id=user.id))
    session.commit()
    return token


def tokens_of(session: Session, user: User) -> Sequence[ApiToken]:
    """Return ``user``'s tokens, oldest first."""
    return session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    ).all()


def matching_tokens(session: Session, user: User, prefix: str) -> list[ApiToken]:
    """Return ``user``'s tokens that ``prefix`` names: a leading part of a shown prefix, or a
    whole token. Raise InvalidInput when ``prefix`` is too short to name one token safely."""
    tokens = tokens_of(session, user)
    if prefix.startswith(TOKEN_PREFIX) and len(prefix) > len(TOKEN_PREFIX) + SHOWN_CHARS:
        digest = hash_token(prefix)  # a whole token, pasted
        return [t for t in tokens if secrets.compare_digest(t.token_hash, digest)]
    if not prefix.startswith(TOKEN_PREFIX) or len(prefix) < len(TOKEN_PREFIX) + MIN_MATCH_CHARS:
        raise InvalidInput(
            f"Invalid token prefix {prefix!r}: give the prefix `tokens list` shows "
            f"({TOKEN_PREFIX!r} and at least {MIN_MATCH_CHARS} more characters)."
        )
    return [t for t in tokens if t.prefix is not None and t.prefix.startswith(prefix)]


def revoke_tokens(session: Session, user: User, prefix: str | None = None) -> int:
    """Delete ``user``'s tokens (all, or the one ``prefix`` names); return how many.

    Raise NotFound when ``prefix`` names none, InvalidInput when it names several.
    """
    if prefix is None:
        found = list(tokens_of(session, user))
    else:
        found = matching_tokens(session, user, prefix)
        if not found:
            raise NotFound(f"{user.name} has no token starting with {prefix!r}.")
        if len(found) > 1:
            raise InvalidInput(
                f"{prefix!r} matches {len(found)} tokens of {user.name}: give more characters."
            )
    for token in found:
        session.delete(token)
    session.commit()
    return len(found)


def token_for(session: Session, token: str) -> ApiToken | None:
    """Return the stored row of API token ``token`` (its id names it in the audit log), or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    return session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))


def user_for_token(session: Session, token: str) -> User | None:
    """Return the owner of API token ``token``, or None."""
    row = token_for(session, token)
    return row.user if row is not None else None
