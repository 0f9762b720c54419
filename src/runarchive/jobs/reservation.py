"""Archive quotas at enqueue: the run's own check, and each owner's reservation in Redis.

Why a reservation: per run there is one job at a time (the slot), so a run's own quota is a
plain check, its archives plus the next one's estimate (``core.quota``). But one owner's runs
archive at once, and an archive in flight is on no disk yet: twenty requests that each see
9 GiB of 10 used would all pass a plain check. So an archive request *reserves* bytes in each
limited owner's hash ``<prefix>:quota:<owner>`` (``r:<job id>`` = ``<bytes> <deadline>``), in
one Lua script that adds the reservations already held to the measured usage, refuses when
``usage + reservations + estimate`` passes the limit (or one more archive the count, a
reservation counting as one archive), and otherwise writes the reservation in every owner's
hash at once (compare-and-set: never check-then-set).

The disk part of the usage cannot be measured inside the script (it lists folders), so it is
measured optimistically: the enqueuer reads each owner's ``gen``, measures, and the script
refuses to act (``retry``) if any ``gen`` moved. ``gen`` moves when a reservation is
released, and a job releases only *after* its archive is published (``lifecycle.finish_job``).
So a measure either saw the archive on disk or ran while its reservation was still held
(counted twice at worst, never zero times); deletes and prunes only lower the usage.

What a reservation holds, and the job's budget: ``min(headroom, estimate × 1.25 + 64 KiB)``,
the headroom being the tightest limit's room left (the run's own included). That number is
the byte budget ``create_archive`` enforces while writing (``QuotaExceeded``, no partial
file), so the reservations of every archive in flight, each bounded by its own budget, can
never add up past a limit, whatever the estimates said.

Release: ``finish_job`` (every ending: returned, raised, killed and reaped, stale slot) runs
``release_reservation``, which deletes the job's reservations and counts ``gen`` up. A
reservation whose release never ran (Redis lost the job's set) expires at its deadline, the
slot's backstop (job timeout + a day): the reserve script drops expired ones.

Not covered (documented): archives made outside the owner reservation, ``runarchive
archive`` on the host (no owner; it honours the run's own limit) and ``enqueue-archive`` (the
run's own limit only); a job started outside ``enqueue`` (``rq requeue``) has no budget.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runarchive.core import (
    Limit,
    NotFound,
    QuotaExceeded,
    RunArchiveError,
    RunRef,
    budget_for,
    check_quota,
    list_archives,
    measure_usage,
)

from .context import JobsContext
from .keys import Keys
from .slot import slot_ttl

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 50
MARGIN_SHARE = 4  # the reservation's margin over the estimate: a quarter of it …
MARGIN_BYTES = 64 << 10  # … plus 64 KiB

_RESERVE_LUA = """
local n = #KEYS - 1
local job, estimate, grant = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local now = tonumber(redis.call('TIME')[1])
for i = 1, n do
  local base = 4 + (i - 1) * 5
  local gen = redis.call('HGET', KEYS[i], 'gen') or '0'
  if gen ~= ARGV[base + 1] then return {'retry', i, 0, 0} end
  local held, count = 0, 0
  local fields = redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    if string.sub(fields[j], 1, 2) == 'r:' then
      local bytes, deadline = string.match(fields[j + 1], '^(%d+) (%d+)$')
      if bytes == nil or tonumber(deadline) < now then
        redis.call('HDEL', KEYS[i], fields[j])
      else
        held = held + tonumber(bytes)
        count = count + 1
      end
    end
  end
  local used = tonumber(ARGV[base + 2]) + held
  local used_count = tonumber(ARGV[base + 3]) + count
  local limit_bytes, limit_count = tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])
  if limit_count >= 0 and used_count + 1 > limit_count then
    return {'count', i, used, used_count}
  end
  if limit_bytes >= 0 then
    if used + estimate > limit_bytes then return {'bytes', i, used, used_count} end
    grant = math.min(grant, limit_bytes - used)
  end
end
for i = 1, n do
  redis.call('HSET', KEYS[i], 'r:' .. job, string.format('%d %d', grant, now + ttl))
  redis.call('EXPIRE', KEYS[i], ttl)
  redis.call('SADD', KEYS[n + 1], KEYS[i])
