"""runarchive mounted in a host Flask app with ``runarchive.web.init_app``, under a URL prefix.

The host is the documented example, ``docs/examples/host_app.py``, imported as it is: its own
users, Flask-Login manager, session and login page; our dashboard under ``/archive-svc``; its
access policy. A job runs in a real worker process on the session's embedded valkey. A second
host mounts runarchive *without* a policy (runarchive's own accounts and login under the
prefix), and ``create_app`` behind werkzeug's dispatcher keeps its prefix in ``next`` too.
"""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.security import generate_password_hash

import runarchive.web
from runarchive.core import create_archive
from runarchive.jobs import Settings
from runarchive.web.accounts import create_user, grant_run
from runarchive.web.db import db
from tests.support.runs import make_small_run
from tests.support.web import META_CSRF, PASSWORD
from tests.support.workers import Workers
from tests.web.wepp_host import load_example

PREFIX = "/archive-svc"
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def make_settings(root: Path, redis_url: str) -> Settings:
    runs = root / "runs"
    runs.mkdir()
    tag = uuid.uuid4().hex[:8]
    return Settings(
        redis_url=redis_url,
        runs_root=runs,
        queue=f"mount-{tag}",
        key_prefix=f"ra-mount-{tag}",
        heartbeat_ttl=2.0,
        slot_grace=2.0,
        data_dir=root / "data",
    )


class Host:
    """The example host app, its settings, and the runs of its user ``ana``."""

    def __init__(self, example: ModuleType, settings: Settings) -> None:
        self.settings = settings
        hashed = generate_password_hash(PASSWORD)
        self.ana = example.HostUser("ana", hashed)
        self.ben = example.HostUser("ben", hashed)
        self.app: Flask = example.create_app(
            {"ana": self.ana, "ben": self.ben}, settings, SECRET_KEY="host-secret", TESTING=True
        )

    def new_run(self) -> tuple[str, Path]:
        assert self.settings.runs_root is not None
        runid = f"host-{uuid.uuid4().hex[:10]}"
        self.ana.runs.add(runid)
        return runid, make_small_run(self.settings.runs_root, runid)

    def logged_in(self, name: str) -> FlaskClient:
        """A client logged in through the host's own login form."""
        client = self.app.test_client()
        answer = client.post("/login", data={"username": name, "password": PASSWORD})
        assert answer.status_code == 302, answer.get_data(as_text=True)
        return client


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Host]:
    found = Host(load_example(), make_settings(tmp_path_factory.mktemp("host"), redis_url))
    try:
        yield found
    finally:
        runarchive.web.shutdown(found.app)


