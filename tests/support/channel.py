"""Record every line published on a Redis channel (a run's status channel) from a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from runarchive.jobs import JobsContext
from runarchive.jobs.lines import StatusLine, parse_line
from runarchive.jobs.vocabulary import Event


class Recorder:
    """Collects every message of a pub/sub channel from a background thread."""

    def __init__(self, ctx: JobsContext, channel: str) -> None:
        self.pubsub = ctx.clients.data.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.05)
            if message is not None and message.get("type") == "message":
                self.lines.append(str(message["data"]))

    def parsed(self) -> list[StatusLine]:
        return [parse_line(line) for line in list(self.lines)]

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate(line):
                    return line
            time.sleep(0.01)
        raise AssertionError(f"no matching line within {timeout} s; got {self.lines[-20:]}")

    def triggers(self, job_id: str) -> list[str]:
        return [
            str(p.trigger) for p in self.parsed() if p.event is Event.TRIGGER and p.job_id == job_id
        ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.pubsub.close()
