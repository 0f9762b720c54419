"""The audit log through the API: a row for every action, refusals included, and its two routes.

Real app, real Redis, real workers writing the job's end into the same SQLite database. Each
test reads the rows back through ``GET /runs/<runid>/archive/audit`` (or ``/audit``) and checks
their data, not only that something was stored.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from typing import Any

from runarchive.core import AuditAction, AuditEvent, Outcome
from runarchive.jobs import acquire_lock, release_lock
from runarchive.web import auditlog, create_app, shutdown
from runarchive.web.accounts import grant_run, require_user
from runarchive.web.auditlog import AuditLog
from runarchive.web.db import db
from runarchive.web.settings import WebSettings
from tests.support.runs import make_many_files_run
from tests.support.waiting import wait_until
from tests.support.web import Run, WebEnv
from tests.support.workers import WORKER_TIMEOUT, Workers, children

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
FIELDS = {"id", "time", "user", "remote_addr", "runid", "archive", "action", "outcome",
          "job_id", "bytes", "detail"}  # fmt: skip


def events(web: WebEnv, run: Run, role: str = "owner") -> list[dict[str, Any]]:
    """The run's audit rows, oldest first (the route answers newest first)."""
    response = web.as_role(role).get(f"/runs/{run.runid}/archive/audit?limit=1000")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["next"] is None
    for event in body["events"]:
        assert set(event) == FIELDS and ISO.match(event["time"])
        assert event["runid"] == run.runid
    return list(reversed(body["events"]))


def brief(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["user"], r["action"], r["outcome"]) for r in rows]


def burst(web: WebEnv, workers: Workers) -> None:
    """Run a burst worker that records into the app's database."""
    database = web.app.config["DATABASE_URL"]
    proc = workers.start("--burst", env={"RUNARCHIVE_DATABASE_URL": database})
    assert proc.wait(timeout=WORKER_TIMEOUT) == 0, workers.log_text()


