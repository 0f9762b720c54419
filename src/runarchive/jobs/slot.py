"""The per-run job slot: at most one archive or restore job per run, claimed atomically.

The slot is a hash ``<prefix>:slot:<runid>`` = ``{job_id, kind, claimed_at, host}``. It is
claimed by a Lua script (create only if absent) **before** the job is enqueued, with the job id
the job will get, so two enqueuers can never both win (compare-and-set; never check-then-set).
It is released only by a compare-and-delete on the job id, so a late releaser cannot free a
slot that has since been claimed by another job.

The job checks again when it starts (``take_slot``, one script): the slot holds its id (the
normal case) or is free (a job started outside ``enqueue``: ``rq requeue``, a dashboard's
Requeue; it claims the slot then), else another job has the run and this one ends at once.

A slot is **stale** when its job can no longer finish by itself (``stale_reason``):

* the RQ job is finished, failed, stopped or canceled (its end was not seen: e.g. canceled
  while queued, or an expired hook);
* the RQ job is missing (Redis lost it, or the enqueuer died between claim and enqueue) and
  the claim is older than ``slot_grace`` (younger claims may be mid-enqueue);
* a local operation (``local-…`` holder, see ``jobs.local``) stopped renewing its lease;
* the RQ job is started but its liveness lease (``<prefix>:job:<id>:alive``, renewed by the
  running job every ``heartbeat_ttl/5`` s) has expired: the process running it died (SIGKILL,
  OOM, host lost);
* the RQ job is queued but a worker took it (RQ recorded an execution) more than
  ``heartbeat_ttl`` ago and it never started: that worker died between dequeue and start.

Stale slots are finished and freed by ``lifecycle.reconcile`` (worker start, every claim, and
periodically in every worker). As a last resort the slot key expires after the job timeout
plus one day.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from .keys import Keys
from .settings import Settings

_CLAIM_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'kind', ARGV[2], 'claimed_at', ARGV[3],
           'host', ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1
"""

# The job's own check when it starts: ours already (enqueued by us), or free (claim it now),
# or another job's. Returns the holder's job id after the call.
_TAKE_LUA = """
local holder = redis.call('HGET', KEYS[1], 'job_id')
if holder then return holder end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'job_id', ARGV[1], 'kind', ARGV[2], 'claimed_at', ARGV[3],
           'host', ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return ARGV[1]
"""

_RELEASE_LUA = """
if redis.call('HGET', KEYS[1], 'job_id') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Holder ids of local operations (the CLI with a Redis URL), which are not RQ jobs.
LOCAL_HOLDER_PREFIX = "local-"

ENDED = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED})


@dataclass(frozen=True, slots=True)
class Slot:
    """Who holds a run's slot."""

    runid: str
    job_id: str
    kind: str
    claimed_at: float
    host: str


def slot_ttl(settings: Settings) -> int:
    """Return the backstop expiry of a slot key: job timeout plus a day of queueing."""
    return settings.job_timeout + 24 * 3600


def claim_slot(client: Any, keys: Keys, runid: str, job_id: str, kind: str, *, ttl: int) -> bool:
    """Claim the run's slot for ``job_id``; return False if another job holds it."""
    script = client.register_script(_CLAIM_LUA)
    args = [job_id, kind, f"{time.time():.6f}", socket.gethostname(), ttl]
    return bool(script(keys=[keys.slot(runid)], args=args))


def take_slot(client: Any, keys: Keys, runid: str, job_id: str, kind: str, *, ttl: int) -> str:
    """Hold the run's slot for ``job_id`` (verify it, or claim it if free); return the holder.

    The holder is ``job_id`` when the job may run; any other id means another job has the run.
    One script, so a job started outside ``enqueue`` (``rq requeue``, a dashboard's Requeue)
    can never run beside the slot's holder, nor two such jobs beside each other.
    """
    script = client.register_script(_TAKE_LUA)
    args = [job_id, kind, f"{time.time():.6f}", socket.gethostname(), ttl]
    return str(script(keys=[keys.slot(runid)], args=args))


