"""The one way a moment is written for people and programs: ISO 8601 in UTC, ending in ``Z``.

Used by every interface (the CLI's ``--json``, the list's ``created``, job status times), so
one moment reads the same everywhere. A naive ``datetime`` is taken to be UTC (RQ's are).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def iso_utc(moment: datetime) -> str:
    """Return ``moment`` as ISO 8601 in UTC with a ``Z`` (microseconds kept when present)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_from_ns(mtime_ns: int | None) -> str | None:
    """Return a file time in nanoseconds as ``iso_utc`` writes it; None when absent or beyond any
    calendar (a hostile manifest's mtime)."""
    if mtime_ns is None:
        return None
    seconds, rest = divmod(mtime_ns, 1_000_000_000)
    try:
        when = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest // 1000)
    except (OverflowError, OSError, ValueError):
        return None  # a hostile manifest's mtime no calendar holds
    return iso_utc(when)
