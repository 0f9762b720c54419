"""The retention rule (restic's ``forget --keep-*``), as a pure function: properties and cases."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runarchive.core import Candidate, InvalidInput, Policy, parse_policy, plan_retention

ZONES = [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=9, minutes=30))]


def _day(t: datetime) -> object:
    return t.astimezone(UTC).date()


def _week(t: datetime) -> object:
    return t.astimezone(UTC).isocalendar()[:2]


def _month(t: datetime) -> object:
    return (t.astimezone(UTC).year, t.astimezone(UTC).month)


def restic_rule(archives: list[Candidate], pinned: Iterable[str], policy: Policy) -> set[str]:
    """restic's rule restated by buckets (not its single pass): the oracle of the property."""
    pins = set(pinned)
    ordered = sorted(archives, key=lambda c: c.time, reverse=True)
    if policy.empty:
        return {c.name for c in ordered}
    counted = [c for c in ordered if c.name not in pins]
    kept = {c.name for c in ordered if c.name in pins}
    kept |= {c.name for c in counted[: policy.keep_last]}
    rules: list[tuple[int, Callable[[datetime], object]]] = [
        (policy.keep_daily, _day), (policy.keep_weekly, _week), (policy.keep_monthly, _month),
    ]  # fmt: skip
    for n, bucket in rules:
        if n == 0:
            continue
        newest: dict[object, str] = {}
        for cand in counted:
            newest.setdefault(bucket(cand.time), cand.name)  # dicts keep the newest-first order
        kept |= set(list(newest.values())[:n])
        if len(newest) < n and counted:
            kept.add(counted[-1].name)  # counts left: the oldest is kept too
    return kept


moments = st.datetimes(
    min_value=datetime(2024, 12, 20),
    max_value=datetime(2026, 3, 10),
    timezones=st.sampled_from(ZONES),
)
policies = st.builds(Policy, *(st.integers(min_value=0, max_value=6) for _ in range(4)))


@settings(max_examples=400, deadline=None)
@given(
    times=st.lists(moments, max_size=40, unique_by=lambda t: t.timestamp()),
    policy=policies,
    pin_mask=st.lists(st.booleans(), max_size=40),
    sizes=st.lists(st.integers(min_value=0, max_value=10**9), min_size=40, max_size=40),
)
def test_the_kept_set_is_restics_rule_and_pinned_archives_are_always_kept(
    times: list[datetime], policy: Policy, pin_mask: list[bool], sizes: list[int]
) -> None:
    archives = [Candidate(f"a{i}.zip", t, sizes[i]) for i, t in enumerate(times)]
    pinned = {c.name for c, pin in zip(archives, pin_mask, strict=False) if pin}
    plan = plan_retention(archives, pinned, policy)
    kept = {k.name for k in plan.keep}
    removed = {c.name for c in plan.remove}
    assert kept == restic_rule(archives, pinned, policy)
    assert pinned <= kept
    assert kept.isdisjoint(removed) and kept | removed == {c.name for c in archives}
    assert plan.bytes_freed == sum(c.size for c in archives if c.name in removed)
    for k in plan.keep:
        assert k.reasons and (("pinned" in k.reasons) == (k.name in pinned))
    if not policy.empty and len(archives) > len(pinned):
        # the newest unpinned archive is kept by every rule that is on
        newest = max((c for c in archives if c.name not in pinned), key=lambda c: c.time)
        assert newest.name in kept


def sundays(count: int) -> list[Candidate]:
    start = datetime(2019, 9, 1, 11, tzinfo=UTC)
    return [Candidate(f"s{i:02d}.zip", start + timedelta(weeks=i), 10) for i in range(count)]


def test_keep_daily_four_of_twelve_sundays_keeps_the_last_four_as_restics_docs_show() -> None:
    plan = plan_retention(sundays(12), [], Policy(keep_daily=4))
    assert [k.name for k in plan.keep] == ["s11.zip", "s10.zip", "s09.zip", "s08.zip"]
    assert all(k.reasons == ("daily",) for k in plan.keep)
    assert len(plan.remove) == 8 and plan.bytes_freed == 80


def test_an_archive_kept_by_several_rules_carries_every_reason() -> None:
    plan = plan_retention(sundays(3), [], Policy(keep_last=1, keep_weekly=1, keep_monthly=5))
    reasons = {k.name: k.reasons for k in plan.keep}
    assert reasons["s02.zip"] == ("last", "weekly", "monthly")
    # one month holds archives, five were asked: the oldest is kept as well
    assert reasons["s00.zip"] == ("oldest monthly",)
    assert [c.name for c in plan.remove] == ["s01.zip"]


def test_pinned_archives_do_not_count_towards_keep_last() -> None:
    plan = plan_retention(sundays(4), ["s03.zip"], Policy(keep_last=1))
    assert {k.name: k.reasons for k in plan.keep} == {"s03.zip": ("pinned",), "s02.zip": ("last",)}


def test_days_are_utc_calendar_days_not_the_archives_own_zones() -> None:
    west = timezone(timedelta(hours=-7))
    # 23:30 and 20:00 on Jan 1 in UTC-7 are Jan 2 06:30 and Jan 2 03:00 UTC: one UTC day
    late = Candidate("late.zip", datetime(2025, 1, 1, 23, 30, tzinfo=west))
    early = Candidate("early.zip", datetime(2025, 1, 1, 20, 0, tzinfo=west))
    before = Candidate("before.zip", datetime(2025, 1, 1, 12, 0, tzinfo=UTC))
    plan = plan_retention([late, early, before], [], Policy(keep_daily=2))
    assert [k.name for k in plan.keep] == ["late.zip", "before.zip"]


def test_an_empty_policy_or_none_keeps_everything() -> None:
    for policy in (None, Policy()):
        plan = plan_retention(sundays(3), [], policy)
        assert plan.remove == () and len(plan.keep) == 3


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"keep_last": True},
        {"keep_last": "3"},
        {"keep_last": -1},
        {"keep_last": 1.0},
        {"keep_last": 10**9},
        {"keep_hourly": 1},
    ],
)
def test_a_policy_is_parsed_strictly(raw: object) -> None:
    with pytest.raises(InvalidInput):
        parse_policy(raw, partial=True)


def test_a_full_policy_needs_every_rule_and_a_partial_one_defaults_to_zero() -> None:
    with pytest.raises(InvalidInput, match="Missing"):
        parse_policy({"keep_last": 1})
    assert parse_policy({"keep_last": 1}, partial=True) == Policy(keep_last=1)
