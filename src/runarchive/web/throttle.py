"""Login throttling: too many failed logins for a user name, or from one address, are refused.

Failures are counted in a sliding window per user name (``max_failures``) and per client
address (four times as many, so one person mistyping does not lock out a shared office). The
counts live in the process's memory: each gunicorn worker counts on its own, so the effective
limit is ``workers`` times higher — enough to stop online guessing at scale, not a substitute
for strong passwords. A successful login clears its user name's count.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from .errors import TooManyAttempts

ADDRESS_FACTOR = 4
MAX_KEYS = 10_000


_UNITS = ((3600, "hour"), (60, "minute"), (1, "second"))


def human_duration(seconds: float) -> str:
    """Say a wait in words — "5 minutes", "1 minute", "40 seconds" — in its largest unit.

    The count is rounded up (297 s is "5 minutes", 61 s "2 minutes"), so a user told to wait
    that long is never refused again for trying too early.
    """
    whole = max(1, math.ceil(seconds))
    for size, unit in _UNITS:
        if whole >= size:
            count = math.ceil(whole / size)
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    raise AssertionError("unreachable: the last unit is one second")


class LoginThrottle:
    """Sliding-window failure counts per user name and per address."""

    def __init__(
        self,
        max_failures: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        return stamps

    def check(self, username: str, address: str) -> None:
        """Raise TooManyAttempts while either count is at its limit."""
        now = self.clock()
        with self._lock:
            for key, limit in (
                (f"user:{username.lower()}", self.max_failures),
                (f"addr:{address}", self.max_failures * ADDRESS_FACTOR),
            ):
                stamps = self._recent(key, now)
                if len(stamps) >= limit:
                    retry = max(1, int(stamps[0] + self.window - now) + 1)
                    raise TooManyAttempts(
                        f"Too many failed logins; try again in {human_duration(retry)}.",
                        retry_after=retry,
                    )

    def failed(self, username: str, address: str) -> None:
        """Count a failed login."""
        now = self.clock()
        with self._lock:
            for key in (f"user:{username.lower()}", f"addr:{address}"):
                stamps = self._recent(key, now)
                stamps.append(now)
                self._failures[key] = stamps
                self._failures.move_to_end(key)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        """Forget the user name's failures."""
        with self._lock:
            self._failures.pop(f"user:{username.lower()}", None)
