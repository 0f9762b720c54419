"""The dashboard's storage chart, drawn on the server as SVG text from plain numbers.

Why SVG made here rather than a charting library: the page has no build step and its CSP
allows scripts from this site only, so a library would have to be vendored, kept up to date
and audited, for two simple pictures; an SVG is text that a unit test can parse and check
(labels, values, order, escaping), it is served like any image (``img-src 'self'``), and it
carries its own accessible text (``<title>``, ``<desc>`` and a text label on every bar).

Two parts, one below the other:

- **Archive sizes over time**: one bar per archive at its creation time (oldest left), its
  height the archive's size on a scale starting at 0. Pinned archives carry a "P" mark and a
  darker outline, damaged ones a "!" mark and a hatched fill, so neither is said by colour
  alone; the legend names the marks. Each bar has a ``<title>`` (name, size, time, comment).
- **Disk**: horizontal bars on one shared scale: the run's own size, the archives' total (with
  the quota as the bar's track and a tick where it ends, when there is one) and the free disk.
  The scale is set by the run, its archives and the quota; free disk beyond it (a disk is
  usually thousands of times a run) is cut at the edge with a break mark and says so, so the
  bars that matter stay readable, and a disk with less free than the quota shows it at a
  glance. Each bar's label says its value in words (``Archives 4.1 MiB of 10.0 MiB quota
  (41 %)``).

Everything that comes from the run (names, comments) is hostile: it reaches the SVG only
through ``_text``, which escapes XML's markup characters and drops the characters XML 1.0
cannot hold, so no input can end an element or break the document. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

from runarchive.core import human_bytes, iso_utc

WIDTH = (
    640  # the default; a page asks for its own width (MIN_WIDTH..MAX_WIDTH) so text stays legible
)
MIN_WIDTH = 320
MAX_WIDTH = 1280
MARGIN = 16
PLOT_TOP = 52  # below the title and the legend
PLOT_HEIGHT = 160
AXIS_GAP = 50  # the time axis' labels and the disk heading
BAR_HEIGHT = 18
BAR_GAP = 30  # a disk bar and its label above it
MIN_BAR_PX = 2  # a non-zero value stays visible on a scale dominated by the free disk

# Colours with enough contrast on white; meaning never rests on them alone.
INK = "#1f2933"
MUTED = "#52606d"
GRID = "#d9e2ec"
ARCHIVE_FILL = "#2f6fb0"
PINNED_STROKE = "#102a43"
DAMAGED_FILL = "#b42318"
RUN_FILL = "#3d7a4a"
QUOTA_TRACK = "#e4e7eb"
FREE_FILL = "#8a6d1f"

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class ChartArchive:
    """One archive as the chart draws it."""

    name: str
    size: int
    created: datetime
    comment: str = ""
    pinned: bool = False
    damaged: bool = False


@dataclass(frozen=True, slots=True)
class ChartUsage:
    """The run's disk numbers (the list's ``usage``); ``None`` where not known."""

    archives_bytes: int
    archives_count: int
    run_bytes: int | None = None
    quota_bytes: int | None = None
    quota_count: int | None = None
    disk_free_bytes: int | None = None


def _text(value: str) -> str:
    """Escape text for an element's content (markup characters, characters XML forbids)."""
    return escape(_NOT_XML.sub("\ufffd", value))


def _attr(value: str) -> str:
    """Quote text for an attribute value, escaped like ``_text``."""
    return quoteattr(_NOT_XML.sub("\ufffd", value))


