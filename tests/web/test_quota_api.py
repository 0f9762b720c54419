"""Archive quotas through the API with real workers: refused before any work with the usage,
the limit and what to do; checked again while the archive is written (never a partial file);
an owner's concurrent archives never end over the owner's limit; the list's ``usage``.

The module has its own deployment: a per-run quota of 3 MiB and 4 archives for the site, and
per-owner quotas set per test as a user's override in the accounts database.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runarchive.core import Limit, create_archive, list_archives
from runarchive.jobs import job_status
from runarchive.web.accounts import (
    create_token,
    create_user,
    grant_run,
    require_user,
    set_quota,
)
from runarchive.web.archive_quota import user_limit
from runarchive.web.db import db
from runarchive.web.models import User
from runarchive.web.openapi import document
from tests.support.waiting import wait_until
from tests.support.web import PASSWORD, LiveServer, WebEnv, started_web
from tests.support.workers import Workers

KIB, MIB = 1 << 10, 1 << 20
RUN_BYTES_LIMIT = 3 * MIB
RUN_COUNT_LIMIT = 4


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[WebEnv]:
    with started_web(
        tmp_path_factory.mktemp("quota"), redis_url, "quota",
        quota_run_bytes=RUN_BYTES_LIMIT, quota_run_count=RUN_COUNT_LIMIT,
    ) as env:  # fmt: skip
        yield env


def _owner(web: WebEnv, quota_bytes: int | None = None, quota_count: int | None = None) -> str:
    """A fresh user (with their own quota override); return their API token."""
    with web.app.app_context():
        session = db().session
        user = create_user(session, f"u{uuid.uuid4().hex[:8]}", PASSWORD)
        set_quota(session, user, quota_bytes, quota_count)
        token = create_token(session, user)
        web.tokens[token] = user.name
    return token


def _run(web: WebEnv, token: str, random_bytes: int, files: int = 4) -> Path:
    """A run of ``files`` incompressible files (its archive is about its size), owned by the
    token's user."""
    runid = f"run-{uuid.uuid4().hex[:10]}"
    path = web.runs_root / runid
    (path / "wepp").mkdir(parents=True)
    for i in range(files):
        (path / "wepp" / f"H{i}.dat").write_bytes(os.urandom(random_bytes // files))
    with web.app.app_context():
        session = db().session
        grant_run(session, runid, require_user(session, web.tokens[token]))
    return path


def _client(web: WebEnv, token: str) -> Any:
    client = web.app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def _files(path: Path) -> list[str]:
    return sorted(os.listdir(path / "archives")) if (path / "archives").exists() else []


def _wait_ended(web: WebEnv, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    def ended() -> dict[str, dict[str, Any]] | None:
        found = {job_id: job_status(web.ctx, job_id) for job_id in job_ids}
        return found if all(info["trigger"] for info in found.values()) else None

    result: dict[str, dict[str, Any]] = wait_until(ended, timeout=120)
    return result


def _reservations(web: WebEnv, token: str) -> dict[str, str]:
    key = web.settings.keys.quota_owner(web.tokens[token])
    held: dict[str, str] = web.ctx.clients.data.hgetall(key)
    return {field: value for field, value in held.items() if field.startswith("r:")}


def test_an_archive_over_the_run_quota_is_refused_before_any_work(web: WebEnv) -> None:
    token = _owner(web)
    path = _run(web, token, MIB)
    create_archive(path, "one")
    create_archive(path, "two")
    before = _files(path)
    client = _client(web, token)
    response = client.post(f"/runs/{path.name}/rq/api/archive", json={"comment": "three"})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "quota_exceeded"
    assert re.fullmatch(
        rf"Run {path.name} uses 2\.0 MiB of 3\.0 MiB for archives \(the next one needs about "
        r"1\.\d MiB\); delete or prune archives, or ask an admin\.",
        error["message"],
    ), error["message"]
    listed = client.get(f"/runs/{path.name}/archive/list").get_json()
    assert listed["in_progress"] is False  # the slot was released
    assert web.ctx.queue().count == 0  # no job was queued
    assert _files(path) == before


def test_the_run_count_quota_counts_archives(web: WebEnv) -> None:
    token = _owner(web)
    path = _run(web, token, 4 * KIB)
    for i in range(RUN_COUNT_LIMIT):
        create_archive(path, f"n{i}")
    response = _client(web, token).post(f"/runs/{path.name}/rq/api/archive", json={})
    assert response.status_code == 409
    assert response.get_json()["error"]["message"] == (
        f"Run {path.name} has 4 of 4 archives; delete or prune archives, or ask an admin."
    )
    assert len(list_archives(path)) == RUN_COUNT_LIMIT


def test_an_archive_bigger_than_its_estimate_is_stopped_while_written_and_leaves_nothing(
    web: WebEnv, workers: Workers
) -> None:
    token = _owner(web)
    path = _run(web, token, 0, files=0)
    (path / "zeros.dat").write_bytes(bytes(2 * MIB))  # compresses to almost nothing
    create_archive(path, "tiny")
    (path / "zeros.dat").unlink()
    (path / "noise.dat").write_bytes(os.urandom(RUN_BYTES_LIMIT + MIB))  # estimated at ~1 %
    before = _files(path)
    client = _client(web, token)
    response = client.post(f"/runs/{path.name}/rq/api/archive", json={"comment": "big"})
    assert response.status_code == 202  # the estimate fits: accepted
    job_id = response.get_json()["job_id"]
    assert workers.burst() == 0
    info = _wait_ended(web, [job_id])[job_id]
    assert info["trigger"] == "ARCHIVE_FAILED"
    assert _files(path) == before  # no archive, no temp file
    assert sum(a.size for a in list_archives(path)) <= RUN_BYTES_LIMIT
    exc_info = job_status(web.ctx, job_id, with_exc_info=True)["exc_info"]
    assert "QuotaExceeded: The archive would pass its quota of" in exc_info
    assert "nothing was kept" in exc_info


def _post_archive(port: int, token: str, runid: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = json.dumps({"comment": "race"})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request("POST", f"/runs/{runid}/rq/api/archive", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_twenty_concurrent_archives_near_the_owner_limit_never_end_over_it(
    web: WebEnv, workers: Workers
) -> None:
    size = 256 * KIB
    limit = 8 * size  # room for about six of the twenty after the one archived already
    token = _owner(web, quota_bytes=limit)
    paths = [_run(web, token, size) for _ in range(20)]
    create_archive(paths[0], "already")
    for _ in range(2):
        workers.start()
    server = LiveServer(web.app)
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def request(path: Path) -> None:
        start.wait()
        answer = _post_archive(server.port, token, path.name)
        with lock:
            answers.append(answer)

    try:
        threads = [threading.Thread(target=request, args=(p,)) for p in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        server.stop()
    assert len(answers) == 20
    accepted = [body["job_id"] for status, body in answers if status == 202]
    refused = [body["error"] for status, body in answers if status != 202]
    assert accepted and refused, answers
    assert all(error["code"] == "quota_exceeded" for error in refused), refused
    assert all(error["message"].startswith("Your runs use ") for error in refused), refused
    ended = _wait_ended(web, accepted)
    total = sum(a.size for p in paths for a in list_archives(p))
    assert total <= limit, (total, limit)
    completed = [i for i in ended.values() if i["trigger"] == "ARCHIVE_COMPLETE"]
    assert len(completed) >= 1
    assert sum(len(list_archives(p)) for p in paths) == 1 + len(completed)
    for path in paths:  # whole archives only
        assert not [n for n in _files(path) if n.endswith(".partial")]
    assert _reservations(web, token) == {}  # every reservation released with its job


def test_a_reservation_is_released_when_its_queued_job_is_canceled(web: WebEnv) -> None:
    token = _owner(web, quota_bytes=10 * MIB)
    path = _run(web, token, 64 * KIB)
    client = _client(web, token)
    job_id = client.post(f"/runs/{path.name}/rq/api/archive", json={}).get_json()["job_id"]
    held = _reservations(web, token)
    assert list(held) == [f"r:{job_id}"]
    reserved = int(held[f"r:{job_id}"].split()[0])
    assert 64 * KIB < reserved < 10 * MIB
    assert client.post(f"/rq/api/canceljob/{job_id}").status_code == 200
    assert _reservations(web, token) == {}


def test_an_expired_reservation_no_longer_counts(web: WebEnv) -> None:
    token = _owner(web, quota_bytes=MIB)
    path = _run(web, token, 64 * KIB)
    key = web.settings.keys.quota_owner(web.tokens[token])
    # a reservation whose job's release never ran, past its deadline, holding the whole limit
    web.ctx.clients.data.hset(key, "r:lost-job", f"{MIB} 1000")
    response = _client(web, token).post(f"/runs/{path.name}/rq/api/archive", json={})
    assert response.status_code == 202
    assert "r:lost-job" not in _reservations(web, token)


def test_the_list_reports_the_runs_usage(web: WebEnv) -> None:
    token = _owner(web)
    path = _run(web, token, 128 * KIB)
    first = create_archive(path, "one")
    usage = _client(web, token).get(f"/runs/{path.name}/archive/list").get_json()["usage"]
    vfs = os.statvfs(path / "archives")
    assert usage["archives_bytes"] == first.size
    assert usage["archives_count"] == 1
    assert usage["run_bytes"] == 128 * KIB
    assert usage["quota_bytes"] == RUN_BYTES_LIMIT
    assert usage["quota_count"] == RUN_COUNT_LIMIT
    assert abs(usage["disk_free_bytes"] - vfs.f_bavail * vfs.f_frsize) < 64 * MIB
    assert set(usage) == {"archives_bytes", "archives_count", "run_bytes", "quota_bytes",
                          "quota_count", "disk_free_bytes"}  # fmt: skip
    schema = document()["components"]["schemas"]["Usage"]
    assert set(schema["required"]) == set(usage) == set(schema["properties"])


def test_an_admin_archiving_someones_run_counts_against_the_owner(web: WebEnv) -> None:
    token = _owner(web, quota_count=1)
    path = _run(web, token, 4 * KIB)
    create_archive(path, "one")
    with web.app.app_context():
        session = db().session
        admin = create_user(session, f"a{uuid.uuid4().hex[:8]}", PASSWORD, admin=True)
        admin_token = create_token(session, admin)
    response = _client(web, admin_token).post(f"/runs/{path.name}/rq/api/archive", json={})
    assert response.status_code == 409
    assert response.get_json()["error"]["message"] == (
        f"The runs of {web.tokens[token]} have 1 of 1 archives; delete or prune archives, "
        "or ask an admin."
    )
    mine = _client(web, token).post(f"/runs/{path.name}/rq/api/archive", json={})
    assert mine.get_json()["error"]["message"].startswith("Your runs have 1 of 1 archives")


def test_a_users_override_replaces_the_site_owner_quota_field_by_field() -> None:
    site = Limit(10 << 30, 100)
    assert user_limit(User(quota_bytes=None, quota_count=None), site) == site
    assert user_limit(User(quota_bytes=None, quota_count=5), site) == Limit(10 << 30, 5)
    assert user_limit(User(quota_bytes=1 << 30, quota_count=None), site) == Limit(1 << 30, 100)
