"""How an archive holds the run's symlinks: the mode's closed vocabulary and its one parser.

Apart from ``links`` (which does the following) so that a command line can name the modes
without loading the tree scan.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import InvalidInput


class LinkMode(StrEnum):
    """How an archive holds the run's symlinks."""

    STORE = "store"
    FOLLOW = "follow"


def parse_link_mode(value: str) -> LinkMode:
    """Return the link mode named ``value``; InvalidInput for anything else."""
    try:
        return LinkMode(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in LinkMode)
        raise InvalidInput(f"Invalid links mode {value!r}: use {choices}.") from None
