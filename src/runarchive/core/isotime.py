"""The one way a moment is written for people and programs: ISO 8601 in UTC, ending in ``Z``.

Used by every interface (the CLI's ``--json``, the list's ``created``, job status times), so
one moment reads the same everywhere. A naive ``datetime`` is taken to be UTC (RQ's are).
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: datetime) -> str:
    """Return ``moment`` as ISO 8601 in UTC with a ``Z`` (microseconds kept when present)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
