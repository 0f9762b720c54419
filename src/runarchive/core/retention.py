"""The retention rule: which archives a policy keeps, and why (restic's ``forget`` semantics).

Pure: archives with their times, the pinned names and a policy in, a ``Plan`` out; no file is
touched here (``prune`` applies a plan to a run).

The rule, as restic's ``forget --keep-*`` states it:

* ``keep_last n``: the ``n`` newest archives.
* ``keep_daily n`` / ``keep_weekly n`` / ``keep_monthly n``: for the last ``n`` calendar days
  (ISO weeks, Monday to Sunday; months) *that hold at least one archive*, the newest archive
  of each. Buckets are calendar boundaries in **UTC**, not durations counted back from now.
* If a bucket rule has fewer such days/weeks/months than ``n``, the oldest archive is kept too
  (restic's "oldest daily snapshot": the longest history while counts are left).
* The rules are ORed: an archive kept by any rule is kept, with every rule that kept it among
  its reasons (as ``forget`` prints them).
* Pinned archives are always kept (reason ``pinned``) and are not counted by any rule: a
  policy keeps its ``n`` on top of the pins.
* A policy with every count zero is empty and keeps everything (restic refuses to act on an
  empty policy; so do we: prune never removes all archives by accident).

The algorithm is restic's single pass: walk the archives newest first; each bucket rule
remembers the bucket of the archive it last saw and has a count left; an archive starting a
new bucket while the rule has count left is kept by it and uses one count.

An archive's time is the UTC timestamp in our names (``<runid>.<YYYYMMDDTHHMMSSZ>.zip``); a
foreign zip's is its file's mtime (``names.archive_created``). Equal times keep the order
given (the catalog's: collision suffix, then name).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import InvalidInput

RULES = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")
MAX_KEEP = 100_000  # more than any run holds; bounds what a policy file may say
# The site default's environment variables (the jobs settings list them in their ENV map).
POLICY_ENV: dict[str, str] = {rule: f"RUNARCHIVE_{rule.upper()}" for rule in RULES}


@dataclass(frozen=True, slots=True)
class Policy:
    """How many archives each rule keeps (0: the rule is off)."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    @property
    def empty(self) -> bool:
        """Tell whether every count is zero: an empty policy keeps everything."""
        return not any(self.to_dict().values())

    def to_dict(self) -> dict[str, int]:
        """Return the policy as the API and the policy file spell it."""
        return {rule: getattr(self, rule) for rule in RULES}


def parse_policy(raw: object, *, partial: bool = False) -> Policy:
    """Return the policy ``raw`` describes, or raise InvalidInput.

    ``raw`` must be an object of the four rules, each a whole number 0..MAX_KEEP (never a
    boolean or a string); no other key. With ``partial`` a missing rule is 0 (an API body).
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput("A retention policy must be an object of keep_* counts.")
    unknown = sorted(str(k) for k in raw if k not in RULES)
    if unknown:
        raise InvalidInput(f"Unknown retention rule(s): {', '.join(unknown)}; use {RULES}.")
    missing = [rule for rule in RULES if rule not in raw]
    if missing and not partial:
        raise InvalidInput(f"Missing retention rule(s): {', '.join(missing)}.")
    counts: dict[str, int] = {}
    for rule in RULES:
        value = raw.get(rule, 0)
        if type(value) is not int or not 0 <= value <= MAX_KEEP:
            raise InvalidInput(f"{rule} must be a whole number from 0 to {MAX_KEEP}.")
        counts[rule] = value
    return Policy(**counts)


def policy_from_env(environ: Mapping[str, str] | None = None) -> Policy | None:
    """Return the site default policy from ``RUNARCHIVE_KEEP_*`` (None: none set, keep all)."""
    env = os.environ if environ is None else environ
    counts: dict[str, int] = {}
    for rule, var in POLICY_ENV.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            counts[rule] = int(raw)
        except ValueError:
            raise InvalidInput(f"Invalid value {raw!r} for {var}.") from None
    if not counts:
        return None
    policy = parse_policy(counts, partial=True)
    return None if policy.empty else policy


@dataclass(frozen=True, slots=True)
class Candidate:
    """One archive as the rule sees it: its name, time (aware, any zone) and size."""

    name: str
    time: datetime
    size: int = 0


@dataclass(frozen=True, slots=True)
class Kept:
    """An archive the plan keeps, and every reason (``pinned``, ``last``, ``daily`` …)."""

    name: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a policy does to a run's archives: kept (newest first, with reasons) and removed."""

    keep: tuple[Kept, ...]
    remove: tuple[Candidate, ...]

    @property
    def bytes_freed(self) -> int:
        """Bytes the removals free."""
        return sum(c.size for c in self.remove)

    def to_dict(self) -> dict[str, object]:
        """The API's answer: ``{"keep": [names], "remove": [names], "bytes_freed"}``."""
        return {
            "keep": [k.name for k in self.keep],
            "remove": [c.name for c in self.remove],
            "bytes_freed": self.bytes_freed,
        }


def _day(t: datetime) -> tuple[int, ...]:
    return (t.year, t.month, t.day)


def _week(t: datetime) -> tuple[int, ...]:
    iso = t.isocalendar()
    return (iso.year, iso.week)


def _month(t: datetime) -> tuple[int, ...]:
    return (t.year, t.month)


# rule -> (reason word, bucket of a UTC time); keep_last's bucket is the archive itself.
BUCKETS: dict[str, tuple[str, Callable[[datetime], tuple[int, ...]] | None]] = {
    "keep_last": ("last", None),
    "keep_daily": ("daily", _day),
    "keep_weekly": ("weekly", _week),
    "keep_monthly": ("monthly", _month),
}


def plan_retention(
    archives: Sequence[Candidate], pinned: Iterable[str], policy: Policy | None
) -> Plan:
    """Decide which of ``archives`` ``policy`` keeps (see the module's rule); nothing is touched.

    ``policy`` None or empty keeps everything (reason ``no policy``).
    """
    pins = frozenset(pinned)
    ordered = sorted(archives, key=lambda c: c.time.timestamp(), reverse=True)  # stable on ties
    if policy is None or policy.empty:
        reasons = {c.name: ["pinned"] if c.name in pins else ["no policy"] for c in ordered}
        return Plan(tuple(Kept(c.name, tuple(reasons[c.name])) for c in ordered), ())
    kept: dict[str, list[str]] = {c.name: ["pinned"] for c in ordered if c.name in pins}
    counted = [c for c in ordered if c.name not in pins]
    for rule, (word, bucket) in BUCKETS.items():
        left = getattr(policy, rule)
        if left == 0:
            continue
        last: object = None
        for index, cand in enumerate(counted):
            if left == 0:
                break
            key: object = index if bucket is None else bucket(cand.time.astimezone(UTC))
            if key != last:
                kept.setdefault(cand.name, []).append(word)
                left -= 1
            elif index == len(counted) - 1:  # counts left at the oldest: keep it too
                kept.setdefault(cand.name, []).append(f"oldest {word}")
                left -= 1
            last = key
    keep = tuple(Kept(c.name, tuple(kept[c.name])) for c in ordered if c.name in kept)
    remove = tuple(c for c in ordered if c.name not in kept)
    return Plan(keep, remove)