def _num(value: float) -> str:
    """Format a coordinate: two decimals at most, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %" if whole > 0 else "—"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summary(archives: Sequence[ChartArchive], usage: ChartUsage | None) -> str:
    """Say in words what the chart shows (its ``<desc>``, and the page's text beside it)."""
    total = sum(a.size for a in archives) if usage is None else usage.archives_bytes
    count = len(archives) if usage is None else usage.archives_count
    parts = [f"{_count(count, 'archive')}, {human_bytes(total)} in all"]
    if usage is not None and usage.quota_bytes is not None:
        parts.append(
            f"quota {human_bytes(usage.quota_bytes)} "
            f"({_percent(usage.archives_bytes, usage.quota_bytes)} used)"
        )
    if usage is not None and usage.quota_count is not None:
        parts.append(f"at most {_count(usage.quota_count, 'archive')}")
    if usage is not None and usage.run_bytes is not None:
        parts.append(f"the run itself {human_bytes(usage.run_bytes)}")
    if usage is not None and usage.disk_free_bytes is not None:
        parts.append(f"{human_bytes(usage.disk_free_bytes)} free on the disk")
    pinned = sum(1 for a in archives if a.pinned)
    damaged = sum(1 for a in archives if a.damaged)
    if pinned:
        parts.append(f"{pinned} pinned")
    if damaged:
        parts.append(f"{damaged} damaged")
    return "; ".join(parts) + "."


def _bar_title(archive: ChartArchive) -> str:
    marks = [m for m, on in (("pinned", archive.pinned), ("damaged", archive.damaged)) if on]
    head = f"{archive.name}: {human_bytes(archive.size)}, {iso_utc(archive.created)}"
    if marks:
        head += f" ({', '.join(marks)})"
    return f"{head} — {archive.comment}" if archive.comment else head


def _timeline(archives: Sequence[ChartArchive], width: int) -> list[str]:
    """The bars of the sizes-over-time plot, oldest left."""
    left, right = MARGIN + 56, width - MARGIN
    base = PLOT_TOP + PLOT_HEIGHT
    out = [
        '<g id="sizes" aria-label="Archive sizes over time">',
        f'<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="{MUTED}"/>',
    ]
    if not archives:
        out.append(
            f'<text x="{(left + right) // 2}" y="{PLOT_TOP + PLOT_HEIGHT // 2}" '
            f'text-anchor="middle" fill="{MUTED}">No archives yet</text></g>'
        )
        return out
    ordered = sorted(archives, key=lambda a: a.created)  # stable: ties keep the given order
    biggest = max(a.size for a in ordered) or 1
    out.append(
        f'<line x1="{left}" y1="{PLOT_TOP}" x2="{right}" y2="{PLOT_TOP}" stroke="{GRID}"/>'
        f'<text class="axis" x="{left - 4}" y="{PLOT_TOP + 4}" text-anchor="end" '
        f'font-size="11" fill="{MUTED}">{_text(human_bytes(biggest))}</text>'
        f'<text class="axis" x="{left - 4}" y="{base + 4}" text-anchor="end" '
        f'font-size="11" fill="{MUTED}">0</text>'
    )
    first, last = ordered[0].created, ordered[-1].created
    span = (last - first).total_seconds()
    slot = (right - left) / len(ordered)
    bar = max(3.0, min(28.0, slot * 0.7))
    usable = right - left - bar
    for index, archive in enumerate(ordered):
        if span > 0:
            # By time, but never closer than the order allows: bars of one minute stay apart.
            by_time = (archive.created - first).total_seconds() / span * usable
            by_order = index * slot
            x = left + (by_time + by_order) / 2
        else:
            x = left + index * slot + (slot - bar) / 2
        height = max(MIN_BAR_PX, archive.size / biggest * PLOT_HEIGHT) if archive.size else 0
        y = base - height
        fill = "url(#hatch)" if archive.damaged else ARCHIVE_FILL
        stroke = (
            f' stroke="{PINNED_STROKE}" stroke-width="2"'
            if archive.pinned
            else (f' stroke="{DAMAGED_FILL}"' if archive.damaged else "")
        )
        marks = ("P" if archive.pinned else "") + ("!" if archive.damaged else "")
        out.append(
            f'<g class="archive" data-name={_attr(archive.name)} data-size="{archive.size}"'
            f' data-pinned="{str(archive.pinned).lower()}"'
            f' data-damaged="{str(archive.damaged).lower()}">'
            f"<title>{_text(_bar_title(archive))}</title>"
            f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(bar)}" height="{_num(height)}"'
            f' fill="{fill}"{stroke}/>'
        )
        if marks:
            colour = DAMAGED_FILL if archive.damaged else PINNED_STROKE
            out.append(
                f'<text class="mark" x="{_num(x + bar / 2)}" y="{_num(y - 4)}" '
                f'text-anchor="middle" font-size="12" font-weight="bold" '
                f'fill="{colour}">{marks}</text>'
            )
        out.append("</g>")
    # Two full times need ~250 px side by side; a narrower plot names the days only.
    stamp = "%Y-%m-%d %H:%M UTC" if right - left >= 300 else "%Y-%m-%d"
    for moment, anchor, x_at in ((first, "start", left), (last, "end", right)):
        out.append(
            f'<text class="axis" x="{x_at}" y="{base + 16}" text-anchor="{anchor}" '
            f'font-size="11" fill="{MUTED}">{_text(moment.strftime(stamp))}</text>'
        )
        if span == 0:
            break
    out.append("</g>")
    return out


@dataclass(frozen=True, slots=True)
class _Bar:
    key: str
    label: str
    value: int
    fill: str
    track: int | None = None  # the quota: drawn as the bar's background up to here


def _disk_bars(archives: Sequence[ChartArchive], usage: ChartUsage | None) -> list[_Bar]:
    total = sum(a.size for a in archives) if usage is None else usage.archives_bytes
    bars = []
    if usage is not None and usage.run_bytes is not None:
        bars.append(_Bar("run", f"Run {human_bytes(usage.run_bytes)}", usage.run_bytes, RUN_FILL))
    quota = usage.quota_bytes if usage is not None else None
    label = f"Archives {human_bytes(total)}"
    if quota is not None:
        label += f" of {human_bytes(quota)} quota ({_percent(total, quota)})"
    bars.append(_Bar("archives", label, total, ARCHIVE_FILL, quota))
    if usage is not None and usage.disk_free_bytes is not None:
        free = usage.disk_free_bytes
        bars.append(_Bar("free", f"Free disk {human_bytes(free)}", free, FREE_FILL))
    return bars


