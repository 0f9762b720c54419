"""The status stream: WEPPcloud-compatible text lines on the channel ``<runid>:archive``.

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
    Error: <message>                       (why a job failed; first line, at most 300 chars)
    rq:<id> COMPLETED <call>
    rq:<id> EXCEPTION <call>
    rq:<id> TRIGGER   archive <ARCHIVE_COMPLETE|ARCHIVE_FAILED|RESTORE_COMPLETE|RESTORE_FAILED>

Every line is numbered and, in one server-side script (atomic, so numbers, list and channels
agree whoever publishes): ``seq = INCR <prefix>:status-seq:<runid>:archive``; ``<seq> <line>``
appended to a capped list ``<prefix>:status:<runid>:archive`` (the last ``status_keep`` lines;
list and counter expire ``status_ttl`` seconds after the last line), so a viewer can ask for
what it missed; the plain line PUBLISHed on ``<runid>:archive`` (WEPPcloud's channel, unchanged)
and ``<seq> <line>`` on ``<prefix>:feed:<runid>:archive`` (our relay's, which needs the number
of each live line). Publishing is best effort: a Redis hiccup never fails a job, except for the
final lines, which go out with the job's final marker in one script (``publish_final``, used by
``lifecycle.finish_job``).

The core reports progress once per entry; ``ProgressRelay`` coalesces that: at most
``status_rate`` ``Adding``/``Restored`` lines a second (the newest path wins; the last one is
always sent), a PROGRESS line at most every ``PROGRESS_INTERVAL`` seconds and at each phase end,
and the same progress in ``job.meta["progress"]`` at most every ``META_INTERVAL`` seconds.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from runarchive.core.progress import Phase, ProgressEvent

from .keys import Keys

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5
META_INTERVAL = 1.0
TRIGGER_GROUP = "archive"


class Event(StrEnum):
    """Job lifecycle words of ``rq:<id> <EVENT> ...`` lines."""

    ENQUEUED = "ENQUEUED"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    EXCEPTION = "EXCEPTION"
    TRIGGER = "TRIGGER"
    PROGRESS = "PROGRESS"


class Trigger(StrEnum):
    """Final events; exactly one is published per job."""

    ARCHIVE_COMPLETE = "ARCHIVE_COMPLETE"
    ARCHIVE_FAILED = "ARCHIVE_FAILED"
    RESTORE_COMPLETE = "RESTORE_COMPLETE"
    RESTORE_FAILED = "RESTORE_FAILED"


class JobKind(StrEnum):
    """The two job kinds; each knows its RQ function name and its triggers."""

    ARCHIVE = "archive"
    RESTORE = "restore"

    @property
    def func_name(self) -> str:
        """Name of the RQ job function, as shown in the status lines."""
        return "archive_rq" if self is JobKind.ARCHIVE else "restore_archive_rq"

    @property
    def verb(self) -> str:
        """Verb of the Locked message: ``Cannot <verb> while files are locked``."""
        return self.value

    def trigger(self, ok: bool) -> Trigger:
        """Return the final trigger for success or failure."""
        if self is JobKind.ARCHIVE:
            return Trigger.ARCHIVE_COMPLETE if ok else Trigger.ARCHIVE_FAILED
        return Trigger.RESTORE_COMPLETE if ok else Trigger.RESTORE_FAILED

    def call(self, runid: str, archive_name: str | None = None) -> str:
        """Return ``func(runid)`` or, for a restore with a name, ``func(runid, name)``."""
        if self is JobKind.RESTORE and archive_name:
            return f"{self.func_name}({runid}, {archive_name})"
        return f"{self.func_name}({runid})"

    @property
    def item_phase(self) -> Phase:
        """Phase whose per-entry events become ``Adding``/``Restored`` lines."""
        return Phase.WRITE if self is JobKind.ARCHIVE else Phase.EXTRACT

    @property
    def item_word(self) -> str:
        """First word of the per-entry line."""
        return "Adding" if self is JobKind.ARCHIVE else "Restored"


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


def archive_deleted_line(name: str) -> str:
    """Return ``Archive deleted: <name>``."""
    return f"Archive deleted: {name}"


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


# KEYS: log, seq. ARGV: line, keep, ttl, channel, feed. Returns the line's seq.
_PUBLISH_LUA = """
local seq = redis.call('INCR', KEYS[2])
local entry = seq .. ' ' .. ARGV[1]
redis.call('RPUSH', KEYS[1], entry)
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], entry)
return seq
"""
# KEYS: log, seq, final marker. ARGV: marker value, marker ttl, keep, ttl, channel, feed, lines….
# The job's final lines and its final marker in one script: a process killed at any instant either
# won the marker *and* published every line, or did neither (and a reconciler publishes them).
_FINAL_LUA = """
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 0
end
for i = 7, #ARGV do
  local seq = redis.call('INCR', KEYS[2])
  local entry = seq .. ' ' .. ARGV[i]
  redis.call('RPUSH', KEYS[1], entry)
  redis.call('PUBLISH', ARGV[5], ARGV[i])
  redis.call('PUBLISH', ARGV[6], entry)
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""
_ENTRY_RE = re.compile(r"(?P<seq>[0-9]{1,18}) (?P<line>.*)", re.DOTALL)


