"""The archive routes as the owner uses them: list, download, archive, restore, delete, jobs.

Refusals are checked with their stored effect (nothing deleted, no job claimed), and the job
routes end to end with a real RQ worker process.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import zipfile
from io import BytesIO

import pytest
from flask import url_for

from runarchive.core import create_archive, list_archives
from runarchive.jobs import acquire_lock, enqueue_archive, release_lock, running_job
from tests.support.web import WebEnv
from tests.support.workers import Workers

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_list_shows_archives_newest_first_with_their_details(web: WebEnv) -> None:
    run = web.new_run()
    time.sleep(1.05)  # names carry the second
    second = create_archive(run.path, "second <b>bold</b>")
    body = web.as_role("owner").get(f"/runs/{run.runid}/archive/list").get_json()
    assert body["in_progress"] is False and body["job_id"] is None
    names = [a["name"] for a in body["archives"]]
    assert names == [second.name, run.archive]
    newest = body["archives"][0]
    assert newest["comment"] == "second <b>bold</b>"  # data, rendered as text by the page
    assert newest["size"] == (run.path / "archives" / second.name).stat().st_size
    assert newest["files"] == second.files
    assert ISO_Z.match(newest["created"])
    assert newest["download_url"] == f"/runs/{run.runid}/archive/download/{second.name}"
    assert newest["readable"] is True
    assert newest["links"] == 0


def test_download_urls_match_url_for_under_a_mount_prefix(web: WebEnv) -> None:
    """The list builds one URL prefix per call; each row must still equal url_for's answer."""
    run = web.new_run(prefix="run;v1.")
    time.sleep(1.05)
    create_archive(run.path)
    mount = {"SCRIPT_NAME": "/weppcloud"}
    body = (
        web.as_role("owner")
        .get(f"/runs/{run.runid}/archive/list", environ_overrides=mount)
        .get_json()
    )
    assert len(body["archives"]) == 2
    with web.app.test_request_context("/", environ_overrides=mount):
        for row in body["archives"]:
            expected = url_for("archive.rq_archive_download", runid=run.runid, name=row["name"])
            assert expected.startswith("/weppcloud/runs/run;v1.")
            assert row["download_url"] == expected


def test_in_progress_follows_the_real_job_state(web: WebEnv, workers: Workers) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    job_id = owner.post(f"/runs/{run.runid}/rq/api/archive", json={"comment": "x"}).get_json()[
        "job_id"
    ]
    listed = owner.get(f"/runs/{run.runid}/archive/list").get_json()
    assert listed["in_progress"] is True
    assert listed["job_id"] == job_id and listed["job_kind"] == "archive"
    assert workers.burst() == 0
    listed = owner.get(f"/runs/{run.runid}/archive/list").get_json()
    assert listed["in_progress"] is False and listed["job_id"] is None
    assert len(listed["archives"]) == 2


def test_download_sends_the_exact_bytes_with_etag_range_and_head(web: WebEnv) -> None:
    run = web.new_run()
    url = f"/runs/{run.runid}/archive/download/{run.archive}"
    data = (run.path / "archives" / str(run.archive)).read_bytes()
    owner = web.as_role("owner")

    full = owner.get(url)
    assert full.status_code == 200
    assert full.data == data
    assert full.headers["Content-Type"] == "application/zip"
    assert f"filename={run.archive}" in full.headers["Content-Disposition"]
    assert full.headers["Accept-Ranges"] == "bytes"
    etag = full.headers["ETag"]
    full.close()
    with zipfile.ZipFile(BytesIO(data)) as zf:
        assert "README.md" in zf.namelist()

    part = owner.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.data == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    part.close()

    cached = owner.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    cached.close()

    head = owner.head(url)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.data == b""
    head.close()

    beyond = owner.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416
    beyond.close()


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "..",
        "README.md",
        ".x.zip",
        "-x.zip",
        "run.20260101T000000Z.zip%00.txt",
        "run.20260101T000000Z.zip\\..",
    ],
)
def test_malformed_archive_names_never_reach_the_filesystem(web: WebEnv, name: str) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    response = owner.get(f"/runs/{run.runid}/archive/download/{name}")
    assert response.status_code in (400, 404)
    if response.status_code == 400:
        assert response.get_json()["error"]["code"] == "invalid_input"
    response.close()
    for route in ("restore-archive", "delete-archive"):
        refused = owner.post(
            f"/runs/{run.runid}/rq/api/{route}", json={"archive_name": name.replace("%2F", "/")}
        )
        assert refused.status_code == 400, refused.get_json()
    assert running_job(web.ctx, run.runid) is None
    assert [i.name for i in list_archives(run.path)] == [run.archive]


