"""How many status websockets a process, and one user in it, may hold at once.

Two caps: the process's ``max_sockets`` (each socket holds a server thread; the rest must stay
free for HTTP) and ``max_per_owner`` per user (or per client address for anonymous viewers),
so one client opening tabs in a loop cannot take every socket of the process. A refused
socket counts nothing. Nothing here knows Flask or Redis.
"""

from __future__ import annotations

import threading

MAX_PER_OWNER = 8  # websockets one user may hold in one process (a few tabs)


class SocketQuota:
    """Counts the sockets held, in all and per owner, against the two caps."""

    def __init__(self, max_sockets: int, max_per_owner: int = MAX_PER_OWNER) -> None:
        self.max_sockets = max_sockets
        self.max_per_owner = max_per_owner
        self._lock = threading.Lock()
        self._sockets = 0
        self._owners: dict[str, int] = {}

    @property
    def sockets(self) -> int:
        """Sockets currently counted against the cap."""
        return self._sockets

    def reserve(self, owner: str = "") -> bool:
        """Count one more socket of ``owner``; return False (and count nothing) at a cap."""
        with self._lock:
            if self._sockets >= self.max_sockets:
                return False
            if self._owners.get(owner, 0) >= self.max_per_owner:
                return False
            self._sockets += 1
            self._owners[owner] = self._owners.get(owner, 0) + 1
            return True

    def release(self, owner: str = "") -> None:
        """Give back a socket reserved for ``owner``."""
        with self._lock:
            self._sockets = max(0, self._sockets - 1)
            left = self._owners.get(owner, 0) - 1
            if left > 0:
                self._owners[owner] = left
            else:
                self._owners.pop(owner, None)
