"""The status-line grammar: WEPPcloud-compatible text lines on the channel ``<runid>:archive``.

Grammar (``<id>`` is the RQ job id, ``<call>`` is ``archive_rq(<runid>)`` or
``restore_archive_rq(<runid>, <name>)`` for ENQUEUED/STARTED and ``restore_archive_rq(<runid>)``
for COMPLETED/EXCEPTION, as WEPPcloud prints them)::

    rq:<id> ENQUEUED <call>
    rq:<id> STARTED <call>
    rq:<id> PROGRESS <op> <files_done>/<files_total> files <bytes_done>/<bytes_total> bytes
    Adding <relpath>                       (archive; rate-limited)
    Restored <relpath>                     (restore; rate-limited)
    Archive ready: <name>
    Cleared NoDb cache entries after restore (<n>)
    Restore complete: <name>
    Archive deleted: <name>
    Archive pruned: <name>                 (prune job, or after an archive; one per removal)
    Prune failed: <message>                (the prune after an archive; the archive stands)
    Archive damaged: <name>: <damage>      (the scrub found damage in this file; once per file)
    Error: <message>                       (why a job failed; first line, at most 300 chars)
    rq:<id> COMPLETED <call>
    rq:<id> EXCEPTION <call>
    rq:<id> TRIGGER   archive <ARCHIVE_COMPLETE|ARCHIVE_FAILED|RESTORE_COMPLETE|RESTORE_FAILED
                                |PRUNE_COMPLETE|PRUNE_FAILED|UNDO_COMPLETE|UNDO_FAILED>

Builders and the parser are each other's inverse; lines anonymous viewers may read are
scrubbed of server paths (``error_line``). How lines are numbered, retained and published is
``stream``; how per-entry progress becomes a few lines is ``progress``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .vocabulary import TRIGGER_GROUP, Event, JobKind, Trigger


def job_line(job_id: str, event: Event, call: str) -> str:
    """Return ``rq:<id> <EVENT> <call>``."""
    return f"rq:{job_id} {event} {call}"


def trigger_line(job_id: str, trigger: Trigger) -> str:
    """Return ``rq:<id> TRIGGER   archive <TRIGGER>`` (three spaces, as WEPPcloud)."""
    return f"rq:{job_id} {Event.TRIGGER}   {TRIGGER_GROUP} {trigger}"


def progress_line(
    job_id: str, op: str, files_done: int, files_total: int, bytes_done: int, bytes_total: int
) -> str:
    """Return the machine-readable PROGRESS line."""
    return (
        f"rq:{job_id} {Event.PROGRESS} {op} {files_done}/{files_total} files "
        f"{bytes_done}/{bytes_total} bytes"
    )


def item_line(kind: JobKind, relpath: str) -> str:
    """Return ``Adding <relpath>`` or ``Restored <relpath>``."""
    return f"{kind.item_word} {relpath}"


def archive_ready_line(name: str) -> str:
    """Return ``Archive ready: <name>``."""
    return f"Archive ready: {name}"


def restore_complete_line(name: str) -> str:
    """Return ``Restore complete: <name>``."""
    return f"Restore complete: {name}"


def undo_complete_line(name: str) -> str:
    """Return ``Undo complete: <name>`` (the archive whose restore was undone)."""
    return f"Undo complete: {name}"


def archive_deleted_line(name: str) -> str:
    """Return ``Archive deleted: <name>``."""
    return f"Archive deleted: {name}"


def archive_pruned_line(name: str) -> str:
    """Return ``Archive pruned: <name>``."""
    return f"Archive pruned: {name}"


def prune_failed_line(message: str, known: Iterable[tuple[str, str]] = ()) -> str:
    """Return ``Prune failed: <message>`` (scrubbed and cut like ``error_line``)."""
    return "Prune failed: " + error_line(message, known).removeprefix("Error: ")


def archive_damaged_line(name: str, damage: str) -> str:
    """Return ``Archive damaged: <name>: <damage>`` (one line, server paths scrubbed)."""
    return f"Archive damaged: {name}: {scrub_paths(' '.join(damage.split()))}"


# An absolute path: a "/" not inside a word, a relative path or a URL, up to a space or quote;
# a path ends before a sentence's full stop ("… free on /srv/runs/abc.").
_PATH_CHARS = r"[^\s'\"(){}\[\],;]"
_PATH_END = r"(?=\.*(?:[\s'\"(){}\[\],;:]|$))"
_ABS_PATH_RE = re.compile(rf"(?<![\w.:~/>-])/(?:{_PATH_CHARS}*?){_PATH_END}")
PATH_PLACEHOLDER = "<path>"


def scrub_paths(message: str, known: Iterable[tuple[str, str]] = ()) -> str:
    """Return ``message`` without server paths, for lines that anonymous viewers may read.

    Each ``(path, public)`` pair in ``known`` (the run directory and its run id, the runs root
    …) is replaced first, longest path first and whole components only, so
    ``/srv/runs/ab/abc/archives`` reads ``abc/archives``; any absolute path left (an
    ``OSError``'s filename, a socket) becomes ``<path>``. The full message stays in the job's
    traceback and the worker log.
    """
    for path, public in sorted(known, key=lambda pair: len(pair[0]), reverse=True):
        path = path.rstrip("/")
        if path:
            pattern = re.escape(path) + rf"(?=/|{_PATH_END})"
            message = re.sub(pattern, public.replace("\\", "\\\\"), message)
    return _ABS_PATH_RE.sub(PATH_PLACEHOLDER, message)


def error_line(message: str, known: Iterable[tuple[str, str]] = ()) -> str:
    """Return ``Error: <message>`` (first line, server paths scrubbed, at most 300 characters).

    This is the one place an error message becomes a status line; see ``scrub_paths``.
    """
    first = scrub_paths((message.strip().splitlines() or [""])[0], known)
    if len(first) > 300:
        first = first[:297] + "..."
    return f"Error: {first}"


def cache_cleared_line(count: int) -> str:
    """Return ``Cleared NoDb cache entries after restore (<n>)``."""
    return f"Cleared NoDb cache entries after restore ({count})"


# Used with fullmatch: a line with a newline anywhere (even last) is free text, not an event.
_JOB_RE = re.compile(r"rq:(?P<job_id>\S+) (?P<event>[A-Z]+) +(?P<rest>.*)")
_TRIGGER_RE = re.compile(rf"{TRIGGER_GROUP} (?P<trigger>[A-Z_]+)")
_PROGRESS_RE = re.compile(
    r"(?P<op>\w+) (?P<fd>\d+)/(?P<ft>\d+) files (?P<bd>\d+)/(?P<bt>\d+) bytes"
)


@dataclass(frozen=True, slots=True)
class StatusLine:
    """A parsed status line; ``event`` is None for free-text lines (Adding, Archive ready …)."""

    text: str
    job_id: str | None = None
    event: Event | None = None
    trigger: Trigger | None = None
    call: str | None = None
    progress: tuple[str, int, int, int, int] | None = None


def parse_line(text: str) -> StatusLine:
    """Parse a status line (the inverse of the builders above)."""
    match = _JOB_RE.fullmatch(text)
    if match is None or match["event"] not in Event.__members__:
        return StatusLine(text)
    event = Event(match["event"])
    rest = match["rest"]
    if event is Event.TRIGGER:
        trig = _TRIGGER_RE.fullmatch(rest)
        if trig is None or trig["trigger"] not in Trigger.__members__:
            return StatusLine(text)
        return StatusLine(text, match["job_id"], event, trigger=Trigger(trig["trigger"]))
    if event is Event.PROGRESS:
        prog = _PROGRESS_RE.fullmatch(rest)
        if prog is None:
            return StatusLine(text)
        numbers = (int(prog["fd"]), int(prog["ft"]), int(prog["bd"]), int(prog["bt"]))
        return StatusLine(text, match["job_id"], event, progress=(prog["op"], *numbers))
    return StatusLine(text, match["job_id"], event, call=rest)
