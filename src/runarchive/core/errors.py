"""The errors the core raises, each mapping one-to-one to a CLI exit code and an HTTP status.

Callers act on the class, not the message: the CLI turns ``exit_code`` into the process status,
the web layer turns ``http_status``/``code`` into a JSON error. Messages name the problem and,
where there is one, what to do about it.
"""

from __future__ import annotations


class RunArchiveError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code = 1
    http_status = 500
    code = "error"


class InvalidInput(RunArchiveError):
    """A name, comment or path from outside failed validation; nothing was touched."""

    exit_code = 2
    http_status = 400
    code = "invalid_input"


class NotFound(RunArchiveError):
    """The run or the archive does not exist."""

    exit_code = 1
    http_status = 404
    code = "not_found"


class EntryNotFound(NotFound):
    """The archive holds no entry of the kind asked for at that path (a file, a folder)."""

    code = "entry_not_found"


class InvalidCursor(InvalidInput):
    """A paging cursor is malformed or was made for another listing; ask for page one again."""

    code = "invalid_cursor"


class NotText(InvalidInput):
    """A text diff was asked for a file that is binary, not UTF-8 or over the size cap."""

    code = "not_text"


class UnsafeRun(RunArchiveError):
    """Something in the run's tree (our state, ``archives/``, a journal) is not what we made.

    Raised instead of acting on it: a link where a folder must be, a malformed journal, a
    state folder that is not ours. Nothing was changed; the message says what to remove.
    """

    exit_code = 1
    http_status = 409
    code = "unsafe_run"


class InvalidArchive(RunArchiveError):
    """The archive cannot be read (truncated, not a zip, damaged central directory)."""

    exit_code = 1
    http_status = 422
    code = "invalid_archive"


class UnsafeArchive(InvalidArchive):
    """The archive is readable but restoring it could harm the run or the host."""

    code = "unsafe_archive"


class LimitExceeded(UnsafeArchive):
    """Entry count, total size or compression ratio is over a configured limit."""

    code = "limit_exceeded"


class DamagedArchive(InvalidArchive):
    """Content does not match its CRC or its manifest checksum."""

    code = "damaged_archive"


class NoSpace(RunArchiveError):
    """Not enough free disk space to finish; nothing was changed."""

    exit_code = 1
    http_status = 507
    code = "no_space"


class Busy(RunArchiveError):
    """Another operation holds the run (OS file lock or job slot)."""

    exit_code = 3
    http_status = 409
    code = "busy"


class ReadOnlyRun(RunArchiveError):
    """The run holds a ``READONLY`` marker (as WEPPcloud marks them): no restore, no delete."""

    exit_code = 3
    http_status = 409
    code = "read_only"

    def __init__(self, runid: str) -> None:
        super().__init__(f"Run {runid} is read-only")


class Locked(RunArchiveError):
    """The host application holds locks on the run's state files."""

    exit_code = 3
    http_status = 409
    code = "locked"

    def __init__(self, verb: str, paths: list[str]) -> None:
        self.paths = sorted(paths)
        super().__init__(f"Cannot {verb} while files are locked: {', '.join(self.paths)}")
