"""Background jobs on RQ/Redis: run locks, one job per run, status stream, crash recovery.

A thin layer over ``runarchive.core``: ``enqueue`` claims the run's slot and queues
``tasks.archive_rq``/``tasks.restore_archive_rq``/``tasks.undo_restore_rq``; the worker runs
them and ``lifecycle`` makes sure every job, however it ends, publishes exactly one final
trigger and frees its slot. The periodic scrub (``scrub``, on its own low-priority queue) verifies
every archive and keeps what it found outside the run (``health``).
See ``docs/jobs.md``.
"""

from .audit import NULL_RECORDER, Recorder, acting_as, install_recorder
from .cancel import CancelStatus, cancel_job
from .connection import embedded_url
from .context import JobsContext
from .delete import delete_archive
from .enqueue import enqueue_archive, enqueue_prune, enqueue_restore, enqueue_undo, running_job
from .errors import Canceled, JobRunning, NotCancelable, QueueUnavailable
from .health import Health, archive_health
from .jobinfo import JOB_STATES, job_status
from .lines import parse_line
from .locks import acquire_lock, ensure_unlocked, lock_statuses, release_lock
from .reservation import OwnerQuota
from .runs import find_run
from .settings import ENV as SETTINGS_ENV
from .settings import Settings
from .stream import parse_entry
from .vocabulary import Event, JobKind, Trigger
from .worker import worker_count

__all__ = [
    "JOB_STATES",
    "NULL_RECORDER",
    "SETTINGS_ENV",
    "CancelStatus",
    "Canceled",
    "Event",
    "Health",
    "JobKind",
    "JobRunning",
    "JobsContext",
    "NotCancelable",
    "OwnerQuota",
    "QueueUnavailable",
    "Recorder",
    "Settings",
    "Trigger",
    "acquire_lock",
    "acting_as",
    "archive_health",
    "cancel_job",
    "delete_archive",
    "embedded_url",
    "enqueue_archive",
    "enqueue_prune",
    "enqueue_restore",
    "enqueue_undo",
    "ensure_unlocked",
    "find_run",
    "install_recorder",
    "job_status",
    "lock_statuses",
    "parse_entry",
    "parse_line",
    "release_lock",
    "running_job",
    "worker_count",
]
