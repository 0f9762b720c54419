"""With Redis unreachable the service stays up: pages and accounts work, queue routes say 503.

The app points at a port nothing listens on (a real connection refusal, retried by the jobs
layer's clients for a couple of seconds before giving up). ``in_progress`` cannot be known then,
so the list is 503 too rather than a guess.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive.core import create_archive
from runarchive.jobs import QueueUnavailable, Settings
from runarchive.web import create_app, shutdown
from runarchive.web.accounts import create_token, create_user, grant_run
from runarchive.web.db import db
from runarchive.web.settings import WebSettings
from tests.support.runs import make_small_run
from tests.support.web import WS_HEADERS, Browser

pytestmark = pytest.mark.slow


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Down = tuple[Browser, str, str, Path, str]


@pytest.fixture(scope="module", params=["tcp", "unix"])
def down(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Down]:
    root = tmp_path_factory.mktemp("down")
    runs = root / "runs"
    runid = f"run-{uuid.uuid4().hex[:8]}"
    run = make_small_run(runs, runid)
    name = create_archive(run).name
    # The server detail a client must never see: the port, or the socket's path.
    where = f"127.0.0.1:{_dead_port()}" if request.param == "tcp" else f"{root}/data/valkey.sock"
    url = f"redis://{where}/0" if request.param == "tcp" else f"unix://{where}"
    settings = Settings(redis_url=url, runs_root=runs, data_dir=root / "data")
    web = WebSettings(database_url=f"sqlite:///{root}/a.db")
    app = create_app({"TESTING": True, "JOBS_SETTINGS": settings, "WEB_SETTINGS": web})
    with app.app_context():
        user = create_user(db().session, "owner", "password-123")
        grant_run(db().session, runid, user)
        token = create_token(db().session, user)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    try:
        yield Browser(client), runid, name, run, where
    finally:
        shutdown(app)


def test_queue_routes_answer_503_and_change_nothing(down: Down) -> None:
    client, runid, name, run, _ = down
    cases = [
        client.get(f"/runs/{runid}/archive/list"),
        client.post(f"/runs/{runid}/rq/api/archive", json={"comment": "x"}),
        client.post(f"/runs/{runid}/rq/api/delete-archive", json={"archive_name": name}),
        client.get("/rq/api/jobstatus/0f0f0f0f-0000-0000-0000-000000000000"),
        client.get(f"/status/{runid}:archive", headers=WS_HEADERS),
    ]
    for response in cases:
        assert response.status_code == 503, response.get_json()
        assert response.get_json()["error"]["code"] == "queue_unavailable"
    assert (run / "archives" / name).is_file()


def test_a_restore_preview_says_the_queue_is_down_and_offers_nothing(down: Down) -> None:
    client, runid, name, run, where = down
    response = client.get(f"/runs/{runid}/archive/{name}/restore-preview?path=output/")
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"] == {
        "code": "queue_unavailable", "message": QueueUnavailable.MESSAGE,
    }  # fmt: skip
    assert where not in response.get_data(as_text=True)
    assert (run / "archives" / name).is_file()


def test_a_503_body_names_no_socket_path_host_port_or_data_dir(down: Down) -> None:
    client, runid, name, run, where = down
    cases = [
        client.post(f"/runs/{runid}/rq/api/archive", json={"comment": "x"}),
        client.post(f"/runs/{runid}/rq/api/restore-archive", json={"archive_name": name}),
        client.get(f"/status/{runid}:archive", headers=WS_HEADERS),
        client.get(f"/runs/{runid}/archive/list"),
    ]
    root = str(run.parents[1])
    for response in cases:
        body = response.get_data(as_text=True)
        assert response.status_code == 503, body
        assert where not in body and root not in body and "unix" not in body, body
        assert response.get_json()["error"]["message"] == QueueUnavailable.MESSAGE


def test_health_is_503_but_pages_and_downloads_still_work(down: Down) -> None:
    client, runid, name, _, _ = down
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json() == {"status": "degraded", "database": "ok", "redis": "unavailable"}
    assert client.get(f"/runs/{runid}/archive").status_code == 200
    download = client.get(f"/runs/{runid}/archive/download/{name}")
    assert download.status_code == 200
    download.close()
