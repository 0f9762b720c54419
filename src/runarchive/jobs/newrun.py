"""A fork's new run id, claimed before the job is queued so two forks into it never both start.

The claim is ``<prefix>:new-run:<runid>`` = ``<job id> <claimed at>``, set with a
compare-and-set script (absent → ours). It is freed by compare-and-delete when the job ends.
A job that died without freeing it leaves a claim whose holder has ended: its final
trigger was published (``<prefix>:job:<id>:final``, set by whoever finished it,
``lifecycle``), or RQ ended it, or never got it (``slot_grace`` after the claim: the enqueuer
died between claim and push). Such a claim is stale and the next claim takes it over, in one
script, so a kill -9 never blocks the id longer than it takes ``reconcile`` to end the job.

The claim only orders the service's own forks early (a refused request costs nothing); the
filesystem decides in the end: the new run appears by ``renameat2(RENAME_NOREPLACE)``, which
fails if anything (another host, the CLI, the host application) made the name meanwhile.
"""

from __future__ import annotations

import time
from typing import Any

from .context import JobsContext
from .slot import ENDED, fetch_job, slot_ttl

# The claim's value is ``<job id> <claimed at>``. Claim if free; else return the value. Take
# over from ARGV[3] (a value seen stale) only if it is still the claim: compare-and-set, never
# check-then-set.
_CLAIM_LUA = """
local value = redis.call('GET', KEYS[1])
if (not value) or (ARGV[3] ~= '' and value == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
  return ARGV[1]
end
return value
"""

_RELEASE_LUA = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def claim_new_run(ctx: JobsContext, runid: str, job_id: str) -> str | None:
    """Claim new run id ``runid`` for fork job ``job_id``; return None, or the live holder.

    A claim already ours (the job itself, after ``enqueue`` claimed for it) stays ours.
    """
    data = ctx.clients.data
    script = data.register_script(_CLAIM_LUA)
    key, ttl = ctx.keys.new_run_claim(runid), slot_ttl(ctx.settings)
    mine = f"{job_id} {time.time():.6f}"
    value = str(script(keys=[key], args=[mine, ttl, ""]))
    holder, _, claimed_at = value.partition(" ")
    if holder == job_id:
        return None
    if _ended(ctx, holder, _seconds(claimed_at)):
        value = str(script(keys=[key], args=[mine, ttl, value]))
        holder = value.partition(" ")[0]
    return None if holder == job_id else holder


def claim_holder(ctx: JobsContext, runid: str) -> str | None:
    """Return the job id holding the claim on ``runid``, or None."""
    value = ctx.clients.data.get(ctx.keys.new_run_claim(runid))
    return str(value).partition(" ")[0] if value is not None else None


def release_new_run(ctx: JobsContext, runid: str, job_id: str) -> None:
    """Free the claim on ``runid`` if job ``job_id`` still holds it."""
    data = ctx.clients.data
    data.register_script(_RELEASE_LUA)(keys=[ctx.keys.new_run_claim(runid)], args=[job_id])


def _ended(ctx: JobsContext, job_id: str, claimed_at: float) -> bool:
    """Tell whether the claim's holder can no longer be making the run: its final trigger
    is out, or RQ ended it, or RQ never got it and the claim is older than ``slot_grace``
    (younger ones may be mid-enqueue, the claim being taken before the push)."""
    if ctx.clients.data.exists(ctx.keys.job_final(job_id)):
        return True
    job: Any = fetch_job(ctx.clients.rq, job_id)
    if job is None:
        return time.time() - claimed_at > ctx.settings.slot_grace
    return job.get_status(refresh=False) in ENDED


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("-inf")  # unreadable: as old as can be
