"""Errors of the jobs layer, in the core's hierarchy so the CLI and the web map them alike.

Exit codes are the CLI's (``cli/exits.py``), HTTP statuses the web layer's (``web/errors.py``).
"""

from __future__ import annotations

from runarchive.core.errors import Busy, RunArchiveError


class JobRunning(Busy):
    """The run's slot is held by another job; ``job_id`` names it."""

    code = "job_running"

    def __init__(self, runid: str, job_id: str) -> None:
        self.runid = runid
        self.job_id = job_id
        super().__init__(
            f"A job is already running for run {runid}: {job_id}. Wait for it to finish."
        )


class QueueUnavailable(RunArchiveError):
    """Redis (and so the job queue) cannot be reached (the service cannot do it now).

    The message is what clients see, so it names no host, port, socket path or data dir;
    ``detail`` carries those for the server log and for an operator's command line.
    """

    code = "queue_unavailable"
    MESSAGE = "The job queue (Redis) is unavailable; retry."

    def __init__(self, message: str = MESSAGE, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class Canceled(RunArchiveError):
    """A user canceled the job before it changed the run; the message is ``Canceled by <user>``.

    Raised inside the job (at a progress event, or when it starts), so it becomes the job's
    ``Error:`` line and its ``*_FAILED`` trigger.
    """

    code = "canceled"

    def __init__(self, user: str) -> None:
        self.user = user
        super().__init__(f"Canceled by {user}")


class NotCancelable(RunArchiveError):
    """The job can no longer be canceled: it ended, or its swap began."""

    code = "not_cancelable"
