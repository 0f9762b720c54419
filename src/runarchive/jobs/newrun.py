"""A fork's new run id, claimed before the job is queued so two forks into it never both start.

The claim is ``<prefix>:new-run:<runid>`` = the fork job's id, set with a compare-and-set
script (absent → ours). It is freed by compare-and-delete when the job ends. A job that died
without freeing it leaves a claim whose holder has ended: its final trigger was published
(``<prefix>:job:<id>:final``, set by whoever finished it, ``lifecycle``) or RQ has no such
job running any more. Such a claim is stale and the next claim takes it over, in one script,
so a kill -9 never blocks the id for longer than it takes ``reconcile`` to finish the dead job.

The claim only orders the service's own forks early (a refused request costs nothing); the
filesystem decides in the end: the new run appears by ``renameat2(RENAME_NOREPLACE)``, which
fails if anything (another host, the CLI, the host application) made the name meanwhile.
"""

from __future__ import annotations

from typing import Any

from .context import JobsContext
from .slot import ENDED, fetch_job, slot_ttl

# Claim if free; else return the holder. Take over from ARGV[3] (a holder seen stale) only if
# it still holds the claim: compare-and-set, never check-then-set.
_CLAIM_LUA = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or (ARGV[3] ~= '' and holder == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
  return ARGV[1]
end
return holder
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def claim_new_run(ctx: JobsContext, runid: str, job_id: str) -> str | None:
    """Claim new run id ``runid`` for fork job ``job_id``; return None, or the live holder."""
    data = ctx.clients.data
    script = data.register_script(_CLAIM_LUA)
    key, ttl = ctx.keys.new_run_claim(runid), slot_ttl(ctx.settings)
    holder = str(script(keys=[key], args=[job_id, ttl, ""]))
    if holder == job_id:
        return None
    if _ended(ctx, holder):
        holder = str(script(keys=[key], args=[job_id, ttl, holder]))
    return None if holder == job_id else holder


def release_new_run(ctx: JobsContext, runid: str, job_id: str) -> None:
    """Free the claim on ``runid`` if job ``job_id`` still holds it."""
    data = ctx.clients.data
    data.register_script(_RELEASE_LUA)(keys=[ctx.keys.new_run_claim(runid)], args=[job_id])


def _ended(ctx: JobsContext, job_id: str) -> bool:
    """Tell whether the claim's holder can no longer be making the run."""
    if ctx.clients.data.exists(ctx.keys.job_final(job_id)):
        return True
    job: Any = fetch_job(ctx.clients.rq, job_id)
    return job is None or job.get_status(refresh=False) in ENDED
