"""Paging long answers by an opaque cursor: keyset, and validated like any other input.

A page is the ``limit`` rows that follow a key in the listing's order. The cursor carries that
key and a fingerprint of the listing it was made for (archive, prefix, kind of listing), so a
cursor from one listing cannot page through another. It comes back from outside, so it is
checked as strictly as an upload: alphabet, length, version, fingerprint, key shape; anything
else is ``InvalidCursor``. It is not signed: a forged cursor can only name a key, and every
key is a harmless place to start a page.

Keys rather than offsets: the live run a diff compares with may change between two pages, and
a key keeps the page boundary where the reader left it (no row shown twice when rows appear
before it). Listings of an archive's tree sort each folder once and keep it (the tree never
changes), so a page is a bisect and a slice; a diff's page is picked with a bounded heap
(``take_page``: ``heapq.nsmallest``), never sorting the whole to serve 200 rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import re
from collections.abc import Callable, Iterable
from typing import TypeVar

from .errors import InvalidCursor, InvalidInput

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
# A key is (rank, path); paths are capped at Limits.max_path_chars (1024 characters, up to
# 4 bytes each), and base64 adds a third.
MAX_CURSOR_CHARS = 6000
_VERSION = b"c1"
_FINGERPRINT_BYTES = 8
_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]+")

Key = tuple[int, str]
Row = TypeVar("Row")


_LIMIT_RE = re.compile(r"[0-9]{1,7}")


def parse_limit(text: str | None) -> int | None:
    """Return a ``limit`` query parameter as a number (None or empty: the listing's default);
    InvalidInput for anything but digits. ``check_limit`` then checks the range."""
    if text is None or text == "":
        return None
    if not _LIMIT_RE.fullmatch(text):
        raise InvalidInput(
            f"Invalid limit {text[:20]!r}: use a whole number from 1 to {MAX_LIMIT}."
        )
    return int(text)


def check_limit(limit: int | None, default: int = DEFAULT_LIMIT) -> int:
    """Return the page size to use: ``default`` for None, else 1 to ``MAX_LIMIT``."""
    if limit is None:
        return default
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"Invalid limit {limit!r}: use a whole number from 1 to {MAX_LIMIT}.")
    return limit


def _fingerprint(scope: str) -> bytes:
    return hashlib.blake2b(scope.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def encode_cursor(scope: str, key: Key) -> str:
    """Return the cursor that starts the page after ``key`` of the listing named ``scope``."""
    rank, path = key
    body = _VERSION + _fingerprint(scope) + bytes([rank]) + path.encode("utf-8")
    return base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None, scope: str, ranks: int) -> Key | None:
    """Return the key a cursor of listing ``scope`` carries (None: from the start).

    ``ranks`` is how many rank values the listing uses (rows are ordered by rank, then path).
    """
    if cursor is None or cursor == "":
        return None
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidCursor("Invalid cursor: not one this listing gave out.")
    if not _CURSOR_RE.fullmatch(cursor):
        raise InvalidCursor("Invalid cursor: not one this listing gave out.")
    try:
        body = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursor("Invalid cursor: not one this listing gave out.") from None
    head = len(_VERSION) + _FINGERPRINT_BYTES
    if len(body) < head + 1 or body[: len(_VERSION)] != _VERSION:
        raise InvalidCursor("Invalid cursor: not one this listing gave out.")
    if body[len(_VERSION) : head] != _fingerprint(scope):
        raise InvalidCursor(
            "Invalid cursor: it belongs to another listing (archive, folder or kind); "
            "start again without a cursor."
        )
    rank = body[head]
    try:
        path = body[head + 1 :].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCursor("Invalid cursor: not one this listing gave out.") from None
    if rank >= ranks or "\x00" in path:
        raise InvalidCursor("Invalid cursor: not one this listing gave out.")
    return rank, path


def take_page(
    rows: Iterable[Row], key: Callable[[Row], Key], after: Key | None, limit: int
) -> tuple[list[Row], Key | None]:
    """Return the ``limit`` first rows after ``after`` in key order, and the key to go on from.

    The second value is None on the last page.
    """
    candidates = rows if after is None else (r for r in rows if key(r) > after)
    chosen = heapq.nsmallest(limit + 1, candidates, key=key)
    if len(chosen) > limit:
        return chosen[:limit], key(chosen[limit - 1])
    return chosen, None
