"""Blueprint ``storage``: the dashboard's storage chart of a run, as an SVG image.

``GET /runs/<runid>/archive/storage.svg`` (read access, like the list) draws what the list
says (``archives.list_body``): the archives' sizes by creation time, which are pinned and
which damaged (the rows' ``health``, where the scrub has judged them), and the run's disk
numbers (the list's ``usage``, where the deployment reports it; without it only the archives'
total is drawn). Taking the list's own body keeps one source for the page's table, its words
and its chart; the drawing is ``storage_chart``'s, pure and tested on its own. ``?width=``
(320 to 1280 pixels, default 640) lets the page ask for the width it shows the chart at, so
the text stays legible on a phone instead of being scaled down.

The image is ``no-store`` (it changes with every archive) and gets the pages' security headers;
it holds no script, and ``<img>`` would not run one anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, request

from runarchive.core import InvalidInput

from . import access
from .archives import list_body
from .storage_chart import MAX_WIDTH, MIN_WIDTH, WIDTH, ChartArchive, ChartUsage, render_chart

bp = Blueprint("storage", __name__)


def chart_archives(rows: list[dict[str, Any]]) -> list[ChartArchive]:
    """The chart's archives from the list's rows (newest first), oldest first: archives of
    the same second keep the list's order. A row without a size or time is skipped."""
    out = []
    for row in reversed(rows):
        try:
            created = datetime.fromisoformat(str(row["created"]))
            size = int(row["size"])
        except (KeyError, TypeError, ValueError):
            continue
        out.append(
            ChartArchive(
                name=str(row["name"]),
                size=size,
                created=created,
                comment=str(row.get("comment") or ""),
                pinned=bool(row.get("pinned")),
                damaged=row.get("health") == "damaged",
            )
        )
    return out


def _optional(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def chart_usage(body: dict[str, Any]) -> ChartUsage | None:
    """The chart's disk numbers from the list's ``usage`` block, or None without one."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    archives_bytes = _optional(usage, "archives_bytes")
    archives_count = _optional(usage, "archives_count")
    if archives_bytes is None or archives_count is None:
        return None
    return ChartUsage(
        archives_bytes=archives_bytes,
        archives_count=archives_count,
        run_bytes=_optional(usage, "run_bytes"),
        quota_bytes=_optional(usage, "quota_bytes"),
        quota_count=_optional(usage, "quota_count"),
        disk_free_bytes=_optional(usage, "disk_free_bytes"),
    )


def chart_width(raw: str | None) -> int:
    """The ``width`` asked for: a whole number of pixels from MIN_WIDTH to MAX_WIDTH."""
    if raw is None or raw == "":
        return WIDTH
    if not raw.isascii() or not raw.isdigit() or not MIN_WIDTH <= int(raw) <= MAX_WIDTH:
        raise InvalidInput(f"width must be a whole number from {MIN_WIDTH} to {MAX_WIDTH}.")
    return int(raw)


@bp.get("/runs/<runid>/archive/storage.svg")
def rq_storage_chart(runid: str) -> Response:
    """Draw the run's storage chart: archive sizes over time, run, archives, quota, free disk."""
    found = access.require_read(runid)
    width = chart_width(request.args.get("width"))  # parsed before any work
    body = list_body(found)
    svg = render_chart(
        chart_archives(body["archives"]), chart_usage(body), runid=found.runid, width=width
    )
    response = Response(svg, mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-store"
    return response