def release_slot(client: Any, keys: Keys, runid: str, job_id: str) -> bool:
    """Free the run's slot if ``job_id`` still holds it; return whether it did."""
    script = client.register_script(_RELEASE_LUA)
    return bool(script(keys=[keys.slot(runid)], args=[job_id]))


def read_slot(client: Any, keys: Keys, runid: str) -> Slot | None:
    """Return the run's slot holder, or None when the slot is free."""
    data = client.hgetall(keys.slot(runid))
    if not data or "job_id" not in data:
        return None
    return Slot(
        runid=runid,
        job_id=data["job_id"],
        kind=data.get("kind", ""),
        claimed_at=float(data.get("claimed_at", 0) or 0),
        host=data.get("host", ""),
    )


def iter_slots(client: Any, keys: Keys) -> Iterator[Slot]:
    """Yield every held slot (SCAN)."""
    for key in client.scan_iter(match=keys.slot_pattern(), count=500):
        slot = read_slot(client, keys, keys.runid_of_slot(key))
        if slot is not None:
            yield slot


def is_local_holder(job_id: str) -> bool:
    """Tell whether a slot holder is a local operation (``jobs.local``) rather than an RQ job."""
    return job_id.startswith(LOCAL_HOLDER_PREFIX)


def fetch_job(rq_client: Any, job_id: str) -> Job | None:
    """Return the RQ job, or None when Redis no longer has it."""
    try:
        return Job.fetch(job_id, connection=rq_client)
    except NoSuchJobError:
        return None


def _age(moment: datetime | None, now: float) -> float:
    if moment is None:
        return float("inf")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return now - moment.timestamp()


def stale_reason(
    data_client: Any, rq_client: Any, settings: Settings, slot: Slot, *, now: float | None = None
) -> str | None:
    """Return why the slot's job can no longer end by itself, or None while it still can."""
    now = time.time() if now is None else now
    if is_local_holder(slot.job_id):
        if data_client.exists(settings.keys.job_alive(slot.job_id)):
            return None
        return "local process died" if now - slot.claimed_at > settings.heartbeat_ttl else None
    job = fetch_job(rq_client, slot.job_id)
    if job is None:
        if now - slot.claimed_at > settings.slot_grace:
            return "job missing"
        return None
    status = job.get_status(refresh=False)
    if status in ENDED:
        return f"job {getattr(status, 'value', status)}"
    if status == JobStatus.STARTED and not data_client.exists(settings.keys.job_alive(job.id)):
        started_age = _age(job.started_at, now)
        if started_age > settings.heartbeat_ttl:
            return "job process died"
    if status == JobStatus.QUEUED and not data_client.exists(settings.keys.job_alive(job.id)):
        # Taken by a worker (an execution is recorded) but never started: the worker died
        # between its dequeue and the work horse's start. RQ would notice only a maintenance
        # interval or an execution TTL later; a live worker starts it within milliseconds.
        taken = _taken_age(rq_client, job, now)
        if taken is not None and taken > settings.heartbeat_ttl:
            return "worker died before the job started"
    return None


def _taken_age(rq_client: Any, job: Job, now: float) -> float | None:
    """Seconds since a worker took the job (its oldest RQ execution), None if none did.

    The started registry's members are ``<job id>:<execution id>``; an execution whose hash
    RQ already expired counts as taken long ago.
    """
    registry = StartedJobRegistry(job.origin, connection=rq_client)
    prefix = f"{job.id}:".encode()
    members = [m for m, _ in rq_client.zscan_iter(registry.key, match=prefix + b"*")]
    ages = []
    for member in members:
        if not member.startswith(prefix):
            continue
        created = rq_client.hget(b"rq:execution:" + member, "created_at")
        ages.append(now - _timestamp(created) if created else float("inf"))
    return max(ages) if ages else None


def _timestamp(value: bytes) -> float:
    """RQ's execution ``created_at`` (a POSIX timestamp); unreadable counts as long ago."""
    try:
        return float(value)
    except ValueError:
        return float("-inf")
