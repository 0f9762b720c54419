"""Partial restore and undo through the JSON API, run by a real RQ worker process.

The answers are checked with their stored effect: the run's tree (snapshots), the list's
``undo`` field, no job claimed on a refusal.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from runarchive.core import list_archives
from runarchive.jobs import running_job
from tests.support.journal import kept_undo, leftovers
from tests.support.tree import snapshot
from tests.support.web import WebEnv
from tests.support.workers import Workers

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
NOTHING = {"available": False, "restored": None, "at": None, "expires": None, "bytes": 0}


def test_a_partial_restore_then_its_undo_through_the_api(web: WebEnv, workers: Workers) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    (run.path / "README.md").write_text("changed\n")
    (run.path / "output" / "H0.pass.dat").write_text("edited\n")
    (run.path / "output" / "H7.pass.dat").write_text("new\n")
    before = snapshot(run.path)
    assert owner.get(f"/runs/{run.runid}/archive/list").get_json()["undo"] == NOTHING

    response = owner.post(
        f"/runs/{run.runid}/rq/api/restore-archive",
        json={"archive_name": run.archive, "paths": ["output/", "output/H0.pass.dat"]},
    )
    assert response.status_code == 202, response.get_json()
    assert workers.burst() == 0, workers.log_text()

    after = snapshot(run.path)
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == {
        "output", "output/H0.pass.dat", "output/H7.pass.dat",
    }  # fmt: skip
    undo = owner.get(f"/runs/{run.runid}/archive/list").get_json()["undo"]
    assert undo["available"] is True and undo["restored"] == run.archive
    assert ISO.match(undo["at"]) and ISO.match(undo["expires"])
    at, expires = (
        datetime.fromisoformat(undo[k].replace("Z", "+00:00")) for k in ("at", "expires")
    )
    assert (expires - at).total_seconds() == pytest.approx(7 * 24 * 3600)
    assert isinstance(undo["bytes"], int) and undo["bytes"] > 0

    response = owner.post(f"/runs/{run.runid}/rq/api/undo-restore")
    assert response.status_code == 202
    assert set(response.get_json()) == {"job_id"}
    assert workers.burst() == 0, workers.log_text()

    assert snapshot(run.path) == before
    assert leftovers(run.path) == [] and kept_undo(run.path) == []
    assert owner.get(f"/runs/{run.runid}/archive/list").get_json()["undo"] == NOTHING
    again = owner.post(f"/runs/{run.runid}/rq/api/undo-restore")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "nothing_to_undo"
    assert running_job(web.ctx, run.runid) is None


@pytest.mark.parametrize(
    ("paths", "says"),
    [
        (["../other/x"], "'..'"),
        (["/etc/passwd"], "absolute"),
        (["a\x00b"], "control"),
        (["archives/"], "reserved archives/"),
        (["archives"], "reserved archives/"),
        (["output/H9.pass.dat"], "'output/H9.pass.dat' is not in archive"),
        (["README.md/"], "not a folder"),
        ("output/", "must be a list"),
        ([], "at least one"),
        ([1], "must be a string"),
    ],
)
def test_hostile_or_missing_paths_are_400_before_any_job(
    web: WebEnv, paths: object, says: str
) -> None:
    run = web.new_run()
    before = snapshot(run.path)
    response = web.as_role("owner").post(
        f"/runs/{run.runid}/rq/api/restore-archive",
        json={"archive_name": run.archive, "paths": paths},
    )
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input" and says in error["message"]
    assert running_job(web.ctx, run.runid) is None
    assert snapshot(run.path) == before
    assert [a.name for a in list_archives(run.path)] == [run.archive]


def test_undo_needs_write_access(web: WebEnv) -> None:
    run = web.new_run()
    response = web.as_role("other").post(f"/runs/{run.runid}/rq/api/undo-restore")
    assert response.status_code in (403, 404)
    assert running_job(web.ctx, run.runid) is None
