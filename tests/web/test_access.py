"""The access matrix: every route × anonymous, another user, the owner, an admin × private/public.

Read routes (dashboard, list, download, inside an archive, job status, status websocket,
retention policy, storage chart) are open to owners, admins and — on a run holding a
``PUBLIC`` file — everybody. Write routes (archive, restore, the restore preview, fork, delete,
job info, cancel, pin, unpin, setting the policy, prune and its dry run, the run's audit log)
are for owners and admins only, public or not; every run's audit log (``/audit``) for admins
only; an allowed fork grants the new run to the requester, a refused one leaves no job, claim
or grant. Each case checks the answer and what is stored: a refused write leaves no job and no
change on disk; an allowed inside-an-archive read or preview, the data it gives.
"""

from __future__ import annotations

from typing import Any

import pytest

from runarchive.core import Policy, pinned_names, run_policy, set_pinned
from runarchive.jobs import enqueue_archive, running_job
from runarchive.jobs.newrun import claim_holder
from runarchive.web.accounts import owns_run, require_user
from runarchive.web.db import db
from tests.support.web import WS_HEADERS, Browser, Run, WebEnv

INSIDE_ROUTES = ("entries", "file", "diff", "diff_file")
READ_ROUTES = ("dashboard", "list", "download", *INSIDE_ROUTES, "jobstatus", "websocket", "policy",
               "storage_chart")  # fmt: skip
WRITE_ROUTES = ("archive", "restore", "restore_preview", "fork", "delete", "jobinfo", "canceljob")
USERS = {"owner": "alice", "other": "bob", "admin": "root"}
RETENTION_ROUTES = ("pin", "unpin", "set_policy", "prune_dry_run", "prune")
AUDIT_ROUTES = ("audit", "all_audit")  # the run's log (write rule); every run's (admins)
ROLES = ("anonymous", "other", "owner", "admin")


def call(web: WebEnv, browser: Browser, route: str, run: Run, job_id: str | None) -> Any:
    base = f"/runs/{run.runid}"
    if route == "dashboard":
        return browser.get(f"{base}/archive")
    if route == "list":
        return browser.get(f"{base}/archive/list")
    if route == "download":
        return browser.get(f"{base}/archive/download/{run.archive}")
    if route in INSIDE_ROUTES:
        return browser.get(inside_url(run, route))
    if route == "jobstatus":
        return browser.get(f"/rq/api/jobstatus/{job_id}")
    if route == "jobinfo":
        return browser.get(f"/rq/api/jobinfo/{job_id}")
    if route == "canceljob":
        return browser.post(f"/rq/api/canceljob/{job_id}")
    if route == "websocket":
        return browser.get(f"/status/{run.runid}:archive", headers=WS_HEADERS)
    if route == "archive":
        return browser.post(f"{base}/rq/api/archive", json={"comment": "matrix"})
    if route == "restore":
        return browser.post(f"{base}/rq/api/restore-archive", json={"archive_name": run.archive})
    if route == "fork":
        body = {"archive_name": run.archive, "new_runid": f"{run.runid}-fork"}
        return browser.post(f"{base}/rq/api/fork-archive", json=body)
    if route == "restore_preview":
        return browser.get(f"{base}/archive/{run.archive}/restore-preview?path=output/")
    if route == "policy":
        return browser.get(f"{base}/archive/policy")
    if route == "storage_chart":
        return browser.get(f"{base}/archive/storage.svg")
    if route in ("pin", "unpin"):
        return browser.post(f"{base}/archive/{run.archive}/{route}")
    if route == "set_policy":
        return browser.put(f"{base}/archive/policy", json={"keep_last": 3})
    if route == "prune_dry_run":
        return browser.post(f"{base}/archive/prune?dry_run=1")
    if route == "prune":
        return browser.post(f"{base}/archive/prune")
    if route == "audit":
        return browser.get(f"{base}/archive/audit")
    if route == "all_audit":
        return browser.get("/audit")
    assert route == "delete"
    return browser.post(f"{base}/rq/api/delete-archive", json={"archive_name": run.archive})


def inside_url(run: Run, route: str) -> str:
    tail = {"entries": "entries?prefix=output", "file": "file/README.md", "diff": "diff",
            "diff_file": "diff/file/README.md"}[route]  # fmt: skip
    return f"/runs/{run.runid}/archive/{run.archive}/{tail}"