@pytest.fixture
def host_workers(host: Host, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers(host.settings, logs)
    try:
        yield pool
    finally:
        pool.kill_all()


def csrf_in(page: str) -> str:
    match = META_CSRF.search(page)
    assert match is not None, page[:500]
    return match.group(1)


def finished(client: FlaskClient, job_id: str) -> dict[str, Any]:
    info: dict[str, Any] = client.get(f"{PREFIX}/rq/api/jobstatus/{job_id}").get_json()
    assert info["status"] == "finished", info
    return info


def test_an_anonymous_browser_is_sent_to_the_hosts_login_and_back_under_the_prefix(
    host: Host,
) -> None:
    runid, _ = host.new_run()
    client = host.app.test_client()
    dashboard = f"{PREFIX}/runs/{runid}/archive"
    answer = client.get(dashboard, headers=BROWSER)
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert location.path == "/login"  # the host's login view, not runarchive's
    assert parse_qs(location.query)["next"] == [dashboard]
    assert client.get(f"{PREFIX}/login").status_code == 404  # no login of ours is mounted
    back = client.post("/login", data={"username": "ana", "password": PASSWORD, "next": dashboard})
    assert back.status_code == 302 and back.headers["Location"] == dashboard
    assert client.get(dashboard).status_code == 200
    # A script (no HTML in Accept) gets the API's 401, not a redirect.
    api = host.app.test_client().get(f"{PREFIX}/runs/{runid}/archive/list")
    assert api.status_code == 401 and api.get_json()["error"]["code"] == "unauthorized"


def test_the_dashboard_under_the_prefix_builds_every_url_under_it(host: Host) -> None:
    runid, _ = host.new_run()
    client = host.logged_in("ana")
    page = client.get(f"{PREFIX}/runs/{runid}/archive").get_data(as_text=True)
    assert f'<link rel="stylesheet" href="{PREFIX}/static/css/app.css">' in page
    assert f'<script src="{PREFIX}/static/js/archive.js" defer></script>' in page
    assert '<a class="brand" href="/">' in page  # the host's run list (home_endpoint)
    assert '<a href="/">Runs</a>' in page
    urls = re.findall(r'"(?:list|archive|restore|delete|jobstatus|jobinfo|ws)":"([^"]*)"', page)
    assert len(urls) == 7 and all(url.startswith(f"{PREFIX}/") for url in urls), urls
    inside = re.findall(r'"(?:entries|file|diff|diff_file)":"([^"]*)"', page)
    assert len(inside) == 4, inside
    assert all(url.startswith(f"{PREFIX}/runs/{runid}/archive/{{name}}/") for url in inside)
    assert 'action="/logout"' not in page and 'action="/login"' not in page
    assert f'<script src="{PREFIX}/static/js/inside.js" defer></script>' in page
    assert f'<link rel="stylesheet" href="{PREFIX}/static/css/inside.css">' in page
    for asset in ("css/app.css", "css/inside.css", "js/archive.js", "js/inside.js", "favicon.svg"):
        with client.get(f"{PREFIX}/static/{asset}") as served:
            assert served.status_code == 200
    # The host's links to the dashboard, built with url_for, carry the prefix too.
    assert f'href="{PREFIX}/runs/{runid}/archive"' in client.get("/").get_data(as_text=True)


def test_the_storage_panel_under_the_prefix_gets_its_chart_and_assets_there(host: Host) -> None:
    runid, _ = host.new_run()
    client = host.logged_in("ana")
    page = client.get(f"{PREFIX}/runs/{runid}/archive").get_data(as_text=True)
    (chart,) = re.findall(r'"storage_chart":"([^"]*)"', page)
    assert chart == f"{PREFIX}/runs/{runid}/archive/storage.svg"
    with client.get(f"{chart}?width=400") as answer:
        assert answer.status_code == 200 and answer.mimetype == "image/svg+xml"
        assert 'width="400"' in answer.get_data(as_text=True)
    for asset in ("css/storage.css", "js/storage.js", "js/activity.js"):
        assert f'"{PREFIX}/static/{asset}"' in page
        with client.get(f"{PREFIX}/static/{asset}") as served:
            assert served.status_code == 200


def test_archive_download_and_restore_work_through_the_host(
    host: Host, host_workers: Workers
) -> None:
    runid, run_dir = host.new_run()
    client = host.logged_in("ana")
    token = csrf_in(client.get(f"{PREFIX}/runs/{runid}/archive").get_data(as_text=True))
    api = f"{PREFIX}/runs/{runid}"
    forged = client.post(f"{api}/rq/api/archive", json={"comment": "forged"})
    assert forged.status_code == 400 and forged.get_json()["error"]["code"] == "csrf_failed"

    started = client.post(
        f"{api}/rq/api/archive", json={"comment": "via host"}, headers={"X-CSRFToken": token}
    )
    assert started.status_code == 202, started.get_json()
    assert host_workers.burst() == 0, host_workers.log_text()
    finished(client, started.get_json()["job_id"])
    listed = client.get(f"{api}/archive/list").get_json()
    (row,) = listed["archives"]
    assert row["comment"] == "via host"
    assert row["download_url"] == f"{api}/archive/download/{row['name']}"

    with client.get(row["download_url"]) as download:
        assert download.status_code == 200 and download.mimetype == "application/zip"
        data = download.data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("README.md") == b"a small run\n"

    (run_dir / "README.md").write_text("changed after the archive\n")
    restore = client.post(
        f"{api}/rq/api/restore-archive",
        json={"archive_name": row["name"]},
        headers={"X-CSRFToken": token},
    )
    assert restore.status_code == 202, restore.get_json()
    assert host_workers.burst() == 0, host_workers.log_text()
    finished(client, restore.get_json()["job_id"])
    assert (run_dir / "README.md").read_text() == "a small run\n"


def test_a_user_the_host_denies_gets_the_hosts_own_answer(host: Host) -> None:
    runid, _ = host.new_run()  # ana's
    client = host.logged_in("ben")
    for path in (f"/runs/{runid}/archive", f"/runs/{runid}/archive/list"):
        answer = client.get(PREFIX + path)
        assert answer.status_code == 403
        assert f"The host says: run {runid} is not yours" in answer.get_data(as_text=True)
    # Nothing ben may not do reaches runarchive's own accounts or jobs.
    refused = client.post(f"{PREFIX}/runs/{runid}/rq/api/archive", json={})
    assert refused.status_code in (400, 403)  # CSRF first, or the host's refusal


def test_the_host_keeps_its_own_pages_headers_and_errors(host: Host) -> None:
    client = host.logged_in("ana")
    home = client.get("/")
    assert home.status_code == 200 and "Your runs at the host" in home.get_data(as_text=True)
    assert "Content-Security-Policy" not in home.headers  # our headers are for our pages
    missing = client.get("/no/such/host/page", headers=BROWSER)
    assert missing.status_code == 404 and "runarchive" not in missing.get_data(as_text=True)
    runid, _ = host.new_run()
    ours = client.get(f"{PREFIX}/runs/{runid}/archive")
    assert "script-src 'self'" in ours.headers["Content-Security-Policy"]


# ------------------------------------------------------------------ runarchive's own login


@pytest.fixture(scope="module")
def own_login(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Flask]:
    settings = make_settings(tmp_path_factory.mktemp("own"), redis_url)
    app = Flask("plain_host")
    app.config.update(SECRET_KEY="plain-host-secret", TESTING=True)
    runarchive.web.init_app(app, url_prefix=PREFIX, settings=settings)
    assert settings.runs_root is not None
    make_small_run(settings.runs_root, "own-run")
    with app.app_context():
        session = db().session
        grant_run(session, "own-run", create_user(session, "carla", PASSWORD))
    try:
        yield app
    finally:
        runarchive.web.shutdown(app)


def test_without_a_policy_login_and_logout_keep_the_prefix(own_login: Flask) -> None:
    client = own_login.test_client()
    dashboard = f"{PREFIX}/runs/own-run/archive"
    answer = client.get(dashboard)
    assert answer.status_code == 302
    assert answer.headers["Location"] == f"{PREFIX}/login?next={dashboard}"
    form = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert f'<form method="post" action="{PREFIX}/login"' in form
    assert f'value="{dashboard}"' in form
    logged_in = client.post(
        f"{PREFIX}/login",
        data={
            "username": "carla",
            "password": PASSWORD,
            "csrf_token": csrf_in(form),
            "next": dashboard,
        },
    )
    assert logged_in.status_code == 302 and logged_in.headers["Location"] == dashboard
    page = client.get(dashboard).get_data(as_text=True)
    assert f'<a class="brand" href="{PREFIX}/">' in page
    assert f'<a href="{PREFIX}/">Runs</a>' in page
    assert f'action="{PREFIX}/logout"' in page
    runs = client.get(f"{PREFIX}/").get_data(as_text=True)
    assert f'href="{PREFIX}/runs/own-run/archive"' in runs
    out = client.post(f"{PREFIX}/logout", data={"csrf_token": csrf_in(page)})
    assert out.status_code == 302 and out.headers["Location"] == f"{PREFIX}/login"
    assert client.get(dashboard).headers["Location"].startswith(f"{PREFIX}/login?")


def test_init_app_refuses_a_host_without_a_secret_key(tmp_path: Path, redis_url: str) -> None:
    with pytest.raises(ValueError, match="SECRET_KEY"):
        runarchive.web.init_app(Flask("keyless"), settings=make_settings(tmp_path, redis_url))


def test_create_app_behind_a_dispatcher_keeps_its_prefix_in_next(
    tmp_path: Path, redis_url: str
) -> None:
    settings = make_settings(tmp_path, redis_url)
    archive_app = runarchive.web.create_app({"TESTING": True, "JOBS_SETTINGS": settings})
    try:
        outer = Flask("outer")
        outer.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
            outer.wsgi_app, {"/archive-service": archive_app}
        )
        answer = outer.test_client().get("/archive-service/runs/some-run/archive")
        assert answer.status_code == 302
        assert answer.headers["Location"] == (
            "/archive-service/login?next=/archive-service/runs/some-run/archive"
        )
    finally:
        runarchive.web.shutdown(archive_app)


def test_actions_through_the_host_are_audited_under_the_user_the_host_names(host: Host) -> None:
    from flask_login import current_user

    from runarchive.web.audit import audit_log

    runid, run_dir = host.new_run()
    name = create_archive(run_dir).name
    client = host.logged_in("ana")
    token = csrf_in(client.get(f"{PREFIX}/runs/{runid}/archive").get_data(as_text=True))
    host.app.config["RUNARCHIVE_AUDIT_USER"] = lambda: current_user.get_id()
    try:
        pinned = client.post(f"{PREFIX}/runs/{runid}/archive/{name}/pin",
                             headers={"X-CSRFToken": token})  # fmt: skip
        assert pinned.status_code == 200
    finally:
        del host.app.config["RUNARCHIVE_AUDIT_USER"]
    unpinned = client.post(f"{PREFIX}/runs/{runid}/archive/{name}/unpin",
                           headers={"X-CSRFToken": token})  # fmt: skip
    assert unpinned.status_code == 200
    with host.app.app_context():
        rows = audit_log().page(runid, None).events
    assert [(r["user"], r["action"], r["outcome"]) for r in reversed(rows)] == [
        ("host:ana", "pin", "done"),
        ("host", "unpin", "done"),
    ]
