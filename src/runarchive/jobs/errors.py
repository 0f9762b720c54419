"""Errors of the jobs layer, in the core's hierarchy so the CLI and the web map them alike."""

from __future__ import annotations

from runarchive.core.errors import Busy, RunArchiveError


class JobRunning(Busy):
    """The run's slot is held by another job; ``job_id`` names it (HTTP 409, exit 3)."""

    code = "job_running"

    def __init__(self, runid: str, job_id: str) -> None:
        self.runid = runid
        self.job_id = job_id
        super().__init__(
            f"A job is already running for run {runid}: {job_id}. Wait for it to finish."
        )


class QueueUnavailable(RunArchiveError):
    """Redis (and so the job queue) cannot be reached (HTTP 503, exit 1).

    The message is what clients see, so it names no host, port, socket path or data dir;
    ``detail`` carries those for the server log and for an operator's command line.
    """

    exit_code = 1
    http_status = 503
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

    exit_code = 1
    http_status = 409
    code = "canceled"

    def __init__(self, user: str) -> None:
        self.user = user
        super().__init__(f"Canceled by {user}")


class NotCancelable(RunArchiveError):
    """The job can no longer be canceled: it ended, or its swap began (HTTP 409, exit 3)."""

    exit_code = 3
    http_status = 409
    code = "not_cancelable"
