"""Every Redis key and channel name is pinned here: changing one is an interface change."""

from __future__ import annotations

from pathlib import Path

import pytest

from runarchive.core import InvalidInput
from runarchive.jobs.keys import Keys


def test_our_keys_take_the_prefix() -> None:
    keys = Keys("runarchive")
    assert keys.slot("abc") == "runarchive:slot:abc"
    assert keys.slot_pattern() == "runarchive:slot:*"
    assert keys.runid_of_slot("runarchive:slot:abc") == "abc"
    assert keys.job_alive("j1") == "runarchive:job:j1:alive"
    assert keys.job_final("j1") == "runarchive:job:j1:final"
    assert keys.job_cancel("j1") == "runarchive:job:j1:cancel"
    assert keys.status_log("abc") == "runarchive:status:abc:archive"
    assert keys.status_seq("abc") == "runarchive:status-seq:abc:archive"
    assert keys.status_feed("abc") == "runarchive:feed:abc:archive"
    assert keys.pending_recovery() == "runarchive:recover"
    assert keys.undo_expiry() == "runarchive:undo-expiry"
    assert keys.quota_owner("ana") == "runarchive:quota:ana"
    assert keys.quota_owner("a.b@x-1_2") == "runarchive:quota:a.b@x-1_2"
    assert keys.job_quota("j1") == "runarchive:job:j1:quota"


@pytest.mark.parametrize("owner", ["", "a b", "a*b", "x" * 65, "ana\n", "a:b"])
def test_an_owner_name_that_could_reach_other_keys_is_refused(owner: str) -> None:
    with pytest.raises(InvalidInput):
        Keys().quota_owner(owner)


def test_the_scrub_keys_take_the_prefix() -> None:
    keys = Keys("runarchive")
    assert keys.health("abc") == "runarchive:health:abc"
    assert keys.scrub_pass() == "runarchive:scrub:pass"


def test_a_custom_prefix_moves_every_own_key() -> None:
    keys = Keys("tenant2")
    assert keys.slot("r") == "tenant2:slot:r"
    assert keys.status_log("r") == "tenant2:status:r:archive"


def test_weppcloud_compatible_names_take_no_prefix() -> None:
    keys = Keys("anything")
    assert keys.status_channel("abc") == "abc:archive"
    assert keys.nodb_lock("abc", "wepp.nodb") == "nodb-lock:abc:wepp.nodb"
    assert keys.nodb_lock("abc", "_pups/x/soils.nodb") == "nodb-lock:abc:_pups/x/soils.nodb"
    assert keys.nodb_lock_pattern("abc") == "nodb-lock:abc:*"
    assert keys.relpath_of_nodb_lock("abc", "nodb-lock:abc:a/b.nodb") == "a/b.nodb"
    assert keys.nodb_cache(Path("/runs/ab/abc/wepp.nodb")) == "/runs/ab/abc/wepp.nodb"
    assert keys.nodb_cache_pattern(Path("/runs/abc")) == "/runs/abc/*"


def test_patterns_escape_glob_characters() -> None:
    assert Keys.nodb_cache_pattern(Path("/runs/[x]")) == "/runs/\\[x\\]/*"


@pytest.mark.parametrize("prefix", ["", "has space", "a*b", "x" * 65, "a?b", "ok\n", "ok\nrq"])
def test_it_refuses_a_prefix_that_could_match_other_keys(prefix: str) -> None:
    with pytest.raises(InvalidInput):
        Keys(prefix)
