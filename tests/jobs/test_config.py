from __future__ import annotations

from pathlib import Path

import pytest

from runarchive.core import InvalidInput
from runarchive.jobs.settings import DEFAULT_HOOKS, Settings


def test_defaults_suit_a_production_deployment() -> None:
    s = Settings.from_env({})
    assert s.redis_url is None
    assert s.queue == "runarchive"
    assert s.job_timeout == 6 * 3600
    assert s.key_prefix == "runarchive"
    assert s.nodb_cache_db == 13
    assert s.status_keep == 200
    assert s.post_restore_hooks == DEFAULT_HOOKS
    assert s.links == "store"


def test_it_reads_every_setting_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "REDIS_URL": "redis://h:1/2",
            "RUNARCHIVE_RUNS_ROOT": "/srv/runs",
            "RUNARCHIVE_RUN_LAYOUT": "sharded",
            "RUNARCHIVE_QUEUE": "q",
            "RUNARCHIVE_JOB_TIMEOUT": "100",
            "RUNARCHIVE_KEY_PREFIX": "p",
            "RUNARCHIVE_LOCK_DB": "0",
            "RUNARCHIVE_HEARTBEAT_TTL": "2.5",
            "RUNARCHIVE_POST_RESTORE_HOOKS": "a.b:c, d.e:f",
            "RUNARCHIVE_LINKS": "follow",
        }
    )
    assert s.redis_url == "redis://h:1/2"
    assert s.runs_root == Path("/srv/runs")
    assert s.run_layout == "sharded"
    assert (s.queue, s.job_timeout, s.key_prefix, s.lock_db) == ("q", 100, "p", 0)
    assert s.heartbeat_ttl == 2.5
    assert s.post_restore_hooks == ("a.b:c", "d.e:f")
    assert s.links == "follow"


def test_options_override_the_environment_but_none_does_not() -> None:
    s = Settings.from_env({"RUNARCHIVE_QUEUE": "env"}, queue="cli", redis_url=None)
    assert s.queue == "cli"
    assert s.redis_url is None


def test_hooks_can_be_switched_off() -> None:
    assert Settings.from_env({"RUNARCHIVE_POST_RESTORE_HOOKS": "none"}).post_restore_hooks == ()


@pytest.mark.parametrize(
    "env",
    [
        {"RUNARCHIVE_JOB_TIMEOUT": "soon"},
        {"RUNARCHIVE_RUN_LAYOUT": "nested"},
        {"RUNARCHIVE_KEY_PREFIX": "a b"},
        {"RUNARCHIVE_JOB_TIMEOUT": "0"},
        {"RUNARCHIVE_LINKS": "copy"},
    ],
)
def test_it_refuses_invalid_values_with_the_variable_named(env: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        Settings.from_env(env)
