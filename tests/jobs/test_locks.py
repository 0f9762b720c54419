"""NoDb-compatible locks against a real Redis."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from runarchive.core import InvalidInput, Locked
from runarchive.jobs.context import JobsContext
from runarchive.jobs.locks import (
    RunLocks,
    acquire_lock,
    ensure_unlocked,
    lock_infos,
    lock_statuses,
    locked_nodb_files,
    refresh_lock,
    release_job_locks,
    release_lock,
)


def test_a_lock_is_a_weppcloud_style_key_with_a_json_payload(ctx: JobsContext, runid: str) -> None:
    client = ctx.clients.locks
    token = acquire_lock(client, runid, "wepp.nodb", ttl=60)
    assert token
    raw = client.get(f"nodb-lock:{runid}:wepp.nodb")
    payload = json.loads(raw)
    assert payload["token"] == token
    assert payload["owner"] == f"{socket.gethostname()}:{os.getpid()}"
    assert payload["ttl"] == 60
    assert payload["expires_at"] == pytest.approx(payload["acquired_at"] + 60)
    assert abs(payload["acquired_at"] - time.time()) < 5
    assert 0 < client.ttl(f"nodb-lock:{runid}:wepp.nodb") <= 60


def test_a_held_lock_cannot_be_taken_and_only_its_token_releases_it(
    ctx: JobsContext, runid: str
) -> None:
    client = ctx.clients.locks
    token = acquire_lock(client, runid, "wepp.nodb", ttl=60)
    assert token is not None
    assert acquire_lock(client, runid, "wepp.nodb", ttl=60) is None
    assert not release_lock(client, runid, "wepp.nodb", "not-the-token")
    assert lock_statuses(client, runid) == {"wepp.nodb": True}
    assert release_lock(client, runid, "wepp.nodb", token)
    assert lock_statuses(client, runid) == {}
    assert not release_lock(client, runid, "wepp.nodb", token)


def test_refresh_extends_only_the_owners_lock(ctx: JobsContext, runid: str) -> None:
    client = ctx.clients.locks
    token = acquire_lock(client, runid, "a.nodb", ttl=5)
    assert token is not None
    assert refresh_lock(client, runid, "a.nodb", token, ttl=100)
    assert client.ttl(f"nodb-lock:{runid}:a.nodb") > 50
    assert lock_infos(client, runid)["a.nodb"].ttl == 100
    assert not refresh_lock(client, runid, "a.nodb", "other", ttl=1000)


def test_lock_statuses_scans_every_lock_of_the_run_only(ctx: JobsContext, runid: str) -> None:
    client = ctx.clients.locks
    for rel in ["wepp.nodb", "_pups/omni/soils.nodb", "nodir/watershed"]:
        acquire_lock(client, runid, rel, ttl=60)
    acquire_lock(client, runid + "x", "other.nodb", ttl=60)
    assert lock_statuses(client, runid) == {
        "wepp.nodb": True,
        "_pups/omni/soils.nodb": True,
        "nodir/watershed": True,
    }
    assert locked_nodb_files(client, runid) == ["_pups/omni/soils.nodb", "wepp.nodb"]


def test_ensure_unlocked_names_the_locked_files_in_the_exact_message(
    ctx: JobsContext, runid: str
) -> None:
    client = ctx.clients.locks
    ensure_unlocked(client, runid, "archive")
    acquire_lock(client, runid, "b.nodb", ttl=60)
    acquire_lock(client, runid, "a.nodb", ttl=60)
    with pytest.raises(Locked) as info:
        ensure_unlocked(client, runid, "archive")
    assert str(info.value) == "Cannot archive while files are locked: a.nodb, b.nodb"
    with pytest.raises(Locked, match=r"^Cannot restore while files are locked: a\.nodb, b\.nodb$"):
        ensure_unlocked(client, runid, "restore")


def test_run_locks_take_all_or_nothing(ctx: JobsContext, runid: str) -> None:
    client = ctx.clients.locks
    other = acquire_lock(client, runid, "b.nodb", ttl=60)
    with pytest.raises(Locked, match=r"files are locked: b\.nodb$"):
        RunLocks(client, runid, ["a.nodb", "b.nodb", "c.nodb"], verb="archive", ttl=60).acquire()
    assert lock_statuses(client, runid) == {"b.nodb": True}  # a and c were given back
    assert other is not None
    release_lock(client, runid, "b.nodb", other)
    with RunLocks(client, runid, ["a.nodb", "c.nodb"], verb="archive", ttl=60, job_id="J"):
        assert lock_statuses(client, runid) == {"a.nodb": True, "c.nodb": True}
        assert acquire_lock(client, runid, "a.nodb", ttl=60) is None
        assert {i.job_id for i in lock_infos(client, runid).values()} == {"J"}
    assert lock_statuses(client, runid) == {}


def test_a_dead_jobs_locks_are_released_by_job_id_and_no_others(
    ctx: JobsContext, runid: str
) -> None:
    client = ctx.clients.locks
    RunLocks(client, runid, ["a.nodb", "b.nodb"], verb="archive", ttl=60, job_id="dead").acquire()
    acquire_lock(client, runid, "c.nodb", ttl=60, job_id="alive")
    acquire_lock(client, runid, "d.nodb", ttl=60)
    assert release_job_locks(client, runid, "dead") == 2
    assert lock_statuses(client, runid) == {"c.nodb": True, "d.nodb": True}


def test_foreign_lock_values_still_count_as_locked(ctx: JobsContext, runid: str) -> None:
    client = ctx.clients.locks
    client.set(f"nodb-lock:{runid}:legacy.nodb", "true", ex=60)
    assert locked_nodb_files(client, runid) == ["legacy.nodb"]
    assert lock_infos(client, runid)["legacy.nodb"].token == ""


@pytest.mark.parametrize("relpath", ["", "/abs.nodb", "../x.nodb", "a//b.nodb", "a\\b.nodb"])
def test_lock_paths_must_be_clean_relative_paths(
    ctx: JobsContext, runid: str, relpath: str
) -> None:
    with pytest.raises(InvalidInput):
        acquire_lock(ctx.clients.locks, runid, relpath, ttl=60)