end
redis.call('EXPIRE', KEYS[n + 1], ttl)
return {'ok', 0, grant, 0}
"""

_RELEASE_LUA = """
local owners = redis.call('SMEMBERS', KEYS[1])
for _, key in ipairs(owners) do
  redis.call('HDEL', key, 'r:' .. ARGV[1])
  redis.call('HINCRBY', key, 'gen', 1)
end
redis.call('DEL', KEYS[1])
return #owners
"""


@dataclass(frozen=True, slots=True)
class OwnerQuota:
    """One owner of the run being archived: the limit on all their runs' archives.

    ``owner`` is the accounts' user name (the Redis key's last part); ``runs`` every run they
    own that this host can see (located, the archived one included); ``subject`` how a
    refusal names them, a plural (``Your runs``, ``The runs of ana``).
    """

    owner: str
    limit: Limit
    runs: tuple[RunRef, ...]
    subject: str


def _archives_of(
    runs: Sequence[RunRef], measured: RunRef, bytes_: int, count: int
) -> tuple[int, int]:
    """Sum the archives of ``runs``; the one just measured counts with its measure."""
    total, archives = 0, 0
    for run in runs:
        if run.path == measured.path:
            total, archives = total + bytes_, archives + count
            continue
        try:
            rows = list_archives(run.path)
        except NotFound:
            continue  # removed since it was granted: it holds nothing
        except RunArchiveError:
            log.warning("quota: cannot list run %s; its archives are not counted", run.runid)
            continue
        total += sum(row.size for row in rows)
        archives += len(rows)
    return total, archives


def archive_budget(
    ctx: JobsContext, run: RunRef, owners: Sequence[OwnerQuota], job_id: str
) -> int | None:
    """Check the run's own quota and reserve in every limited owner's; return the job's byte
    budget (None: nothing limits its bytes). Raises QuotaExceeded with the refusal's message."""
    usage = measure_usage(run, fresh=True)
    estimate = usage.estimate
    run_limit = ctx.settings.run_limit
    check_quota(f"Run {run.runid}", usage.archives_bytes, usage.archives_count, estimate, run_limit)
    budget = budget_for(usage.archives_bytes, run_limit)
    limited = [owner for owner in owners if not owner.limit.unlimited]
    if not limited:
        return budget
    want = estimate + estimate // MARGIN_SHARE + MARGIN_BYTES
    if budget is not None:
        want = min(want, budget)
    data = ctx.clients.data
    keys = [ctx.keys.quota_owner(owner.owner) for owner in limited]
    script = data.register_script(_RESERVE_LUA)
    for _ in range(MAX_ATTEMPTS):
        args: list[Any] = [job_id, estimate, want, slot_ttl(ctx.settings)]
        for key, owner in zip(keys, limited, strict=True):
            gen = data.hget(key, "gen") or "0"
            used, count = _archives_of(owner.runs, run, usage.archives_bytes, usage.archives_count)
            args += [gen, used, count, _or_minus(owner.limit.bytes), _or_minus(owner.limit.count)]
        verdict, index, first, second = script(keys=[*keys, ctx.keys.job_quota(job_id)], args=args)
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if verdict == "ok":
            return int(first)
        if verdict == "retry":
            continue  # an archive of these owners ended while we measured: measure again
        owner = limited[int(index) - 1]
        check_quota(owner.subject, int(first), int(second), estimate, owner.limit, plural=True)
        raise QuotaExceeded(f"{owner.subject} would pass their quota; delete or prune archives.")
    raise QuotaExceeded(
        "Archives of these runs end faster than their usage can be measured; retry in a moment."
    )


def _or_minus(value: int | None) -> int:
    return -1 if value is None else value


def release_reservation(client: Any, keys: Keys, job_id: str) -> int:
    """Delete the job's reservations (every owner's) and count their ``gen`` up; return how
    many owners it held one in."""
    script = client.register_script(_RELEASE_LUA)
    return int(script(keys=[keys.job_quota(job_id)], args=[job_id]))
