"""WEPPcloud's URLs and envelopes (``web/wepp.py``) on the module's real app, Redis and workers.

Each route is called as WEPPcloud's console (``Success``/``Error`` bodies) or its rq-engine
service (``job_id`` / ``{"error": {message, details, code}}``) calls it, and the effect is
checked where it lands: jobs in the run's slot, archives on disk, files restored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from runarchive.core import list_archives
from runarchive.jobs import acquire_lock, enqueue_archive, release_lock, running_job
from runarchive.web.access import POLICY
from tests.support.web import Browser, Run, WebEnv, csrf_of
from tests.support.workers import Workers

MODIFIED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
CONFIG = "disturbed9002"
WRITES = (
    ("archive", {"comment": "from wepp"}),
    ("restore-archive", None),  # the run's archive
    ("delete-archive", None),
)


def console(run: Run, route: str, config: str = CONFIG) -> str:
    return f"/runs/{run.runid}/{config}/rq/api/{route}"


def engine(run: Run, route: str, config: str = CONFIG) -> str:
    return f"/rq-engine/api/runs/{run.runid}/{config}/{route}"


def body_for(run: Run, route: str, given: dict[str, Any] | None) -> dict[str, Any]:
    return given if given is not None else {"archive_name": run.archive}


@pytest.fixture
def held_locks(web: WebEnv) -> Iterator[Any]:
    """Hold NoDb locks as the host application does; release them after the test."""
    held: list[tuple[str, str, str]] = []

    def hold(run: Run, *relpaths: str) -> None:
        for relpath in relpaths:
            token = acquire_lock(web.ctx.clients.locks, run.runid, relpath, ttl=60)
            assert token is not None
            held.append((run.runid, relpath, token))

    yield hold
    for runid, relpath, token in held:
        release_lock(web.ctx.clients.locks, runid, relpath, token)


def test_the_console_list_rows_carry_modified_in_weppclouds_format_beside_created(
    web: WebEnv,
) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    response = owner.get(f"/runs/{run.runid}/{CONFIG}/rq-archive-dashboard/archives")
    assert response.status_code == 200
    body = response.get_json()
    assert body["Success"] is True
    assert body["in_progress"] is False and body["job_id"] is None
    (row,) = body["archives"]
    assert {"name", "comment", "size", "modified", "download_url", "created"} <= row.keys()
    assert row["name"] == run.archive and row["comment"] == "first"
    assert row["size"] == (run.path / "archives" / str(run.archive)).stat().st_size
    assert MODIFIED.match(row["modified"])
    created = datetime.fromisoformat(row["created"].replace("Z", "+00:00"))
    assert row["modified"] == created.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    download = owner.get(row["download_url"])
    assert download.data == (run.path / "archives" / row["name"]).read_bytes()
    download.close()
    ours = owner.get(f"/runs/{run.runid}/archive/list").get_json()
    assert ours["archives"] == body["archives"]  # one list, with modified in ours too


def test_the_console_list_shows_the_running_job(web: WebEnv) -> None:
    run = web.new_run()
    job_id = enqueue_archive(web.ctx, run.runid, "running")
    body = web.as_role("owner").get(f"/runs/{run.runid}/{CONFIG}/rq-archive-dashboard/archives")
    assert body.get_json()["in_progress"] is True
    assert body.get_json()["job_id"] == job_id


def test_the_console_archives_restores_and_deletes_with_success_envelopes(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    archived = owner.post(console(run, "archive"), json={"comment": "via console"})
    assert archived.status_code == 200
    body = archived.get_json()
    assert body["Success"] is True
    slot = running_job(web.ctx, run.runid)
    assert slot is not None and slot.job_id == body["job_id"]
    assert workers.burst() == 0
    assert [a.comment for a in list_archives(run.path)] == ["via console", "first"]

    readme = run.path / "README.md"
    original = hashlib.sha256(readme.read_bytes()).hexdigest()
    readme.write_text("changed\n")
    restored = owner.post(console(run, "restore-archive"), json={"archive_name": run.archive})
    assert restored.status_code == 200 and restored.get_json()["Success"] is True
    assert workers.burst() == 0
    assert hashlib.sha256(readme.read_bytes()).hexdigest() == original

    deleted = owner.post(console(run, "delete-archive"), json={"archive_name": run.archive})
    assert deleted.status_code == 200
    assert deleted.get_json() == {"Success": True}
    assert not (run.path / "archives" / str(run.archive)).exists()


def test_rq_engine_archives_restores_and_deletes_with_its_answers(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    client = web.token_client("owner")
    archived = client.post(engine(run, "archive"), json={"comment": "via engine"})
    assert archived.status_code == 200
    (job_id,) = archived.get_json().values()
    assert archived.get_json() == {"job_id": job_id}
    assert workers.burst() == 0
    status = client.get(f"/rq-engine/api/jobstatus/{job_id}").get_json()
    assert status["job_id"] == job_id and status["status"] == "finished"
    assert status["trigger"] == "ARCHIVE_COMPLETE"
    restored = client.post(engine(run, "restore-archive"), json={"archive_name": run.archive})
    assert restored.status_code == 200 and set(restored.get_json()) == {"job_id"}
    assert workers.burst() == 0
    info = client.get(f"/rq-engine/api/jobinfo/{restored.get_json()['job_id']}").get_json()
    assert info["status"] == "finished" and info["exc_info"] is None
    deleted = client.post(engine(run, "delete-archive"), json={"archive_name": run.archive})
    assert deleted.status_code == 200 and deleted.get_json() == {}
    assert [a.comment for a in list_archives(run.path)] == ["via engine"]


def test_a_locked_run_is_refused_with_weppclouds_text_in_both_envelopes(
    web: WebEnv, held_locks: Any
) -> None:
    run = web.new_run()
    held_locks(run, "b.nodb", "a.nodb")
    owner = web.as_role("owner")
    verbs = {"archive": "archive", "restore-archive": "restore", "delete-archive": "delete"}
    for route, given in WRITES:
        text = f"Cannot {verbs[route]} while files are locked: a.nodb, b.nodb"
        legacy = owner.post(console(run, route), json=body_for(run, route, given))
        assert legacy.status_code == 409
        assert legacy.get_json() == {"Success": False, "Error": text}
        rq = web.token_client("owner").post(engine(run, route), json=body_for(run, route, given))
        assert rq.status_code == 400
        assert rq.get_json() == {"error": {"message": text, "details": None, "code": "locked"}}
    assert running_job(web.ctx, run.runid) is None
    assert (run.path / "archives" / str(run.archive)).is_file()


def test_a_running_job_is_refused_with_weppclouds_text_in_both_envelopes(web: WebEnv) -> None:
    run = web.new_run()
    job_id = enqueue_archive(web.ctx, run.runid, "first job")
    owner = web.as_role("owner")
    for route, given in WRITES:
        legacy = owner.post(console(run, route), json=body_for(run, route, given))
        assert legacy.status_code == 409
        assert legacy.get_json() == {
            "Success": False,
            "Error": "An archive job is already running for this project",
        }
        rq = web.token_client("owner").post(engine(run, route), json=body_for(run, route, given))
        assert rq.status_code == 400
        error = rq.get_json()["error"]
        assert error["message"] == "An archive job is already running for this project"
        assert error["code"] == "job_running" and job_id in error["details"]
    slot = running_job(web.ctx, run.runid)
    assert slot is not None and slot.job_id == job_id
    assert (run.path / "archives" / str(run.archive)).is_file()


def test_an_unknown_project_or_archive_is_worded_as_weppcloud_words_it(web: WebEnv) -> None:
    admin = web.as_role("admin")
    missing_run = admin.post(f"/runs/no-such-run/{CONFIG}/rq/api/archive", json={"comment": "x"})
    assert missing_run.status_code == 404
    assert missing_run.get_json() == {"Success": False, "Error": "Project no-such-run not found"}
    listed = admin.get(f"/runs/no-such-run/{CONFIG}/rq-archive-dashboard/archives")
    assert listed.get_json()["Error"] == "Project no-such-run not found"

    run = web.new_run()
    gone = f"{run.runid}.20000101T000000Z.zip"
    for route in ("restore-archive", "delete-archive"):
        legacy = admin.post(console(run, route), json={"archive_name": gone})
        assert legacy.status_code == 404
        assert legacy.get_json() == {"Success": False, "Error": f"Archive {gone} not found"}
        rq = web.token_client("admin").post(engine(run, route), json={"archive_name": gone})
        assert rq.status_code == 404
        error = rq.get_json()["error"]
        assert error["message"] == f"Archive {gone} not found" and error["code"] == "not_found"
    engine_run = web.token_client("admin").post(
        f"/rq-engine/api/runs/no-such-run/{CONFIG}/archive", json={}
    )
    assert engine_run.status_code == 404
    assert engine_run.get_json()["error"]["message"] == "Project no-such-run not found"


def test_bad_bodies_are_refused_in_each_envelope_with_400(web: WebEnv) -> None:
    run = web.new_run()
    legacy = web.as_role("owner").post(console(run, "restore-archive"), json={})
    assert legacy.status_code == 400
    assert legacy.get_json() == {"Success": False, "Error": "Missing field 'archive_name'."}
    rq = web.token_client("owner").post(engine(run, "archive"), json={"comment": 12})
    assert rq.status_code == 400
    assert rq.get_json()["error"]["code"] == "invalid_input"
    assert running_job(web.ctx, run.runid) is None


def test_a_console_post_without_the_csrf_token_is_refused_in_its_envelope(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    response = owner.client.post(console(run, "archive"), json={"comment": "no token"})
    assert response.status_code == 400
    body = response.get_json()
    assert body["Success"] is False and body["Error"].startswith("CSRF check failed")
    assert running_job(web.ctx, run.runid) is None


def test_rq_engine_answers_an_unknown_job_with_status_not_found(web: WebEnv) -> None:
    client = web.token_client("owner")
    for route in ("jobstatus", "jobinfo"):
        response = client.get(f"/rq-engine/api/{route}/no-such-job")
        assert response.status_code == 200
        assert response.get_json() == {"job_id": "no-such-job", "status": "not_found"}
    cancel = client.post("/rq-engine/api/canceljob/no-such-job")
    assert cancel.status_code == 200
    assert cancel.get_json() == {"job_id": "no-such-job", "status": "not_found"}


def test_rq_engine_canceljob_cancels_a_queued_job_like_our_own_route(web: WebEnv) -> None:
    run = web.new_run()
    job_id = enqueue_archive(web.ctx, run.runid, "cancel me")
    assert web.token_client("other").post(f"/rq-engine/api/canceljob/{job_id}").status_code == 403
    response = web.token_client("owner").post(f"/rq-engine/api/canceljob/{job_id}")
    assert response.status_code == 200
    assert response.get_json() == {"job_id": job_id, "status": "canceled"}
    assert running_job(web.ctx, run.runid) is None  # the slot is free again
    lines = web.ctx.stream(run.runid).recent()
    assert [x for x in lines if " TRIGGER " in x] == [
        f"rq:{job_id} TRIGGER   archive ARCHIVE_FAILED"
    ]
    assert any(x.startswith("Error: Canceled by ") for x in lines)
    again = web.token_client("owner").post(f"/rq-engine/api/canceljob/{job_id}")
    assert again.status_code == 400 and "already ended" in again.get_json()["error"]["message"]


def test_rq_engine_job_routes_keep_the_read_and_write_rules(web: WebEnv) -> None:
    run = web.new_run()
    job_id = enqueue_archive(web.ctx, run.runid, "private")
    other = web.token_client("other")
    assert other.get(f"/rq-engine/api/jobstatus/{job_id}").status_code == 403
    assert other.get(f"/rq-engine/api/jobinfo/{job_id}").status_code == 403
    answer = web.token_client("owner").get(f"/rq-engine/api/jobstatus/{job_id}").get_json()
    assert answer["job_id"] == job_id and answer["status"] == "queued"


def test_the_dashboard_at_weppclouds_url_is_our_dashboard(web: WebEnv) -> None:
    run = web.new_run()
    page = web.as_role("owner").get(f"/runs/{run.runid}/{CONFIG}/rq-archive-dashboard")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert 'id="ra-dashboard"' in page.get_data(as_text=True)
    anonymous = web.as_role("anonymous").get(f"/runs/{run.runid}/{CONFIG}/rq-archive-dashboard")
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"].startswith("/login?next=")
    refused = web.as_role("other").get(f"/runs/{run.runid}/{CONFIG}/rq-archive-dashboard")
    assert refused.status_code == 403 and refused.mimetype == "text/html"


def test_an_invalid_config_segment_is_400(web: WebEnv) -> None:
    run = web.new_run()
    response = web.as_role("owner").post(console(run, "archive", config="a b"), json={})
    assert response.status_code == 400
    assert response.get_json()["Success"] is False
    assert running_job(web.ctx, run.runid) is None


def anonymous_with_csrf(web: WebEnv) -> Browser:
    """An anonymous browser sending its session's CSRF token (a host policy checks it)."""
    client = web.app.test_client()
    return Browser(client, csrf_of(client))