def check_inside(route: str, response: Any) -> None:
    """The data an allowed inside route must give (of the small run, unchanged since)."""
    if route == "file":
        assert response.get_data() == b"a small run\n"
        return
    body = response.get_json()
    if route == "entries":
        assert [e["path"] for e in body["entries"]][:1] == ["output/H0.pass.dat"]
    elif route == "diff":
        assert body["total"] == 0 and body["unchanged"] > 0
    else:
        assert body["note"] == "No differences."


def check_preview(response: Any) -> None:
    """The preview of restoring ``output/`` of the small run, unchanged since its archive."""
    body = response.get_json()
    assert body["paths"] == ["output/"] and body["unchanged"] == 5
    assert body["restores"] == body["changes"] == body["removes"] == {"files": 0, "bytes": 0}


def allowed(route: str, role: str, public: bool) -> bool:
    if route == "all_audit":
        return role == "admin"
    if role in ("owner", "admin"):
        return True
    return route in READ_ROUTES and public


def ok_status(route: str) -> int:
    return {"archive": 202, "restore": 202, "fork": 202, "prune": 202}.get(route, 200)


def fork_grantees(web: WebEnv, run: Run) -> set[str]:
    """Who holds a grant on the run a fork of ``run`` in the matrix would make."""
    new_runid = f"{run.runid}-fork"
    with web.app.app_context():
        session = db().session
        return {role for role, name in USERS.items()
                if owns_run(session, require_user(session, name), new_runid)}  # fmt: skip