def test_an_archive_is_recorded_when_accepted_and_when_its_job_ends(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    response = web.as_role("owner").post(f"/runs/{run.runid}/rq/api/archive", json={"comment": "a"})
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    accepted = events(web, run)
    assert brief(accepted) == [("alice", "archive", "accepted")]
    assert accepted[0]["job_id"] == job_id and accepted[0]["remote_addr"] == "127.0.0.1"
    assert accepted[0]["archive"] is None  # named when the job made it

    burst(web, workers)
    rows = events(web, run)
    assert brief(rows) == [("alice", "archive", "accepted"), ("alice", "archive", "done")]
    done = rows[1]
    made = [a for a in web.as_role("owner").get(f"/runs/{run.runid}/archive/list").get_json()[
        "archives"] if a["name"] != run.archive]  # fmt: skip
    assert done["job_id"] == job_id and done["archive"] == made[0]["name"]
    assert done["bytes"] == made[0]["size"] and done["remote_addr"] == "127.0.0.1"
    assert done["id"] > rows[0]["id"]


def test_a_partial_restore_and_its_undo_name_the_paths_user_and_bytes(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    client = web.token_client("owner")
    response = client.post(
        f"/runs/{run.runid}/rq/api/restore-archive",
        json={"archive_name": run.archive, "paths": ["output/"]},
    )
    assert response.status_code == 202, response.get_json()
    burst(web, workers)
    assert client.post(f"/runs/{run.runid}/rq/api/undo-restore").status_code == 202
    burst(web, workers)
    rows = events(web, run)
    token_user = rows[0]["user"]
    assert re.fullmatch(r"token:\d+:alice", token_user)
    assert brief(rows) == [
        (token_user, "restore", "accepted"), (token_user, "restore", "done"),
        (token_user, "undo", "accepted"), (token_user, "undo", "done"),
    ]  # fmt: skip
    # the undo's request does not name the archive; its end names the restore it undid
    assert [r["archive"] for r in rows] == [run.archive, run.archive, None, run.archive]
    assert rows[0]["detail"] == rows[1]["detail"] == "paths: output/"
    assert rows[1]["bytes"] > 0 and rows[0]["job_id"] == rows[1]["job_id"]
    assert rows[2]["job_id"] == rows[3]["job_id"] != rows[0]["job_id"]


def test_refusals_are_recorded_with_their_reason_and_change_nothing(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    base = f"/runs/{run.runid}"
    # bad input: an archive name that is none
    bad = owner.post(f"{base}/rq/api/restore-archive", json={"archive_name": "../x.zip"})
    assert bad.status_code == 400
    # a pinned archive cannot be deleted
    assert owner.post(f"{base}/archive/{run.archive}/pin").status_code == 200
    pinned = owner.post(f"{base}/rq/api/delete-archive", json={"archive_name": run.archive})
    assert pinned.status_code == 409
    # a locked run
    token = acquire_lock(web.ctx.clients.locks, run.runid, "a.nodb", owner="host", ttl=30)
    assert token is not None
    try:
        locked = owner.post(f"{base}/rq/api/archive", json={})
        assert locked.status_code == 409
    finally:
        release_lock(web.ctx.clients.locks, run.runid, "a.nodb", token)
    # a busy slot
    first = owner.post(f"{base}/rq/api/archive", json={}).get_json()["job_id"]
    busy = owner.post(f"{base}/rq/api/restore-archive", json={"archive_name": run.archive})
    assert busy.status_code == 409
    # access denied to a known user
    denied = web.as_role("other").post(f"{base}/archive/{run.archive}/unpin")
    assert denied.status_code == 403
    # an anonymous request refused for want of a login is not recorded (nobody is known)
    assert web.as_role("anonymous").post(f"{base}/rq/api/archive", json={}).status_code == 401

    rows = events(web, run)
    assert brief(rows) == [
        ("alice", "restore", "refused"), ("alice", "pin", "done"), ("alice", "delete", "refused"),
        ("alice", "archive", "refused"), ("alice", "archive", "accepted"),
        ("alice", "restore", "refused"), ("bob", "unpin", "refused"),
    ]  # fmt: skip
    assert "Invalid archive name" in rows[0]["detail"]
    assert rows[2]["detail"] == pinned.get_json()["error"]["message"]
    assert rows[2]["archive"] == run.archive and "pinned" in rows[2]["detail"]
    assert "locked" in rows[3]["detail"] and "a.nodb" in rows[3]["detail"]
    assert rows[4]["job_id"] == first and first in rows[5]["detail"]
    assert rows[6]["detail"] == f"You may not change run {run.runid}."
    assert (run.path / "archives" / str(run.archive)).is_file()


def test_pin_unpin_policy_prune_download_file_and_cancel_are_recorded(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    base = f"/runs/{run.runid}/archive"
    assert owner.post(f"{base}/{run.archive}/pin").status_code == 200
    assert owner.post(f"{base}/{run.archive}/unpin").status_code == 200
    assert owner.put(f"{base}/policy", json={"keep_last": 2}).status_code == 200
    assert owner.post(f"{base}/prune?dry_run=1").status_code == 200  # changes nothing: no row
    prune = owner.post(f"{base}/prune")
    assert prune.status_code == 202
    burst(web, workers)
    download = owner.get(f"{base}/download/{run.archive}")
    assert download.status_code == 200
    size = len(download.get_data())
    download.close()
    assert owner.head(f"{base}/download/{run.archive}").status_code == 200  # no row
    ranged = owner.get(f"{base}/{run.archive}/file/README.md", headers={"Range": "bytes=0-4"})
    assert ranged.status_code == 206 and ranged.get_data() == b"a sma"
    job_id = owner.post(f"/runs/{run.runid}/rq/api/archive", json={}).get_json()["job_id"]
    canceled = owner.post(f"/rq/api/canceljob/{job_id}")
    assert canceled.get_json()["status"] == "canceled"

    rows = events(web, run)
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("pin", "done"), ("unpin", "done"), ("policy", "done"), ("prune", "accepted"),
        ("prune", "done"), ("download", "done"), ("download", "done"), ("archive", "accepted"),
        ("archive", "canceled"), ("cancel", "done"),
    ]  # fmt: skip
    assert rows[2]["detail"] == (
        '{"keep_daily": 0, "keep_last": 2, "keep_monthly": 0, "keep_weekly": 0}'
    )
    assert rows[3]["job_id"] == rows[4]["job_id"] == prune.get_json()["job_id"]
    assert rows[4]["bytes"] == 0 and rows[4]["detail"] is None  # one archive: nothing to remove
    assert (rows[5]["archive"], rows[5]["bytes"], rows[5]["detail"]) == (run.archive, size, None)
    assert (rows[6]["bytes"], rows[6]["detail"]) == (5, "file: README.md")
    # the queued job's end is recorded by the cancel that finished it, before the cancel's row
    assert rows[8]["job_id"] == job_id and rows[8]["detail"] == "Canceled by alice"
    assert rows[9]["job_id"] == job_id and rows[9]["detail"] == "canceled"


def test_anonymous_downloads_of_a_public_run_are_recorded_as_anonymous(web: WebEnv) -> None:
    run = web.new_run(public=True)
    response = web.as_role("anonymous").get(f"/runs/{run.runid}/archive/download/{run.archive}")
    assert response.status_code == 200
    response.get_data()
    response.close()
    assert brief(events(web, run)) == [("anonymous", "download", "done")]


def test_the_run_log_pages_newest_first_with_an_opaque_validated_cursor(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    for _ in range(5):
        assert owner.post(f"/runs/{run.runid}/archive/{run.archive}/pin").status_code == 200
    seen: list[int] = []
    url = f"/runs/{run.runid}/archive/audit?limit=2"
    cursors = []
    while True:
        body = owner.get(url).get_json()
        seen += [e["id"] for e in body["events"]]
        if body["next"] is None:
            break
        cursors.append(body["next"])
        url = f"/runs/{run.runid}/archive/audit?limit=2&cursor={body['next']}"
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    other = web.new_run()
    for bad in ("x", "1", cursors[0] + "A", "../.."):
        answer = owner.get(f"/runs/{run.runid}/archive/audit?cursor={bad}")
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_cursor"
    # a cursor of one run's log does not page another's
    stolen = owner.get(f"/runs/{other.runid}/archive/audit?cursor={cursors[0]}")
    assert stolen.status_code == 400
    for limit in ("0", "1001", "-1", "a"):
        assert owner.get(f"/runs/{run.runid}/archive/audit?limit={limit}").status_code == 400


def test_only_admins_read_every_runs_log(web: WebEnv) -> None:
    run = web.new_run()
    assert (
        web.as_role("owner").post(f"/runs/{run.runid}/archive/{run.archive}/pin").status_code == 200
    )
    body = web.as_role("admin").get("/audit?limit=1000").get_json()
    mine = [e for e in body["events"] if e["runid"] == run.runid]
    assert brief(mine) == [("alice", "pin", "done")]
    assert web.as_role("owner").get("/audit").status_code == 403
    assert web.as_role("anonymous").get("/audit").status_code == 401
    assert web.token_client("admin").get("/audit").status_code == 200


def test_a_locked_database_spools_the_row_the_answer_stands_and_the_next_write_replays_it(
    web: WebEnv,
) -> None:
    run = web.new_run()
    log: AuditLog = web.app.extensions["runarchive.audit"]
    database = web.app.config["DATABASE_URL"].removeprefix("sqlite:///")
    # Another process holds SQLite's write lock: the audit write waits RUNARCHIVE_AUDIT_WAIT
    # (5 s) and gives up.
    holder = subprocess.Popen(
        ["python3", "-c",
         "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(30)\n",
         database],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        pinned = web.as_role("owner").post(f"/runs/{run.runid}/archive/{run.archive}/pin")
        assert pinned.status_code == 200 and pinned.get_json()["pinned"] is True
        spooled = log.spooled()
        assert [(e.runid, e.action.value, e.outcome.value) for e in spooled][-1:] == [
            (run.runid, "pin", "done")
        ]
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    # Within RETRY_AFTER of a failure writes go straight to the spool (one slow request, not
    # all); after it, the next write replays the spool first.
    time.sleep(auditlog.RETRY_AFTER)
    assert (
        web.as_role("owner").post(f"/runs/{run.runid}/archive/{run.archive}/unpin").status_code
        == 200
    )
    rows = events(web, run)
    assert [(r["action"], r["outcome"]) for r in rows] == [("pin", "done"), ("unpin", "done")]
    assert rows[0]["id"] < rows[1]["id"] and log.spooled() == []
    assert log.replay() == 0  # nothing twice


def test_the_fork_hook_records_a_fork_as_the_fork_route_will(web: WebEnv) -> None:
    from runarchive.web.audit import record_action

    run = web.new_run()
    with web.app.test_request_context(
        "/", environ_base={"REMOTE_ADDR": "192.0.2.7"}
    ):  # fmt: skip
        record_action(AuditAction.FORK, run.runid, Outcome.ACCEPTED, archive=run.archive,
                      job_id="j1", detail="into run-copy")  # fmt: skip
    (row,) = events(web, run)
    assert (row["user"], row["remote_addr"], row["action"], row["outcome"]) == (
        "anonymous",
        "192.0.2.7",
        "fork",
        "accepted",
    )
    assert (row["archive"], row["job_id"], row["detail"]) == (run.archive, "j1", "into run-copy")


def _end_rows(web: WebEnv, job_id: str) -> list[tuple[str, str]]:
    """The job's end rows, read straight from the SQLite file (another connection)."""
    path = web.app.config["DATABASE_URL"].removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT action, outcome FROM audit_events WHERE job_id = ? AND event_id = ?",
            (job_id, f"end-{job_id}"),
        ).fetchall()
    finally:
        conn.close()
    return [(str(a), str(o)) for a, o in rows]


def test_the_jobs_end_row_exists_when_its_final_trigger_is_published(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    pubsub = web.ctx.clients.data.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(web.ctx.keys.status_channel(run.runid))
    try:
        job_id = web.as_role("owner").post(
            f"/runs/{run.runid}/rq/api/archive", json={}
        ).get_json()["job_id"]  # fmt: skip
        database = web.app.config["DATABASE_URL"]
        proc = workers.start("--burst", env={"RUNARCHIVE_DATABASE_URL": database})
        seen: list[tuple[str, str]] | None = None
        deadline = time.monotonic() + WORKER_TIMEOUT
        while seen is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message is None or message.get("type") != "message":
                continue
            if str(message["data"]).startswith(f"rq:{job_id} TRIGGER"):
                seen = _end_rows(web, job_id)  # read the moment the trigger arrives
        assert proc.wait(timeout=WORKER_TIMEOUT) == 0, workers.log_text()
    finally:
        pubsub.close()
    assert seen == [("archive", "done")]


def test_a_killed_work_horse_is_recorded_failed_by_its_worker(
    web: WebEnv, workers: Workers
) -> None:
    runid = f"run-big-{uuid.uuid4().hex[:8]}"
    make_many_files_run(web.runs_root, runid, 3000)
    with web.app.app_context():
        session = db().session
        grant_run(session, runid, require_user(session, "alice"))
    job_id = web.as_role("owner").post(f"/runs/{runid}/rq/api/archive", json={}).get_json()[
        "job_id"
    ]  # fmt: skip
    database = web.app.config["DATABASE_URL"]
    proc = workers.start("--burst", env={"RUNARCHIVE_DATABASE_URL": database})
    horses = wait_until(lambda: children(proc.pid), timeout=30, step=0.005)
    for pid in horses:
        os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer
    assert proc.wait(timeout=WORKER_TIMEOUT) == 0, workers.log_text()
    assert _end_rows(web, job_id) == [("archive", "failed")]
    rows = web.as_role("owner").get(f"/runs/{runid}/archive/audit").get_json()["events"]
    assert [(r["user"], r["outcome"]) for r in rows] == [("alice", "failed"), ("alice", "accepted")]
    assert "was killed" in rows[0]["detail"]


def test_the_address_is_the_peer_unless_a_proxy_is_trusted(web: WebEnv) -> None:
    run = web.new_run()
    forged = {"X-Forwarded-For": "6.6.6.6"}
    owner = web.token_client("owner")
    assert (
        owner.post(f"/runs/{run.runid}/archive/{run.archive}/pin", headers=forged).status_code
        == 200
    )
    # The same deployment behind one trusted proxy (RUNARCHIVE_PROXY_HOPS=1): its header counts.
    behind = create_app(
        {
            "TESTING": True,
            "JOBS_SETTINGS": web.settings,
            "WEB_SETTINGS": WebSettings(database_url=web.app.config["DATABASE_URL"], proxy_hops=1),
        }
    )
    try:
        client = behind.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {web.tokens['owner']}"
        proxied = {"X-Forwarded-For": "6.6.6.6, 198.51.100.4"}
        url = f"/runs/{run.runid}/archive/{run.archive}/unpin"
        assert client.post(url, headers=proxied).status_code == 200
    finally:
        shutdown(behind)
    assert [(r["action"], r["remote_addr"]) for r in events(web, run)] == [
        ("pin", "127.0.0.1"),
        ("unpin", "198.51.100.4"),
    ]


def test_an_app_starting_replays_what_was_spooled(web: WebEnv) -> None:
    run = web.new_run()
    url = web.app.config["DATABASE_URL"]
    spooler = AuditLog(url, web.settings.data_dir, wait=0.1)
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the database is locked while the event is recorded
    try:
        spooler.record(AuditEvent(user="ana", remote_addr="local", runid=run.runid,
                                  action=AuditAction.PIN, outcome=Outcome.DONE))  # fmt: skip
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        spooler.close()
    assert events(web, run) == []  # waiting in the spool
    started = create_app({"TESTING": True, "JOBS_SETTINGS": web.settings,
                          "WEB_SETTINGS": WebSettings(database_url=url)})  # fmt: skip
    shutdown(started)
    assert brief(events(web, run)) == [("ana", "pin", "done")]
    assert (web.settings.data_dir / auditlog.SPOOL_FILE).stat().st_size == 0


def test_the_prune_an_archive_job_runs_gets_its_own_row_before_the_archives_end(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    assert owner.put(f"/runs/{run.runid}/archive/policy", json={"keep_last": 1}).status_code == 200
    assert owner.post(f"/runs/{run.runid}/rq/api/archive", json={}).status_code == 202
    burst(web, workers)
    rows = events(web, run)
    assert brief(rows) == [
        ("alice", "policy", "done"), ("alice", "archive", "accepted"),
        ("alice", "prune", "done"), ("alice", "archive", "done"),
    ]  # fmt: skip
    prune, done = rows[2], rows[3]
    assert prune["job_id"] == done["job_id"] == rows[1]["job_id"]
    assert prune["detail"] == f"after archive; removed: {run.archive}"
    assert prune["bytes"] > 0 and prune["archive"] is None
    assert not (run.path / "archives" / str(run.archive)).exists()