def parse_entry(entry: str) -> tuple[int, str] | None:
    """Return ``(seq, line)`` of a ``<seq> <line>`` entry or feed message, None if not one."""
    match = _ENTRY_RE.fullmatch(entry)
    return (int(match["seq"]), match["line"]) if match is not None else None


class StatusStream:
    """Publishes a run's status lines, numbered, and keeps the recent ones for replay."""

    def __init__(self, client: Any, keys: Keys, runid: str, *, keep: int, ttl: int) -> None:
        self.client = client
        self.channel = keys.status_channel(runid)
        self.feed = keys.status_feed(runid)
        self.log_key = keys.status_log(runid)
        self.seq_key = keys.status_seq(runid)
        self.keep = keep
        self.ttl = ttl
        self.published = 0

    def add_to(self, pipe: Any, line: str) -> None:
        """Queue the script that numbers, retains and publishes ``line`` on a caller's pipeline."""
        pipe.eval(
            _PUBLISH_LUA,
            2,
            self.log_key,
            self.seq_key,
            line,
            self.keep,
            self.ttl,
            self.channel,
            self.feed,
        )

    def publish(self, line: str) -> bool:
        """Publish ``line`` and retain it; errors are logged, never raised (best effort)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            self.add_to(pipe, line)
            pipe.execute()
        except redis.exceptions.RedisError:
            log.warning("could not publish status line %r", line, exc_info=True)
            return False
        self.published += 1
        return True

    def publish_final(self, marker: str, value: str, marker_ttl: int, lines: list[str]) -> bool:
        """Claim the job's final ``marker`` (SET NX) and publish ``lines`` atomically.

        Return whether this call won; errors are raised (nothing was claimed or published then).
        """
        won = self.client.eval(
            _FINAL_LUA,
            3,
            self.log_key,
            self.seq_key,
            marker,
            value,
            marker_ttl,
            self.keep,
            self.ttl,
            self.channel,
            self.feed,
            *lines,
        )
        if won:
            self.published += len(lines)
        return bool(won)

    def recent(self) -> list[str]:
        """Return the retained lines, oldest first."""
        return [line for _, line in self.numbered()]

    def numbered(self) -> list[tuple[int, str]]:
        """Return the retained lines with their ``seq``, oldest first.

        Entries without a number (retained by a version before numbering) are left out.
        """
        entries = self.client.lrange(self.log_key, 0, -1)
        found = (parse_entry(e.decode() if isinstance(e, bytes) else e) for e in entries)
        return [pair for pair in found if pair is not None]


MetaSink = Callable[[dict[str, Any]], None]


class ProgressRelay:
    """A core progress callback that turns per-entry events into a few status lines."""

    def __init__(
        self,
        stream: StatusStream,
        job_id: str,
        kind: JobKind,
        *,
        rate: float,
        meta_sink: MetaSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.job_id = job_id
        self.kind = kind
        self.item_interval = 1.0 / rate
        self.meta_sink = meta_sink
        self.clock = clock
        self._lock = threading.Lock()
        self._last_item = float("-inf")
        self._last_progress = float("-inf")
        self._last_meta = float("-inf")
        self._pending_item: str | None = None
        self._last: ProgressEvent | None = None
        self._progress_sent_for: ProgressEvent | None = None
        self._last_progress_line = ""

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            now = self.clock()
            phase_changed = self._last is not None and self._last.phase != event.phase
            if phase_changed:
                self._flush_locked()
            self._last = event
            if event.path is not None and event.phase == self.kind.item_phase:
                if now - self._last_item >= self.item_interval:
                    self._last_item = now
                    self._pending_item = None
                    self.stream.publish(item_line(self.kind, event.path))
                else:
                    self._pending_item = event.path
            if now - self._last_progress >= PROGRESS_INTERVAL or event.phase == Phase.DONE:
                self._last_progress = now
                self._send_progress(event)
            if now - self._last_meta >= META_INTERVAL:
                self._last_meta = now
                self._send_meta(event)

    def flush(self) -> None:
        """Send what the rate limit held back: the last path, progress and meta."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._pending_item is not None:
            self.stream.publish(item_line(self.kind, self._pending_item))
            self._pending_item = None
        if self._last is not None:
            if self._progress_sent_for is not self._last:
                self._send_progress(self._last)
            self._send_meta(self._last)

    def _send_progress(self, event: ProgressEvent) -> None:
        self._progress_sent_for = event
        line = progress_line(
            self.job_id,
            event.op,
            event.files_done,
            event.files_total,
            event.bytes_done,
            event.bytes_total,
        )
        if line != self._last_progress_line:  # e.g. the last file and "done" say the same
            self._last_progress_line = line
            self.stream.publish(line)

    def _send_meta(self, event: ProgressEvent) -> None:
        if self.meta_sink is None:
            return
        try:
            self.meta_sink(progress_meta(event))
        except Exception:
            log.warning("could not store job progress", exc_info=True)


def progress_meta(event: ProgressEvent) -> dict[str, Any]:
    """Return the ``job.meta["progress"]`` value for an event."""
    return {
        "op": event.op,
        "phase": str(event.phase),
        "files_done": event.files_done,
        "files_total": event.files_total,
        "bytes_done": event.bytes_done,
        "bytes_total": event.bytes_total,
        "updated_at": time.time(),
    }