@pytest.mark.parametrize("public", [False, True], ids=["private", "public"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", READ_ROUTES + WRITE_ROUTES + RETENTION_ROUTES + AUDIT_ROUTES)
def test_access_matrix(web: WebEnv, route: str, role: str, public: bool) -> None:
    run = web.new_run(public=public)
    job_id = None
    if route in ("jobstatus", "jobinfo", "canceljob"):
        job_id = enqueue_archive(web.ctx, run.runid, "queued")
    if route == "unpin":
        set_pinned(run.path, str(run.archive), True)
    pins_before = pinned_names(run.path)
    response = call(web, web.as_role(role), route, run, job_id)
    response.get_data()  # buffered now: closing ends a streamed body
    response.close()  # a download's file handle
    archive_file = run.path / "archives" / str(run.archive)

    if route == "websocket" and allowed(route, role, public):
        # Admission passed; the test client cannot complete an upgrade (see test_status.py).
        assert response.status_code not in (401, 403, 404)
        return
    if allowed(route, role, public):
        assert response.status_code == ok_status(route), response.get_data(as_text=True)
        if route in ("archive", "restore", "fork"):
            slot = running_job(web.ctx, run.runid)
            assert slot is not None and slot.job_id == response.get_json()["job_id"]
        if route == "fork":
            new_runid = f"{run.runid}-fork"
            assert response.get_json()["new_runid"] == new_runid
            assert claim_holder(web.ctx, new_runid) == response.get_json()["job_id"]
            assert fork_grantees(web, run) == {role}  # granted to the requester only
        if route in INSIDE_ROUTES:
            check_inside(route, response)
        if route == "delete":
            assert not archive_file.exists()
        if route == "jobinfo":
            assert "exc_info" in response.get_json()
        if route == "restore_preview":
            check_preview(response)
        if route == "canceljob":
            assert response.get_json() == {"job_id": job_id, "status": "canceled"}
            assert running_job(web.ctx, run.runid) is None
        if route in ("pin", "unpin"):
            assert response.get_json() == {"name": run.archive, "pinned": route == "pin"}
            assert pinned_names(run.path) == ({run.archive} if route == "pin" else set())
        if route == "set_policy":
            assert run_policy(run.path) == Policy(keep_last=3)
        if route == "policy":
            assert response.get_json() == Policy().to_dict()
        if route == "storage_chart":
            assert response.mimetype == "image/svg+xml"
            assert f'data-name="{run.archive}"' in response.get_data(as_text=True)
        if route in AUDIT_ROUTES:
            body = response.get_json()
            assert set(body) == {"events", "next"} and body["next"] is None
            runids = {e["runid"] for e in body["events"]}
            assert runids <= {run.runid} if route == "audit" else bool(body["events"])
        if route in ("prune_dry_run", "prune"):
            body = response.get_json()
            assert (body["keep"], body["remove"], body["bytes_freed"]) == ([run.archive], [], 0)
            slot = running_job(web.ctx, run.runid)
            assert (slot.job_id if slot else None) == body.get("job_id")
        return

    expected = 401 if role == "anonymous" else 403
    if route == "dashboard" and role == "anonymous":
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
    else:
        assert response.status_code == expected, response.get_data(as_text=True)
        if route != "dashboard":
            assert response.get_json()["error"]["code"] in ("unauthorized", "forbidden")
    assert archive_file.is_file()  # nothing was deleted
    assert pinned_names(run.path) == pins_before and run_policy(run.path) is None
    if route == "fork":
        assert fork_grantees(web, run) == set()
        assert web.ctx.clients.data.get(web.ctx.keys.new_run_claim(f"{run.runid}-fork")) is None
    slot = running_job(web.ctx, run.runid)
    assert (slot.job_id if slot else None) == job_id  # no job was started


@pytest.mark.parametrize("role", ["other", "owner", "admin"])
def test_api_tokens_get_the_same_answers_as_sessions(web: WebEnv, role: str) -> None:
    run = web.new_run()
    client = web.token_client(role)
    expected_read = 403 if role == "other" else 200
    assert client.get(f"/runs/{run.runid}/archive/list").status_code == expected_read
    preview = client.get(f"/runs/{run.runid}/archive/{run.archive}/restore-preview?path=output/")
    assert preview.status_code == expected_read
    if role != "other":
        check_preview(preview)
    response = client.post(f"/runs/{run.runid}/rq/api/archive", json={"comment": "via token"})
    assert response.status_code == (403 if role == "other" else 202)
    log = client.get(f"/runs/{run.runid}/archive/audit")
    assert log.status_code == expected_read
    if role != "other":
        assert [e["action"] for e in log.get_json()["events"]] == ["archive"]
    assert client.get("/audit").status_code == (200 if role == "admin" else 403)


@pytest.mark.parametrize("role", ["other", "owner", "admin"])
def test_api_tokens_fork_as_sessions_do_and_the_grant_goes_to_the_tokens_user(
    web: WebEnv, role: str
) -> None:
    run = web.new_run()
    body = {"archive_name": run.archive, "new_runid": f"{run.runid}-fork"}
    response = web.token_client(role).post(f"/runs/{run.runid}/rq/api/fork-archive", json=body)
    assert response.status_code == (403 if role == "other" else 202)
    assert fork_grantees(web, run) == (set() if role == "other" else {role})


@pytest.mark.parametrize("role", ["other", "owner", "admin"])
def test_api_tokens_get_the_storage_chart_as_sessions_do(web: WebEnv, role: str) -> None:
    run = web.new_run()
    response = web.token_client(role).get(f"/runs/{run.runid}/archive/storage.svg")
    if role == "other":
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "forbidden"
    else:
        assert response.status_code == 200
        assert f'data-name="{run.archive}"' in response.get_data(as_text=True)


@pytest.mark.parametrize("role", ["other", "owner", "admin"])
@pytest.mark.parametrize("route", INSIDE_ROUTES)
def test_api_tokens_read_inside_archives_as_sessions_do(web: WebEnv, route: str, role: str) -> None:
    run = web.new_run()
    response = web.token_client(role).get(inside_url(run, route))
    if role == "other":
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "forbidden"
    else:
        assert response.status_code == 200
        check_inside(route, response)
    bogus = web.app.test_client().get(
        inside_url(run, route), headers={"Authorization": "Bearer not-a-token"}
    )
    assert bogus.status_code == 401


def test_unknown_run_is_404_for_an_admin_and_403_for_others(web: WebEnv) -> None:
    for route in ("list", "dashboard"):
        path = "/runs/no-such-run/archive" + ("/list" if route == "list" else "")
        assert web.as_role("admin").get(path).status_code == 404
        assert web.as_role("other").get(path).status_code == 403
    posted = web.as_role("admin").post("/runs/no-such-run/rq/api/archive", json={"comment": None})
    assert posted.status_code == 404
    assert posted.get_json()["error"]["code"] == "not_found"


def test_index_lists_only_the_users_own_runs(web: WebEnv) -> None:
    mine = web.new_run()
    public = web.new_run(public=True, owner="root")
    page = web.as_role("owner").get("/").get_data(as_text=True)
    assert mine.runid in page
    assert f"/runs/{mine.runid}/archive" in page
    assert public.runid not in page
    assert mine.runid not in web.as_role("other").get("/").get_data(as_text=True)
