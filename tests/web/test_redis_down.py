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
from runarchive.jobs import Settings
from runarchive.web import create_app, shutdown
from runarchive.web.accounts import create_token, create_user, grant_run
from runarchive.web.db import db
from runarchive.web.settings import WebSettings
from tests.jobs.conftest import make_small_run
from tests.web.webutil import WS_HEADERS, Browser

pytestmark = pytest.mark.slow


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Browser, str, str, Path]]:
    root = tmp_path_factory.mktemp("down")
    runs = root / "runs"
    runid = f"run-{uuid.uuid4().hex[:8]}"
    run = make_small_run(runs, runid)
    name = create_archive(run).name
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{_dead_port()}/0", runs_root=runs, data_dir=root / "data"
    )
    web = WebSettings(database_url=f"sqlite:///{root}/a.db")
    app = create_app({"TESTING": True, "JOBS_SETTINGS": settings, "WEB_SETTINGS": web})
    with app.app_context():
        user = create_user(db().session, "owner", "password-123")
        grant_run(db().session, runid, user)
        token = create_token(db().session, user)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    try:
        yield Browser(client), runid, name, run
    finally:
        shutdown(app)


def test_queue_routes_answer_503_and_change_nothing(
    down: tuple[Browser, str, str, Path],
) -> None:
    client, runid, name, run = down
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


def test_health_is_503_but_pages_and_downloads_still_work(
    down: tuple[Browser, str, str, Path],
) -> None:
    client, runid, name, _ = down
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json() == {"status": "degraded", "database": "ok", "redis": "unavailable"}
    assert client.get(f"/runs/{runid}/archive").status_code == 200
    download = client.get(f"/runs/{runid}/archive/download/{name}")
    assert download.status_code == 200
    download.close()
