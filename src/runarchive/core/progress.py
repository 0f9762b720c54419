"""Progress reporting: a small event type and a no-op default.

The core never knows who listens: the CLI draws a bar, the job layer publishes status lines.
Events arrive once per entry, so listeners that forward them elsewhere must coalesce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where an operation is; a closed vocabulary shared by every listener."""

    SCAN = "scan"
    WRITE = "write"
    VERIFY = "verify"
    EXTRACT = "extract"
    SWAP = "swap"
    CLEANUP = "cleanup"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of an operation; ``path`` is the entry just handled, when there is one."""

    op: str
    phase: Phase
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    path: str | None = None


ProgressCallback = Callable[[ProgressEvent], None]


def ignore_progress(event: ProgressEvent) -> None:
    """Drop the event; the default listener."""
