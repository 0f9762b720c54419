"""The errors the core raises: a class per way an operation can fail, each named by ``code``.

Callers act on the class (or its ``code``), not the message: the CLI owns the exit codes
(``cli/exits.py``), the web layer the HTTP statuses (``web/errors.py``); the core only names
what went wrong. Messages name the problem and, where there is one, what to do about it.
"""

from __future__ import annotations


class RunArchiveError(Exception):
    """Base of every error the library raises on purpose."""

    code = "error"


class InvalidInput(RunArchiveError):
    """A name, comment or path from outside failed validation; nothing was touched."""

    code = "invalid_input"


class NotFound(RunArchiveError):
    """The run or the archive does not exist."""

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

    code = "unsafe_run"


class InvalidArchive(RunArchiveError):
    """The archive cannot be read (truncated, not a zip, damaged central directory)."""

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

    code = "no_space"


class WorkerFailed(RunArchiveError):
    """A worker process of a create ended before its work was done (killed, crashed) or
    failed otherwise than by an ``OSError``; nothing was kept."""

    code = "worker_failed"


class QuotaExceeded(RunArchiveError):
    """An archive would pass a quota on archive bytes or count; nothing was written or kept.

    Raised before any work (the estimate, ``quota``) and by ``create_archive`` when the bytes
    written would pass its budget (the temp file is removed first). The message names the
    usage, the limit and what to do.
    """

    code = "quota_exceeded"


class Busy(RunArchiveError):
    """Another operation holds the run (OS file lock or job slot)."""

    code = "busy"


class Pinned(RunArchiveError):
    """The archive is pinned: never pruned, and not deleted until it is unpinned."""

    code = "pinned"

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Archive {name} is pinned")


class ReadOnlyRun(RunArchiveError):
    """The run holds a ``READONLY`` marker (as WEPPcloud marks them): no restore, no delete."""

    code = "read_only"

    def __init__(self, runid: str) -> None:
        super().__init__(f"Run {runid} is read-only")


class Locked(RunArchiveError):
    """The host application holds locks on the run's state files."""

    code = "locked"

    def __init__(self, verb: str, paths: list[str]) -> None:
        self.paths = sorted(paths)
        super().__init__(f"Cannot {verb} while files are locked: {', '.join(self.paths)}")


class NothingToUndo(RunArchiveError):
    """The run keeps no replaced tree to put back: no restore since the last archive, restore
    or undo, or what it kept expired."""

    code = "nothing_to_undo"


class RunExists(RunArchiveError):
    """Something (a run, a file, a link) already has the name a new run was to take."""

    code = "run_exists"

    def __init__(self, runid: str, *, forking_job: str | None = None) -> None:
        self.runid = runid
        if forking_job is not None:
            message = f"Another fork (job {forking_job}) is making run {runid}"
        else:
            message = f"Run {runid} already exists (or something else has that name)"
        super().__init__(f"{message}; nothing was changed. Choose another name for the new run.")
