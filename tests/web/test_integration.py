"""A host application's own authorization, plugged in through RUNARCHIVE_ACCESS_POLICY."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import request

from runarchive.jobs import running_job
from tests.support.web import WebEnv, csrf_of


def host_policy(runid: str) -> str | None:
    """Stand-in for a host app reading its own session: a header names the host's user."""
    who = request.headers.get("X-Host-User")
    if who == "host-owner":
        return "write"
    if who == "host-viewer":
        return "read"
    return None


@pytest.fixture
def with_policy(web: WebEnv) -> Iterator[WebEnv]:
    web.app.config["RUNARCHIVE_ACCESS_POLICY"] = host_policy
    try:
        yield web
    finally:
        web.app.config.pop("RUNARCHIVE_ACCESS_POLICY")


def test_the_host_policy_grants_write_and_read_to_its_own_users(with_policy: WebEnv) -> None:
    run = with_policy.new_run()
    client = with_policy.fresh_browser(None)
    base = f"/runs/{run.runid}"

    nobody = client.get(f"{base}/archive/list")
    assert nobody.status_code == 401
    viewer = client.get(f"{base}/archive/list", headers={"X-Host-User": "host-viewer"})
    assert viewer.status_code == 200
    assert [a["name"] for a in viewer.get_json()["archives"]] == [run.archive]
    token = csrf_of(client.client)
    refused = client.post(f"{base}/rq/api/archive", json={"comment": "viewer"},
                          headers={"X-Host-User": "host-viewer", "X-CSRFToken": token})  # fmt: skip
    assert refused.status_code == 401
    # The host may trust its own cookies, so a cross-site POST without the token is refused.
    forged = client.post(f"{base}/rq/api/archive", json={"comment": "forged"},
                         headers={"X-Host-User": "host-owner"})  # fmt: skip
    assert forged.status_code == 400
    assert forged.get_json()["error"]["code"] == "csrf_failed"
    assert running_job(with_policy.ctx, run.runid) is None

    accepted = client.post(f"{base}/rq/api/archive", json={"comment": "host"},
                           headers={"X-Host-User": "host-owner", "X-CSRFToken": token})  # fmt: skip
    assert accepted.status_code == 202, accepted.get_json()
    job = running_job(with_policy.ctx, run.runid)
    assert job is not None and job.job_id == accepted.get_json()["job_id"]


def test_without_a_policy_the_header_means_nothing(web: WebEnv) -> None:
    run = web.new_run()
    client = web.fresh_browser(None)
    response = client.get(f"/runs/{run.runid}/archive/list", headers={"X-Host-User": "host-owner"})
    assert response.status_code == 401


def test_a_policy_that_denies_refuses_even_the_runs_owner(web: WebEnv) -> None:
    run = web.new_run(public=True)  # alice's, and public: "deny" still wins
    web.app.config["RUNARCHIVE_ACCESS_POLICY"] = lambda runid: "deny"
    try:
        owner = web.as_role("owner")
        listing = owner.get(f"/runs/{run.runid}/archive/list")
        assert listing.status_code == 403
        assert listing.get_json()["error"]["code"] == "forbidden"
        page = owner.get(f"/runs/{run.runid}/archive")
        assert page.status_code == 403 and page.mimetype == "text/html"
        anonymous = web.as_role("anonymous").get(f"/runs/{run.runid}/archive/list")
        assert anonymous.status_code == 403  # denied, not "log in"
        refused = owner.post(f"/runs/{run.runid}/rq/api/archive", json={})
        assert refused.status_code == 403
        assert running_job(web.ctx, run.runid) is None
    finally:
        web.app.config.pop("RUNARCHIVE_ACCESS_POLICY")
