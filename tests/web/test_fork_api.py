"""Fork through the JSON API, run by a real RQ worker process.

Each answer is checked with its stored effect: the new run on disk, who holds a grant on it
(accounts), the claim and the slot in Redis, the source's status lines.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

from runarchive.jobs import running_job
from runarchive.web.accounts import grant_run, granted_to_others, owns_run, require_user
from runarchive.web.db import db
from tests.support.runs import make_small_run
from tests.support.tree import snapshot
from tests.support.web import Run, WebEnv
from tests.support.workers import Workers

FORK = "/runs/{}/rq/api/fork-archive"


def _grantees(web: WebEnv, runid: str) -> set[str]:
    with web.app.app_context():
        session = db().session
        return {
            name
            for name in ("alice", "bob", "root")
            if owns_run(session, require_user(session, name), runid)
        }


def _fork(web: WebEnv, run: Run, role: str = "owner", **body: Any) -> Any:
    return web.as_role(role).post(FORK.format(run.runid), json={"archive_name": run.archive,
                                                                 **body})  # fmt: skip


def test_a_fork_through_the_api_makes_a_run_the_requester_may_use_and_others_may_not(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    archived = snapshot(run.path)
    (run.path / "README.md").write_text("changed since\n")
    new_id = f"{run.runid}-copy"

    response = _fork(web, run, new_runid=new_id)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert set(body) == {"job_id", "new_runid"} and body["new_runid"] == new_id
    assert _grantees(web, new_id) == {"alice"}
    assert workers.burst() == 0, workers.log_text()

    new = web.runs_root / new_id
    assert snapshot(new) == archived and not (new / "archives").exists()
    status = web.as_role("owner").get(f"/rq/api/jobstatus/{body['job_id']}").get_json()
    assert status["status"] == "finished" and status["runid"] == run.runid
    listed = web.as_role("owner").get(f"/runs/{new_id}/archive/list")
    assert listed.status_code == 200 and listed.get_json()["archives"] == []
    assert web.as_role("other").get(f"/runs/{new_id}/archive/list").status_code == 403
    assert web.as_role("owner").get(f"/runs/{new_id}/archive").status_code == 200
    assert web.ctx.clients.data.get(web.ctx.keys.new_run_claim(new_id)) is None
    assert running_job(web.ctx, run.runid) is None


def test_a_fork_without_new_runid_gets_a_fresh_granted_id(web: WebEnv) -> None:
    run = web.new_run()
    for body in ({}, {"new_runid": ""}):
        response = _fork(web, run, **body)
        assert response.status_code == 202, response.get_json()
        new_id = response.get_json()["new_runid"]
        assert re.fullmatch(r"[a-z][a-z2-9]{9}", new_id)
        assert _grantees(web, new_id) == {"alice"}
        web.as_role("owner").post(f"/rq/api/canceljob/{response.get_json()['job_id']}")


@pytest.mark.parametrize(
    ("new_runid", "says"),
    [("..", "Invalid run id"), (".", "Invalid run id"), ("a/b", "Invalid run id"),
     ("../up", "Invalid run id"), ("/abs", "Invalid run id"), ("nul\x00x", "Invalid run id"),
     ("x" * 201, "longer than 200"), (5, "must be a string"), (["a"], "must be a string")],
)  # fmt: skip
def test_a_hostile_new_runid_is_400_and_nothing_is_granted_or_claimed(
    web: WebEnv, new_runid: object, says: str
) -> None:
    run = web.new_run()
    before = sorted(p.name for p in web.runs_root.iterdir())
    response = _fork(web, run, new_runid=new_runid)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input" and says in error["message"]
    assert running_job(web.ctx, run.runid) is None
    assert sorted(p.name for p in web.runs_root.iterdir()) == before
    if isinstance(new_runid, str):
        with web.app.app_context():
            assert not granted_to_others(db().session, new_runid, None)


@pytest.mark.parametrize("name", ["../x.zip", "a/../../b.zip", "/etc/passwd", ".hidden.zip"])
def test_an_archive_name_that_climbs_is_400(web: WebEnv, name: str) -> None:
    run = web.new_run()
    response = web.as_role("owner").post(
        FORK.format(run.runid), json={"archive_name": name, "new_runid": f"{run.runid}-x"}
    )
    assert response.status_code == 400
    assert _grantees(web, f"{run.runid}-x") == set()


@pytest.mark.parametrize("kind", ["run", "file", "link"])
def test_a_new_runid_already_taken_on_disk_is_409_and_not_granted(web: WebEnv, kind: str) -> None:
    run = web.new_run()
    taken = f"{run.runid}-taken"
    if kind == "run":
        make_small_run(web.runs_root, taken)
    elif kind == "file":
        (web.runs_root / taken).write_text("x\n")
    else:
        (web.runs_root / taken).symlink_to(run.path)
    response = _fork(web, run, new_runid=taken)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "run_exists"
    assert _grantees(web, taken) == set() and running_job(web.ctx, run.runid) is None


def test_a_new_runid_granted_to_another_user_is_refused(web: WebEnv) -> None:
    run = web.new_run()
    promised = f"{run.runid}-bobs"
    with web.app.app_context():
        session = db().session
        grant_run(session, promised, require_user(session, "bob"))
    for role in ("owner", "admin"):
        response = _fork(web, run, role, new_runid=promised)
        assert response.status_code == 409, role
        assert response.get_json()["error"]["code"] == "run_exists"
    assert _grantees(web, promised) == {"bob"} and running_job(web.ctx, run.runid) is None


def test_two_forks_racing_for_one_new_runid_one_is_queued_and_only_its_user_granted(
    web: WebEnv,
) -> None:
    first, second = web.new_run(), web.new_run()
    new_id = f"{first.runid}-race"
    answers: dict[str, int] = {}
    start = threading.Barrier(2)

    def fork(run: Run, user: str) -> None:
        client = web.fresh_browser(user)
        start.wait(10)
        body = {"archive_name": run.archive, "new_runid": new_id}
        answers[user] = client.post(FORK.format(run.runid), json=body).status_code

    threads = [threading.Thread(target=fork, args=a) for a in ((first, "alice"), (second, "root"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(answers.values()) == [202, 409]
    [winner] = [user for user, status in answers.items() if status == 202]
    slots = [running_job(web.ctx, r.runid) for r in (first, second)]
    assert sum(s is not None for s in slots) == 1  # the loser holds nothing
    assert _grantees(web, new_id) == {winner}


def _pending(web: WebEnv, runid: str) -> int:
    from sqlalchemy import func, select

    from runarchive.web.models import PendingFork

    with web.app.app_context():
        query = select(func.count()).select_from(PendingFork).where(PendingFork.runid == runid)
        return int(db().session.scalar(query) or 0)


def test_a_failed_fork_leaves_no_usable_grant_once_its_end_is_seen(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    new_id = f"{run.runid}-failed"
    response = _fork(web, run, new_runid=new_id)
    assert response.status_code == 202
    assert _grantees(web, new_id) == {"alice"} and _pending(web, new_id) == 1
    proc = workers.start("--burst", env={"RUNARCHIVE_POST_FORK_HOOKS": "tests.jobs.forkhooks:fail"})
    assert proc.wait(timeout=120) == 0, workers.log_text()
    assert not (web.runs_root / new_id).exists()

    # Someone makes a run under that id by other means (the host application).
    make_small_run(web.runs_root, new_id)
    owner = web.as_role("owner")
    assert owner.get(f"/runs/{new_id}/archive/list").status_code == 403  # settled: not hers
    assert _grantees(web, new_id) == set() and _pending(web, new_id) == 0
    assert new_id not in owner.get("/").get_data(as_text=True)


def test_a_successful_fork_keeps_its_grant_when_settled(web: WebEnv, workers: Workers) -> None:
    run = web.new_run()
    new_id = f"{run.runid}-made"
    assert _fork(web, run, new_runid=new_id).status_code == 202
    assert workers.burst() == 0, workers.log_text()
    owner = web.as_role("owner")
    assert new_id in owner.get("/").get_data(as_text=True)  # the index settles her forks
    assert _pending(web, new_id) == 0 and _grantees(web, new_id) == {"alice"}
    assert owner.get(f"/runs/{new_id}/archive/list").status_code == 200


def test_a_grant_held_before_the_fork_is_not_the_forks_to_take_back(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    new_id = f"{run.runid}-pregranted"
    with web.app.app_context():
        session = db().session
        grant_run(session, new_id, require_user(session, "alice"))
    assert _fork(web, run, new_runid=new_id).status_code == 202
    assert _pending(web, new_id) == 0  # nothing recorded: her grant predates the fork
    proc = workers.start("--burst", env={"RUNARCHIVE_POST_FORK_HOOKS": "tests.jobs.forkhooks:fail"})
    assert proc.wait(timeout=120) == 0, workers.log_text()
    web.as_role("owner").get(f"/runs/{new_id}/archive/list")
    assert _grantees(web, new_id) == {"alice"}
