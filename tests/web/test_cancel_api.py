"""``POST /rq/api/canceljob/<job_id>``: the real app, a real valkey and real worker processes.

200 ``{"job_id", "status"}`` for a queued or running job, in the name of the session's or the
token's user; 409 ``not_cancelable`` once the job ended or a restore's swap began (which then
finishes); 404 for an unknown job. Each case checks the stream's lines and the run on disk.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from runarchive.jobs import enqueue_archive, enqueue_restore, running_job
from tests.jobs import pausehook
from tests.support.runs import make_many_files_run
from tests.support.tree import archive_files, snapshot
from tests.support.waiting import wait_until
from tests.support.web import Run, WebEnv
from tests.support.workers import Workers


def _lines(web: WebEnv, runid: str) -> list[str]:
    return web.ctx.stream(runid).recent()


def _trigger_and_errors(web: WebEnv, runid: str, job_id: str) -> tuple[list[str], list[str]]:
    lines = _lines(web, runid)
    prefix = f"rq:{job_id} TRIGGER   archive "
    triggers = [x[len(prefix) :] for x in lines if x.startswith(prefix)]
    return triggers, [x for x in lines if x.startswith("Error: ")]


def test_the_owner_cancels_a_queued_restore_and_the_error_line_names_them(web: WebEnv) -> None:
    run = web.new_run()
    before = snapshot(run.path)
    job_id = enqueue_restore(web.ctx, run.runid, str(run.archive))

    response = web.as_role("owner").post(f"/rq/api/canceljob/{job_id}")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"job_id": job_id, "status": "canceled"}
    assert response.headers["Cache-Control"] == "no-store"
    assert _trigger_and_errors(web, run.runid, job_id) == (
        ["RESTORE_FAILED"],
        ["Error: Canceled by alice"],
    )
    assert running_job(web.ctx, run.runid) is None
    assert snapshot(run.path) == before
    status = web.as_role("owner").get(f"/rq/api/jobstatus/{job_id}").get_json()
    assert (status["status"], status["trigger"]) == ("canceled", "RESTORE_FAILED")


def test_a_cancel_with_an_api_token_is_made_in_the_tokens_users_name(web: WebEnv) -> None:
    run = web.new_run()
    job_id = enqueue_archive(web.ctx, run.runid)

    response = web.token_client("admin").post(f"/rq/api/canceljob/{job_id}")

    assert response.status_code == 200
    assert _trigger_and_errors(web, run.runid, job_id)[1] == ["Error: Canceled by root"]


@pytest.mark.parametrize("role", ["anonymous", "other"])
def test_a_reader_or_a_stranger_may_not_cancel_and_the_job_stays(web: WebEnv, role: str) -> None:
    run = web.new_run(public=True)
    job_id = enqueue_archive(web.ctx, run.runid)

    response = web.as_role(role).post(f"/rq/api/canceljob/{job_id}")

    assert response.status_code == (401 if role == "anonymous" else 403)
    slot = running_job(web.ctx, run.runid)
    assert slot is not None and slot.job_id == job_id
    assert _trigger_and_errors(web, run.runid, job_id) == ([], [])


def test_canceling_a_running_archive_answers_canceling_and_leaves_no_archive(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run(archive=False)
    make_many_files_run(web.runs_root, run.runid, 5000)
    rec_job = enqueue_archive(web.ctx, run.runid)
    proc = workers.start("--burst")
    wait_until(lambda: any(x.startswith("Adding ") for x in _lines(web, run.runid)), timeout=60)

    response = web.as_role("owner").post(f"/rq/api/canceljob/{rec_job}")

    assert response.status_code == 200
    assert response.get_json() == {"job_id": rec_job, "status": "canceling"}
    assert proc.wait(timeout=60) == 0, workers.log_text()
    assert _trigger_and_errors(web, run.runid, rec_job) == (
        ["ARCHIVE_FAILED"],
        ["Error: Canceled by alice"],
    )
    assert archive_files(run.path / "archives") == []
    assert running_job(web.ctx, run.runid) is None


def test_a_finished_job_and_a_restore_past_its_swap_answer_409(web: WebEnv, tmp_path: Path) -> None:
    run: Run = web.new_run()
    archived = snapshot(run.path, with_dir_times=False)
    (run.path / "README.md").write_text("changed after the archive\n")
    logs = tmp_path / "held-logs"
    logs.mkdir()
    workers = Workers(replace(web.settings, post_restore_hooks=(pausehook.SPEC,)), logs)
    data = web.ctx.clients.data
    owner = web.as_role("owner")
    try:
        job_id = enqueue_restore(web.ctx, run.runid, str(run.archive))
        proc = workers.start("--burst")
        wait_until(lambda: data.exists(pausehook.paused_key(run.runid)), timeout=60)

        swapping = owner.post(f"/rq/api/canceljob/{job_id}")

        assert swapping.status_code == 409
        error = swapping.get_json()["error"]
        assert error == {
            "code": "not_cancelable",
            "message": "The restore is already swapping in; it will finish.",
        }
        data.set(pausehook.go_key(run.runid), "1", ex=60)
        assert proc.wait(timeout=60) == 0, workers.log_text()
    finally:
        workers.kill_all()
    assert _trigger_and_errors(web, run.runid, job_id) == (["RESTORE_COMPLETE"], [])
    assert snapshot(run.path, with_dir_times=False) == archived

    ended = owner.post(f"/rq/api/canceljob/{job_id}")

    assert ended.status_code == 409
    assert ended.get_json()["error"]["code"] == "not_cancelable"
    assert "already ended (RESTORE_COMPLETE)" in ended.get_json()["error"]["message"]


def test_an_unknown_job_is_404_and_a_malformed_id_400(web: WebEnv) -> None:
    owner = web.as_role("owner")
    assert owner.post("/rq/api/canceljob/no-such-job").status_code == 404
    assert owner.post("/rq/api/canceljob/bad%20id").status_code == 400