def test_the_config_segment_reaches_a_host_policy_that_takes_it(
    web: WebEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = web.new_run()
    calls: list[tuple[str, str | None]] = []

    def policy(runid: str, *, config: str | None) -> str | None:
        calls.append((runid, config))
        return "write" if config == "granted" else None

    monkeypatch.setitem(web.app.config, POLICY, policy)
    visitor = anonymous_with_csrf(web)
    granted = visitor.post(console(run, "archive", config="granted"), json={"comment": "host"})
    assert granted.status_code == 200 and granted.get_json()["Success"] is True
    assert (run.runid, "granted") in calls
    slot = running_job(web.ctx, run.runid)
    assert slot is not None and slot.job_id == granted.get_json()["job_id"]

    calls.clear()
    refused = visitor.get(f"/runs/{run.runid}/other-cfg/rq-archive-dashboard/archives")
    assert refused.status_code == 401 and refused.get_json()["Success"] is False
    assert calls == [(run.runid, "other-cfg")]

    calls.clear()
    assert visitor.get(f"/runs/{run.runid}/archive/list").status_code == 401
    assert calls == [(run.runid, None)]  # our own routes have no config to give


def test_a_policy_taking_only_the_run_id_still_decides_on_the_wepp_routes(
    web: WebEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = web.new_run()
    seen: list[str] = []

    def policy(runid: str) -> str | None:
        seen.append(runid)
        return "read"

    monkeypatch.setitem(web.app.config, POLICY, policy)
    listed = web.as_role("anonymous").get(
        f"/runs/{run.runid}/{CONFIG}/rq-archive-dashboard/archives"
    )
    assert listed.status_code == 200 and listed.get_json()["archives"][0]["name"] == run.archive
    assert seen and set(seen) == {run.runid}
