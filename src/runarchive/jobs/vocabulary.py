"""The closed vocabulary of jobs: their kinds, the events of status lines, the final triggers.

Shared as values by the worker, the API and (as constants) the dashboard's JavaScript; the
status-line grammar that spells them is ``lines``.
"""

from __future__ import annotations

from enum import StrEnum

from runarchive.core import Phase

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
    PRUNE_COMPLETE = "PRUNE_COMPLETE"
    PRUNE_FAILED = "PRUNE_FAILED"
    UNDO_COMPLETE = "UNDO_COMPLETE"
    UNDO_FAILED = "UNDO_FAILED"
    FORK_COMPLETE = "FORK_COMPLETE"  # published on the SOURCE run's channel
    FORK_FAILED = "FORK_FAILED"


class JobKind(StrEnum):
    """The job kinds; each knows its RQ function name and its triggers."""

    ARCHIVE = "archive"
    RESTORE = "restore"
    PRUNE = "prune"  # removes what the run's retention policy does not keep
    UNDO = "undo"  # put back what the run's last restore replaced
    FORK = "fork"  # restore one of the run's archives into a new run

    @property
    def func_name(self) -> str:
        """Name of the RQ job function, as shown in the status lines."""
        return _FUNCS[self]

    @property
    def verb(self) -> str:
        """Verb of the Locked message: ``Cannot <verb> while files are locked``."""
        return self.value

    def trigger(self, ok: bool) -> Trigger:
        """Return the final trigger for success or failure."""
        done, failed = _TRIGGERS[self]
        return done if ok else failed

    def call(
        self, runid: str, archive_name: str | None = None, new_runid: str | None = None
    ) -> str:
        """Return ``func(runid)`` or, for a restore with a name, ``func(runid, name)``; a
        fork with both names ``func(runid, name, new_runid)``."""
        if self is JobKind.FORK and archive_name and new_runid:
            return f"{self.func_name}({runid}, {archive_name}, {new_runid})"
        if self in (JobKind.RESTORE, JobKind.FORK) and archive_name:
            return f"{self.func_name}({runid}, {archive_name})"
        return f"{self.func_name}({runid})"

    @property
    def item_phase(self) -> Phase:
        """Phase whose per-entry events become ``Adding``/``Restored`` lines (a prune has
        none: it publishes ``Archive pruned:`` per removal itself)."""
        return Phase.WRITE if self is JobKind.ARCHIVE else Phase.EXTRACT

    @property
    def item_word(self) -> str:
        """First word of the per-entry line."""
        return "Adding" if self is JobKind.ARCHIVE else "Restored"


_FUNCS = {
    JobKind.ARCHIVE: "archive_rq",
    JobKind.RESTORE: "restore_archive_rq",
    JobKind.UNDO: "undo_restore_rq",
    JobKind.PRUNE: "prune_rq",
    JobKind.FORK: "fork_archive_rq",
}
_TRIGGERS = {
    JobKind.ARCHIVE: (Trigger.ARCHIVE_COMPLETE, Trigger.ARCHIVE_FAILED),
    JobKind.RESTORE: (Trigger.RESTORE_COMPLETE, Trigger.RESTORE_FAILED),
    JobKind.UNDO: (Trigger.UNDO_COMPLETE, Trigger.UNDO_FAILED),
    JobKind.PRUNE: (Trigger.PRUNE_COMPLETE, Trigger.PRUNE_FAILED),
    JobKind.FORK: (Trigger.FORK_COMPLETE, Trigger.FORK_FAILED),
}
