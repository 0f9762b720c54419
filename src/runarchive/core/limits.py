"""Limits that keep a hostile or broken archive from exhausting the host.

Sizes in headers are claims, not facts: the restorer counts the bytes it really inflates and
stops an entry the moment it exceeds its declared size, so these limits bound real work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds applied to an archive before and while it is restored."""

    max_entries: int = 1_000_000
    max_total_bytes: int = 256 * 2**30
    max_entry_bytes: int = 64 * 2**30
    # Deflate tops out near 1032:1; legitimate model output rarely passes 200:1. Applied to
    # each entry and to the archive as a whole (many small entries add up); anything under
    # ratio_min_bytes in total is exempt because it cannot hurt whatever its ratio.
    max_ratio: float = 500.0
    ratio_min_bytes: int = 1 * 2**20
    max_path_chars: int = 1024
    # Free space an archive or restore never eats into: the larger of the two (fsutil).
    reserve_bytes: int = 1 << 30
    reserve_percent: float = 5.0

    def reserve_for(self, dir_fd: int) -> int:
        """Return the reserve on the disk holding the open folder ``dir_fd``."""
        st = os.fstatvfs(dir_fd)
        return max(self.reserve_bytes, int(st.f_blocks * st.f_frsize * self.reserve_percent / 100))

    @classmethod
    def from_env(cls) -> Limits:
        """Build limits from the RUNARCHIVE_MAX_* environment variables."""
        base = cls()
        return cls(
            max_entries=_env_int("RUNARCHIVE_MAX_ENTRIES", base.max_entries),
            max_total_bytes=_env_int("RUNARCHIVE_MAX_TOTAL_BYTES", base.max_total_bytes),
            max_entry_bytes=_env_int("RUNARCHIVE_MAX_ENTRY_BYTES", base.max_entry_bytes),
            max_ratio=float(os.environ.get("RUNARCHIVE_MAX_RATIO") or base.max_ratio),
            reserve_bytes=_env_int("RUNARCHIVE_RESERVE_BYTES", base.reserve_bytes),
            reserve_percent=float(
                os.environ.get("RUNARCHIVE_RESERVE_PERCENT") or base.reserve_percent
            ),
        )