def _disk(
    archives: Sequence[ChartArchive], usage: ChartUsage | None, top: int, width: int
) -> list[str]:
    """The horizontal bars, on one scale shared by all of them (free disk cut at its edge)."""
    bars = _disk_bars(archives, usage)
    left, right = MARGIN, width - MARGIN
    ours = [b.value for b in bars if b.key != "free"] + [b.track or 0 for b in bars]
    scale_max = max(ours) or max(b.value for b in bars) or 1
    out = ['<g id="disk" aria-label="Disk use">']
    y = top
    for bar in bars:
        clipped = bar.value > scale_max
        length = min(bar.value, scale_max) / scale_max * (right - left)
        if bar.value:
            length = max(MIN_BAR_PX, length)
        label = bar.label + (" (past the scale)" if clipped else "")
        out.append(
            f'<g class="bar" data-key="{bar.key}" data-value="{bar.value}"'
            + (f' data-quota="{bar.track}"' if bar.track is not None else "")
            + (' data-clipped="true"' if clipped else "")
            + f'><text x="{left}" y="{y + 12}" font-size="13" fill="{INK}">{_text(label)}'
            "</text>"
        )
        bar_y = y + 18
        if bar.track is not None:
            track = bar.track / scale_max * (right - left)
            out.append(
                f'<rect class="quota" x="{left}" y="{bar_y}" width="{_num(track)}" '
                f'height="{BAR_HEIGHT}" fill="{QUOTA_TRACK}"/>'
            )
        fill = DAMAGED_FILL if bar.track is not None and bar.value > bar.track else bar.fill
        out.append(
            f'<rect class="value" x="{left}" y="{bar_y}" width="{_num(length)}" '
            f'height="{BAR_HEIGHT}" fill="{fill}"/>'
        )
        if clipped:  # a break: two white slants near the end
            for dx in (-22, -14):
                x0 = right + dx
                out.append(
                    f'<line class="break" x1="{x0}" y1="{bar_y + BAR_HEIGHT + 2}" '
                    f'x2="{x0 + 6}" y2="{bar_y - 2}" stroke="#ffffff" stroke-width="3"/>'
                )
        if bar.track is not None:
            tick = left + bar.track / scale_max * (right - left)
            out.append(
                f'<line class="quota-end" x1="{_num(tick)}" y1="{bar_y - 3}" x2="{_num(tick)}" '
                f'y2="{bar_y + BAR_HEIGHT + 3}" stroke="{INK}" stroke-width="2"/>'
            )
        out.append("</g>")
        y += BAR_HEIGHT + BAR_GAP
    out.append("</g>")
    return out


def _legend() -> str:
    y = 36
    return (
        f'<g id="legend" font-size="12" fill="{INK}">'
        f'<rect x="{MARGIN}" y="{y - 10}" width="12" height="12" fill="{ARCHIVE_FILL}"/>'
        f'<text x="{MARGIN + 16}" y="{y}">archive</text>'
        f'<rect x="{MARGIN + 84}" y="{y - 10}" width="12" height="12" fill="{ARCHIVE_FILL}" '
        f'stroke="{PINNED_STROKE}" stroke-width="2"/>'
        f'<text x="{MARGIN + 100}" y="{y}">P pinned</text>'
        f'<rect x="{MARGIN + 172}" y="{y - 10}" width="12" height="12" fill="url(#hatch)" '
        f'stroke="{DAMAGED_FILL}"/>'
        f'<text x="{MARGIN + 188}" y="{y}">! damaged</text></g>'
    )


def render_chart(
    archives: Sequence[ChartArchive],
    usage: ChartUsage | None = None,
    *,
    runid: str = "",
    width: int = WIDTH,
) -> str:
    """Return the storage chart of a run's archives (and its disk numbers, when known),
    ``width`` pixels wide (``MIN_WIDTH`` to ``MAX_WIDTH``)."""
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"width {width} is not from {MIN_WIDTH} to {MAX_WIDTH}")
    disk_top = PLOT_TOP + PLOT_HEIGHT + AXIS_GAP
    bars = len(_disk_bars(archives, usage))
    height = disk_top + bars * (BAR_HEIGHT + BAR_GAP) + 4
    title = f"Storage of {runid}" if runid else "Storage"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-labelledby="chart-title chart-desc" '
        'font-family="system-ui, sans-serif">',
        f'<title id="chart-title">{_text(title)}</title>',
        f'<desc id="chart-desc">{_text(summary(archives, usage))}</desc>',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#fbe4e2"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{DAMAGED_FILL}" stroke-width="3"/>'
        "</pattern></defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{MARGIN}" y="18" font-size="14" font-weight="bold" fill="{INK}">'
        "Archive sizes over time</text>",
        _legend(),
        *_timeline(archives, width),
        f'<text x="{MARGIN}" y="{disk_top - 6}" font-size="14" font-weight="bold" '
        f'fill="{INK}">Disk (one scale)</text>',
        *_disk(archives, usage, disk_top, width),
        "</svg>",
    ]
    return "".join(parts)
