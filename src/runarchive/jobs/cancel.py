"""Canceling a job: at once while it is queued, cooperatively while it runs, never mid-swap.

The key ``<prefix>:job:<id>:cancel`` is where a job and its canceler meet (compare-and-set,
never check-then-set):

* **The canceler** (``cancel_job``) sets it to its user name with one script that refuses when
  the job already published its final trigger (``<prefix>:job:<id>:final``) and never
  overwrites a value already there: the first canceler's name stays.
* **The running job** (``CancelWatch``, called with every progress event of the core) reads it
  at most every ``CHECK_INTERVAL`` seconds and at each phase change, and raises ``Canceled``.
* **The point of no return** is the core's last-chance callback (``CancelWatch.commit``): a
  restore's ``before_swap``, once its stage is complete and synced, just before it is journaled
  and swapped in (its SWAP phase); an archive's ``before_publish``, once it is written and
  synced, just before it is linked to its name. There the job claims the key with
  ``SWAP_MARKER`` (SET NX). A canceler that came first wins: the job raises ``Canceled`` there
  and the core leaves the run as it was (stage removed, temp archive deleted). A canceler that
  comes later is refused (``NotCancelable``, HTTP 409, exit 3) and the job finishes.

Exactly one final trigger, ``Error: Canceled by <user>`` its ``Error:`` line:

* a **queued** job is finished by the canceler (``lifecycle.finish_job``, SET NX on the final
  marker), then canceled in RQ (removed from its queue). A worker that dequeued it in that
  instant finds the key when the job starts (``CancelWatch.check``, before the job touches its
  slot or run) and ends it: its ``finish_job`` publishes nothing when the canceler's came
  first, or the same lines when it came first;
* a **running** job ends itself (``tasks``): ``Error: Canceled by <user>``, ``EXCEPTION``,
  ``TRIGGER … *_FAILED``, its slot and locks freed as for any failure.

The job deletes the key when it ends (after its final marker is set, so no canceler can set it
again): a requeued job id starts with no cancel of its earlier run. Otherwise the key expires
with the final marker (``RESULT_TTL``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from enum import StrEnum

import redis
from rq.exceptions import InvalidJobOperation
from rq.job import JobStatus

from runarchive.core import NotFound
from runarchive.core.progress import Phase, ProgressEvent

from .context import JobsContext
from .errors import Canceled, NotCancelable
from .lifecycle import finish_job
from .slot import fetch_job
from .vocabulary import JobKind

log = logging.getLogger(__name__)

# The job's claim that its swap began. No user name starts with ":" (web accounts are
# [A-Za-z0-9_.@-], and an OS user name cannot hold a colon).
SWAP_MARKER = ":swap"
CHECK_INTERVAL = 0.2

# KEYS: cancel, final. ARGV: user, ttl. Returns {outcome, value}: ended (value: the trigger),
# set (value: the user), or held (value: the earlier canceler, or SWAP_MARKER).
_REQUEST_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {'ended', redis.call('GET', KEYS[2])} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2])) then
  return {'set', ARGV[1]}
end
return {'held', redis.call('GET', KEYS[1])}
"""

_WAITING = frozenset({JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED})


class CancelStatus(StrEnum):
    """What ``cancel_job`` did: the ``status`` of the API's answer."""

    CANCELED = "canceled"  # it was waiting: it is over now, and never ran
    CANCELING = "canceling"  # it runs: it stops at its next progress event, before its swap


def swap_refusal(kind: JobKind) -> str:
    """Return why a job past its point of no return cannot be canceled."""
    if kind is JobKind.RESTORE:
        return "The restore is already swapping in; it will finish."
    if kind is JobKind.PRUNE:
        return "The prune is already removing archives; it will finish."
    if kind is JobKind.UNDO:
        return "The undo is already swapping back; it will finish."
    return "The archive is already being saved; it will finish."


def cancel_job(ctx: JobsContext, job_id: str, user: str) -> CancelStatus:
    """Cancel job ``job_id`` on behalf of ``user``; raise NotFound or NotCancelable."""
    job = fetch_job(ctx.clients.rq, job_id)
    runid = job.meta.get("runid") if job is not None else None
    if job is None or not isinstance(runid, str):
        raise NotFound(f"Job not found: {job_id}")
    ctx = ctx.with_prefix(job.meta.get("prefix"))
    try:
        kind = JobKind(str(job.meta.get("kind")))
    except ValueError:
        kind = JobKind.ARCHIVE
    keys = ctx.keys
    script = ctx.clients.data.register_script(_REQUEST_LUA)
    outcome, value = script(
        keys=[keys.job_cancel(job_id), keys.job_final(job_id)],
        args=[user, ctx.settings.result_ttl],
    )
    if outcome == "ended":
        raise NotCancelable(f"Job {job_id} already ended ({value}); there is nothing to cancel.")
    if value == SWAP_MARKER:
        raise NotCancelable(swap_refusal(kind))
    status = job.get_status()
    if status in _WAITING or status == JobStatus.CANCELED:
        # Finished first, then taken off the queue: a reconcile in between would otherwise
        # see a canceled job and finish it with its own words.
        finish_job(
            ctx, runid, job_id, kind, ok=False, error=str(Canceled(value)), meta=job.meta,
            canceled=True,
        )  # fmt: skip
        if status != JobStatus.CANCELED:
            with suppress(InvalidJobOperation):
                job.cancel()
        return CancelStatus.CANCELED
    if status == JobStatus.STARTED:
        return CancelStatus.CANCELING
    raise NotCancelable(f"Job {job_id} already ended ({getattr(status, 'value', status)}).")


class CancelWatch:
    """A running job's cancel check: a progress listener, and the core's last-chance callback."""

    def __init__(
        self, ctx: JobsContext, job_id: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = ctx.clients.data
        self.key = ctx.keys.job_cancel(job_id)
        self.ttl = ctx.settings.result_ttl
        self.clock = clock
        self.committed = False
        self._last_check = float("-inf")
        self._last_phase: Phase | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if self.committed:
            return
        now = self.clock()
        if event.phase != self._last_phase or now - self._last_check >= CHECK_INTERVAL:
            self._last_phase = event.phase
            self._last_check = now
            self.check()

    def check(self) -> None:
        """Raise ``Canceled`` if a user canceled the job (a Redis hiccup is not a cancel)."""
        try:
            value = self.client.get(self.key)
        except redis.exceptions.RedisError:
            log.warning("could not read the cancel key %s", self.key, exc_info=True)
            return
        if value is not None and value != SWAP_MARKER:
            raise Canceled(str(value))

    def commit(self) -> None:
        """Claim the swap (SET NX), or raise ``Canceled`` when a user came first.

        A Redis error propagates: the operation stops before its swap rather than swap in
        while a cancel may have been accepted.
        """
        if not self.client.set(self.key, SWAP_MARKER, nx=True, ex=self.ttl):
            value = self.client.get(self.key)
            if value is not None and value != SWAP_MARKER:
                raise Canceled(str(value))
        self.committed = True

    def clear(self) -> None:
        """Forget the key once the job's final marker is set (best effort)."""
        try:
            self.client.delete(self.key)
        except redis.exceptions.RedisError:
            log.warning("could not delete the cancel key %s", self.key, exc_info=True)
