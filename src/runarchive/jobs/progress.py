"""Coalescing the core's per-entry progress into a few status lines and ``job.meta`` updates.

The core reports progress once per entry; ``ProgressRelay`` coalesces that: at most
``status_rate`` ``Adding``/``Restored`` lines a second (the newest path wins; the last one is
always sent), a PROGRESS line at most every ``PROGRESS_INTERVAL`` seconds and at each phase end,
and the same progress in ``job.meta["progress"]`` at most every ``META_INTERVAL`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from runarchive.core import Phase, ProgressEvent

from .lines import item_line, progress_line
from .stream import StatusStream
from .vocabulary import JobKind

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5
META_INTERVAL = 1.0


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