@pytest.mark.parametrize("runid", ["..", ".", "a b", "run%2F..%2Fx", "x" * 201, "r$"])
def test_malformed_run_ids_are_400(web: WebEnv, runid: str) -> None:
    owner = web.as_role("admin")
    response = owner.get(f"/runs/{runid}/archive/list")
    assert response.status_code in (400, 404)  # `..` and `.` are normalised away by routing
    if response.status_code == 400:
        assert response.get_json()["error"]["code"] == "invalid_input"


def test_an_archive_symlinked_out_of_the_run_is_not_served(web: WebEnv) -> None:
    run = web.new_run()
    secret = web.root / "secret.txt"
    secret.write_text("not yours")
    fake = f"{run.runid}.20200101T000000Z.zip"
    os.symlink(secret, run.path / "archives" / fake)
    response = web.as_role("owner").get(f"/runs/{run.runid}/archive/download/{fake}")
    assert response.status_code == 404
    assert b"not yours" not in response.data


def test_unknown_archive_is_404(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    missing = f"{run.runid}.20200101T000000Z.zip"
    assert owner.get(f"/runs/{run.runid}/archive/download/{missing}").status_code == 404
    response = owner.post(
        f"/runs/{run.runid}/rq/api/restore-archive", json={"archive_name": missing}
    )
    assert response.status_code == 404
    response = owner.post(
        f"/runs/{run.runid}/rq/api/delete-archive", json={"archive_name": missing}
    )
    assert response.status_code == 404


def test_a_locked_run_is_409_naming_the_locked_files(web: WebEnv) -> None:
    run = web.new_run()
    token = acquire_lock(web.ctx.clients.locks, run.runid, "wepp.nodb", ttl=60)
    assert token is not None
    owner = web.as_role("owner")
    try:
        for route, body in (
            ("archive", {"comment": "locked"}),
            ("restore-archive", {"archive_name": run.archive}),
            ("delete-archive", {"archive_name": run.archive}),
        ):
            response = owner.post(f"/runs/{run.runid}/rq/api/{route}", json=body)
            assert response.status_code == 409
            error = response.get_json()["error"]
            assert error["code"] == "locked"
            assert error["locked_files"] == ["wepp.nodb"]
            assert "wepp.nodb" in error["message"]
        assert running_job(web.ctx, run.runid) is None
        assert (run.path / "archives" / str(run.archive)).is_file()
    finally:
        release_lock(web.ctx.clients.locks, run.runid, "wepp.nodb", token)


def test_a_running_job_makes_every_write_409_naming_the_job(web: WebEnv) -> None:
    run = web.new_run()
    job_id = enqueue_archive(web.ctx, run.runid, "first job")
    owner = web.as_role("owner")
    for route, body in (
        ("archive", {"comment": "second"}),
        ("restore-archive", {"archive_name": run.archive}),
        ("delete-archive", {"archive_name": run.archive}),
    ):
        response = owner.post(f"/runs/{run.runid}/rq/api/{route}", json=body)
        assert response.status_code == 409
        error = response.get_json()["error"]
        assert error["code"] == "job_running"
        assert error["job_id"] == job_id
        assert job_id in error["message"]
    slot = running_job(web.ctx, run.runid)
    assert slot is not None and slot.job_id == job_id
    assert (run.path / "archives" / str(run.archive)).is_file()


def test_bodies_are_checked(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    base = f"/runs/{run.runid}/rq/api"
    cases = [
        (f"{base}/archive", {"comment": 12}),
        (f"{base}/archive", {"comment": "line\nbreak"}),
        (f"{base}/archive", ["not", "an", "object"]),
        (f"{base}/restore-archive", {}),
        (f"{base}/restore-archive", {"archive_name": ["x"]}),
        (f"{base}/delete-archive", {"archive_name": ""}),
    ]
    for url, body in cases:
        response = owner.post(url, json=body)
        assert response.status_code == 400, (url, body, response.get_json())
        assert response.get_json()["error"]["code"] == "invalid_input"
    broken = owner.post(
        f"{base}/archive", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert running_job(web.ctx, run.runid) is None


def test_a_long_comment_is_cut_to_40_characters(web: WebEnv, workers: Workers) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    comment = "  " + "c" * 38 + "-tail-that-is-cut  "
    response = owner.post(f"/runs/{run.runid}/rq/api/archive", json={"comment": comment})
    assert response.status_code == 202
    body = response.get_json()
    assert (body["comment"], body["comment_cut"]) == ("c" * 38 + "-t", True)
    assert workers.burst() == 0
    comments = [i.comment for i in list_archives(run.path)]
    assert comments[0] == ("c" * 38 + "-t")
    assert len(comments[0]) == 40


@pytest.mark.parametrize("links", ["copy", "FOLLOW", 1, ["follow"]])
def test_the_links_field_is_store_or_follow_and_anything_else_is_400(
    web: WebEnv, links: object
) -> None:
    run = web.new_run()
    response = web.as_role("owner").post(f"/runs/{run.runid}/rq/api/archive", json={"links": links})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_input"
    assert running_job(web.ctx, run.runid) is None


def test_an_archive_job_with_links_follow_archives_in_run_links_as_their_targets(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    (run.path / "climate").mkdir()
    (run.path / "climate" / "station.cli").write_bytes(b"CLIMATE")
    (run.path / "wepp").mkdir(exist_ok=True)
    os.symlink("../climate/station.cli", run.path / "wepp" / "climate.cli")
    os.symlink("climate", run.path / "climdir")
    os.symlink("/etc/hostname", run.path / "outside")
    owner = web.as_role("owner")
    base = f"/runs/{run.runid}"
    stored = owner.post(f"{base}/rq/api/archive", json={"comment": "store"})
    assert stored.status_code == 202
    assert workers.burst() == 0
    time.sleep(1.05)  # names carry the second
    followed = owner.post(f"{base}/rq/api/archive", json={"comment": "follow", "links": "follow"})
    assert followed.status_code == 202
    assert workers.burst() == 0
    rows = {a["comment"]: a for a in owner.get(f"{base}/archive/list").get_json()["archives"]}
    assert (rows["store"]["links"], rows["follow"]["links"]) == (3, 1)
    download = owner.get(rows["follow"]["download_url"])
    data = download.data
    download.close()
    with zipfile.ZipFile(BytesIO(data)) as zf:
        assert zf.read("wepp/climate.cli") == b"CLIMATE"
        assert zf.read("climdir/station.cli") == b"CLIMATE"
        assert zf.read("outside") == b"/etc/hostname"  # a link that leaves the run stays one
    info = owner.get(f"/rq/api/jobinfo/{followed.get_json()['job_id']}").get_json()
    assert info["status"] == "finished", info


def test_restore_preview_counts_the_files_a_restore_would_remove(web: WebEnv) -> None:
    run = web.new_run()
    (run.path / "new-since.txt").write_text("made after the archive\n")
    (run.path / "output" / "later.dat").write_bytes(b"z" * 3000)
    owner = web.as_role("owner")
    url = f"/runs/{run.runid}/archive/{run.archive}/restore-preview"
    preview = owner.get(url)
    assert preview.status_code == 200
    assert preview.get_json() == {
        "name": run.archive,
        "removes": {"files": 2, "bytes": 3000 + len("made after the archive\n")},
        "sample": ["new-since.txt", "output/later.dat"],
        # Issue 14: the confirm's diff summary (tests/web/test_restore_preview.py).
        "paths": None,
        "restores": {"files": 0, "bytes": 0},
        "changes": {"files": 0, "bytes": 0},
        "unchanged": 7,
    }
    assert (run.path / "new-since.txt").is_file()  # a preview changes nothing
    assert web.as_role("other").get(url).status_code == 403
    assert owner.get(f"/runs/{run.runid}/archive/nope.zip/restore-preview").status_code == 404


def test_a_form_body_works_like_json(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    response = owner.post(
        f"/runs/{run.runid}/rq/api/delete-archive", data={"archive_name": run.archive}
    )
    assert response.status_code == 200
    assert response.get_json() == {"deleted": run.archive}
    assert list_archives(run.path) == []
    assert f"Archive deleted: {run.archive}" in web.ctx.stream(run.runid).recent()


def test_restore_puts_the_files_back(web: WebEnv, workers: Workers) -> None:
    run = web.new_run()
    readme = run.path / "README.md"
    original = hashlib.sha256(readme.read_bytes()).hexdigest()
    readme.write_text("changed after the archive\n")
    (run.path / "output" / "H0.pass.dat").unlink()
    owner = web.as_role("owner")
    response = owner.post(
        f"/runs/{run.runid}/rq/api/restore-archive", json={"archive_name": run.archive}
    )
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    assert workers.burst() == 0
    assert hashlib.sha256(readme.read_bytes()).hexdigest() == original
    assert (run.path / "output" / "H0.pass.dat").is_file()
    status = owner.get(f"/rq/api/jobstatus/{job_id}").get_json()
    assert status["status"] == "finished"
    assert status["runid"] == run.runid and status["kind"] == "restore"
    assert status["trigger"] == "RESTORE_COMPLETE"
    assert ISO_Z.match(status["started_at"][:19] + "Z") and status["ended_at"]
    assert status["progress"]["files_done"] == status["progress"]["files_total"]
    assert "exc_info" not in status


def test_a_failing_job_shows_its_traceback_in_jobinfo_only(web: WebEnv, workers: Workers) -> None:
    run = web.new_run()
    damaged = run.path / "archives" / str(run.archive)
    damaged.write_bytes(damaged.read_bytes()[:-30])  # truncated: no end of central directory
    owner = web.as_role("owner")
    job_id = owner.post(
        f"/runs/{run.runid}/rq/api/restore-archive", json={"archive_name": run.archive}
    ).get_json()["job_id"]
    workers.burst()
    status = owner.get(f"/rq/api/jobstatus/{job_id}").get_json()
    assert status["status"] == "failed"
    assert status["trigger"] == "RESTORE_FAILED"
    info = owner.get(f"/rq/api/jobinfo/{job_id}").get_json()
    assert "Traceback" in info["exc_info"]
    assert (run.path / "README.md").read_text() == "a small run\n"  # untouched


def test_unknown_and_malformed_job_ids(web: WebEnv) -> None:
    owner = web.as_role("owner")
    unknown = owner.get("/rq/api/jobstatus/00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404
    assert unknown.get_json()["error"]["code"] == "not_found"
    assert owner.get("/rq/api/jobinfo/00000000-0000-0000-0000-000000000000").status_code == 404
    assert owner.get("/rq/api/jobstatus/bad$id").status_code == 400


def test_a_job_id_with_a_trailing_newline_is_400_not_a_server_error(web: WebEnv) -> None:
    owner = web.as_role("owner")
    for route in ("jobstatus", "jobinfo"):
        response = owner.get(f"/rq/api/{route}/00000000-0000-0000-0000-000000000000%0A")
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["error"]["code"] == "invalid_input"
    assert web.as_role("anonymous").get("/rq/api/jobstatus/nope").status_code == 404
