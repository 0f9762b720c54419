"""Pins, the retention policy and prune over HTTP: answers and what is stored on disk."""

from __future__ import annotations

import shutil

import pytest

from runarchive.core import Policy, list_archives, pinned_names, run_policy
from runarchive.jobs import running_job
from tests.support.web import Run, WebEnv

STAMPS = [f"202601{d:02d}T120000Z" for d in range(1, 5)]


def with_archives(run: Run) -> list[str]:
    """Byte copies of the run's archive under our names, one a day (oldest first)."""
    source = run.path / "archives" / str(run.archive)
    names = []
    for stamp in STAMPS:
        name = f"{run.runid}.{stamp}.zip"
        shutil.copyfile(source, run.path / "archives" / name)
        names.append(name)
    return names


def test_a_pinned_archive_is_listed_pinned_and_every_delete_route_refuses_it(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    base = f"/runs/{run.runid}"
    pinned = owner.post(f"{base}/archive/{run.archive}/pin")
    assert pinned.status_code == 200 and pinned.get_json() == {"name": run.archive, "pinned": True}
    [row] = owner.get(f"{base}/archive/list").get_json()["archives"]
    assert row["pinned"] is True

    refused = owner.post(f"{base}/rq/api/delete-archive", json={"archive_name": run.archive})
    assert refused.status_code == 409
    assert refused.get_json()["error"] == {
        "code": "pinned",
        "message": f"Archive {run.archive} is pinned",
    }
    legacy = owner.post(
        f"/runs/{run.runid}/cfg/rq/api/delete-archive", json={"archive_name": run.archive}
    )
    assert legacy.get_json() == {"Success": False, "Error": f"Archive {run.archive} is pinned"}
    assert (run.path / "archives" / str(run.archive)).is_file()

    assert owner.post(f"{base}/archive/{run.archive}/unpin").get_json()["pinned"] is False
    deleted = owner.post(f"{base}/rq/api/delete-archive", json={"archive_name": run.archive})
    assert deleted.status_code == 200
    assert list_archives(run.path) == []


@pytest.mark.parametrize(
    ("name", "status"), [("missing.zip", 404), (".hidden.zip", 400), ("a.tar", 400)]
)
def test_pinning_a_name_that_is_no_archive_is_refused(web: WebEnv, name: str, status: int) -> None:
    run = web.new_run()
    answer = web.as_role("owner").post(f"/runs/{run.runid}/archive/{name}/pin")
    assert answer.status_code == status
    assert pinned_names(run.path) == set()


@pytest.mark.parametrize(
    "body",
    [
        {"keep_last": -1},
        {"keep_last": True},
        {"keep_last": "2"},
        {"keep_last": 2.5},
        {"keep_last": 1e9},
        {"keep_hourly": 1},
        [1, 2],
        "keep",
    ],
)
def test_a_policy_body_is_parsed_strictly_and_nothing_is_stored(web: WebEnv, body: object) -> None:
    run = web.new_run()
    answer = web.as_role("owner").put(f"/runs/{run.runid}/archive/policy", json=body)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert run_policy(run.path) is None


def test_a_stored_policy_is_answered_and_a_dry_run_prune_touches_nothing(web: WebEnv) -> None:
    run = web.new_run()
    names = with_archives(run)
    owner = web.as_role("owner")
    base = f"/runs/{run.runid}/archive"
    stored = owner.put(f"{base}/policy", json={"keep_daily": 2.0})  # JSON's 2.0 is 2
    expected = {"keep_last": 0, "keep_daily": 2, "keep_weekly": 0, "keep_monthly": 0}
    assert stored.status_code == 200 and stored.get_json() == expected
    assert owner.get(f"{base}/policy").get_json() == expected
    assert run_policy(run.path) == Policy(keep_daily=2)

    owner.post(f"{base}/{names[0]}/pin")
    before = {p.name for p in (run.path / "archives").iterdir()}
    dry = owner.post(f"{base}/prune?dry_run=1")
    assert dry.status_code == 200
    size = (run.path / "archives" / names[1]).stat().st_size
    # run.archive was made now: the newest; names[3] is the newest of another day
    assert dry.get_json() == {
        "keep": [str(run.archive), names[3], names[0]],
        "remove": [names[2], names[1]],
        "bytes_freed": 2 * size,
    }
    assert {p.name for p in (run.path / "archives").iterdir()} == before
    assert running_job(web.ctx, run.runid) is None

    queued = owner.post(f"{base}/prune")
    assert queued.status_code == 202
    body = queued.get_json()
    assert {k: body[k] for k in ("keep", "remove", "bytes_freed")} == dry.get_json()
    slot = running_job(web.ctx, run.runid)
    assert slot is not None and slot.job_id == body["job_id"] and slot.kind == "prune"


def test_a_bad_dry_run_value_is_400_and_queues_nothing(web: WebEnv) -> None:
    run = web.new_run()
    answer = web.as_role("owner").post(f"/runs/{run.runid}/archive/prune?dry_run=yes")
    assert answer.status_code == 400
    assert running_job(web.ctx, run.runid) is None
