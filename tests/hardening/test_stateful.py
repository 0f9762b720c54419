"""A Hypothesis state machine driving the whole service through its HTTP API and a real worker.

Each example gets a fresh run; rules archive, restore, delete and list through the Flask app (as
the owner's API token), take and release the host application's NoDb lock in Redis, and edit
files of the run directly, as a user of the host application would; one rule restores while
SIGKILLing the worker's work horse (the OOM killer's way), another archives while the whole
worker dies and a new one starts after a random delay (maybe after RQ expired its records).
A real ``runarchive worker`` runs the jobs. The model is small: the archives the run should
have (each with the snapshot of the run it was made from), the snapshot the run should equal,
and whether the lock is held.

Invariants after every step: the list shows exactly the model's archives, all readable (never a
partial one), no job holds the run; the run equals the last restored archive plus later edits
(or, without a restore, the edits alone); every job ended with exactly one final trigger; a second
job for a run that already has one is refused (``job_running``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from runarchive.jobs.lines import parse_line
from runarchive.jobs.locks import acquire_lock, release_lock
from runarchive.jobs.vocabulary import Event
from tests.support.tree import snapshot
from tests.support.web import Browser, Run, WebEnv
from tests.support.workers import Workers, children

pytestmark = pytest.mark.slow
STATS: list[int] = []  # jobs each example ran
EDITABLE = ("README.md", "output/H0.pass.dat", "notes/new.txt")


@pytest.fixture
def service(web: WebEnv, workers: Workers) -> Iterator[tuple[WebEnv, Workers]]:
    workers.start()  # one long-lived worker serves every example
    yield web, workers


def kill_work_horse(worker: subprocess.Popen[bytes], within: float) -> bool:
    """SIGKILL the worker's work horse (the OOM killer's way) if one shows up ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        horses = children(worker.pid)
        if horses:
            for pid in horses:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(0.002)
    return False


def make_machine(web: WebEnv, workers: Workers) -> type[RuleBasedStateMachine]:
    class Service(RuleBasedStateMachine):
        archives = Bundle("archives")

        def __init__(self) -> None:
            super().__init__()
            self.client: Browser = web.token_client("owner")
            self.run: Run | None = None
            self.model: dict[str, dict[str, tuple[object, ...]]] = {}
            self.expected: dict[str, tuple[object, ...]] = {}
            self.lock: str | None = None
            self.jobs: list[str] = []

        # --- helpers ------------------------------------------------------------------------

        @property
        def r(self) -> Run:
            assert self.run is not None
            return self.run

        def api(self, route: str, body: dict[str, str]) -> Any:
            return self.client.post(f"/runs/{self.r.runid}/rq/api/{route}", json=body)

        def wait(self, job_id: str) -> str:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                info = self.client.get(f"/rq/api/jobstatus/{job_id}").get_json()
                if info["trigger"] is not None:
                    self.jobs.append(job_id)
                    # the final marker is set just before the TRIGGER line is retained
                    while not self.triggers(job_id) and time.monotonic() < deadline:
                        time.sleep(0.02)
                    return str(info["trigger"])
                time.sleep(0.02)
            raise AssertionError(f"job {job_id} did not end: {workers.log_text()[-2000:]}")

        def triggers(self, job_id: str) -> list[str]:
            lines = [parse_line(x) for x in web.ctx.stream(self.r.runid).recent()]
            return [
                str(p.trigger) for p in lines if p.event is Event.TRIGGER and p.job_id == job_id
            ]

        def listed(self) -> list[dict[str, Any]]:
            response = self.client.get(f"/runs/{self.r.runid}/archive/list")
            assert response.status_code == 200
            body = response.get_json()
            assert body["in_progress"] is False
            return list(body["archives"])

        def refused_while_locked(self, response: Any) -> bool:
            if self.lock is None:
                return False
            assert response.status_code == 409
            assert response.get_json()["error"]["code"] == "locked"
            return True

        # --- rules --------------------------------------------------------------------------

        @initialize(target=archives)
        def start(self) -> str:
            self.run = web.new_run()
            assert self.r.archive is not None
            self.expected = snapshot(self.r.path, with_dir_times=False)
            self.model[self.r.archive] = dict(self.expected)
            return self.r.archive

        @rule(target=archives, comment=st.text(st.characters(categories=["L", "N"]), max_size=12))
        def archive(self, comment: str) -> str:
            before = {a["name"] for a in self.listed()}
            response = self.api("archive", {"comment": comment})
            if self.refused_while_locked(response):
                return "none"
            assert response.status_code == 202
            job_id = response.get_json()["job_id"]
            second = self.api("archive", {"comment": "second"})  # one job per run
            assert (
                second.status_code == 409
                or self.client.get(f"/rq/api/jobstatus/{job_id}").get_json()["trigger"] is not None
            )
            if second.status_code == 409:
                assert second.get_json()["error"]["code"] == "job_running"
            else:  # the first had already finished: the second is a job of its own
                assert second.status_code == 202
                self.wait(second.get_json()["job_id"])
            assert self.wait(job_id) == "ARCHIVE_COMPLETE"
            new = {a["name"] for a in self.listed()} - before
            assert len(new) in (1, 2)
            for name in new:
                self.model[name] = dict(self.expected)
            return sorted(new)[0]

        @rule(name=archives)
        def restore(self, name: str) -> None:
            if name not in self.model:
                return
            response = self.api("restore-archive", {"archive_name": name})
            if self.refused_while_locked(response):
                return
            assert response.status_code == 202
            assert self.wait(response.get_json()["job_id"]) == "RESTORE_COMPLETE"
            self.expected = dict(self.model[name])

        @rule(name=archives)
        def restore_while_the_work_horse_dies(self, name: str) -> None:
            if name not in self.model or self.lock is not None:
                return
            old, new = dict(self.expected), dict(self.model[name])
            response = self.api("restore-archive", {"archive_name": name})
            assert response.status_code == 202
            job_id = response.get_json()["job_id"]
            killed = kill_work_horse(workers.procs[-1], within=2.0)

            trigger = self.wait(job_id)
            assert trigger in ("RESTORE_COMPLETE", "RESTORE_FAILED")
            assert killed or trigger == "RESTORE_COMPLETE"
            # an interrupted swap is finished (or undone) by recovery: exactly old or new
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                now = snapshot(self.r.path, with_dir_times=False)
                if now in (old, new):
                    break
                self.listed()  # listing recovers an interrupted restore
                time.sleep(0.05)
            assert now in (old, new)
            assert now == new or trigger == "RESTORE_FAILED"
            self.expected = now

        @rule(delay=st.floats(0, 1.5), expire=st.booleans())
        def archive_while_the_worker_dies_and_restarts_later(
            self, delay: float, expire: bool
        ) -> None:
            """The whole worker dies mid-job; another starts after ``delay`` seconds, maybe
            after RQ's own records of the execution expired (their TTL, ended early)."""
            if self.lock is not None:
                return
            response = self.api("archive", {"comment": "dies"})
            assert response.status_code == 202
            job_id = response.get_json()["job_id"]
            worker = workers.procs[-1]
            # Once a work horse exists the whole worker dies with it: before the horse marked
            # the job started, while it runs, or while it publishes its end.
            horses = []
            deadline = time.monotonic() + 2.0
            while not horses and time.monotonic() < deadline:
                horses = children(worker.pid)
                time.sleep(0.002)
            killed = bool(horses)
            if not killed:
                assert self.wait(job_id) == "ARCHIVE_COMPLETE"
                self.model.update({a["name"]: dict(self.expected) for a in self.listed()
                                   if a["name"] not in self.model})  # fmt: skip
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            for pid in horses:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            worker.wait(timeout=10)
            if expire:
                rq = web.ctx.clients.rq
                for key in rq.scan_iter(match=f"rq:execution:{job_id}:*".encode()):
                    rq.delete(key)
            time.sleep(delay)
            workers.start()
            trigger = self.wait(job_id)
            assert trigger in ("ARCHIVE_FAILED", "ARCHIVE_COMPLETE")
            assert len(self.triggers(job_id)) == 1
            if trigger == "ARCHIVE_COMPLETE":
                for info in self.listed():
                    self.model.setdefault(info["name"], dict(self.expected))

        @rule(name=consumes(archives))
        def delete(self, name: str) -> None:
            if name not in self.model:
                return
            response = self.api("delete-archive", {"archive_name": name})
            if self.refused_while_locked(response):
                return
            assert response.status_code == 200
            del self.model[name]

        @rule()
        def list_archives(self) -> None:
            assert {a["name"] for a in self.listed()} == set(self.model)

        @precondition(lambda self: self.lock is None)
        @rule()
        def take_lock(self) -> None:
            token = acquire_lock(web.ctx.clients.locks, self.r.runid, "wepp.nodb", ttl=60)
            assert token is not None
            self.lock = token

        @precondition(lambda self: self.lock is not None)
        @rule()
        def release(self) -> None:
            assert self.lock is not None
            assert release_lock(web.ctx.clients.locks, self.r.runid, "wepp.nodb", self.lock)
            self.lock = None

        @rule(path=st.sampled_from(EDITABLE), data=st.binary(max_size=64))
        def edit(self, path: str, data: bytes) -> None:
            target = self.r.path / path
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(data)
            self.expected = snapshot(self.r.path, with_dir_times=False)

        # --- invariants ---------------------------------------------------------------------

        @invariant()
        def run_is_the_last_restore_plus_edits(self) -> None:
            if self.run is not None:
                assert snapshot(self.r.path, with_dir_times=False) == self.expected

        @invariant()
        def every_listed_archive_is_whole_and_known(self) -> None:
            if self.run is not None:
                shown = self.listed()
                assert {a["name"] for a in shown} == set(self.model)
                assert all(a["readable"] for a in shown)
                folder = self.r.path / "archives"
                assert [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")] == []

        @invariant()
        def every_job_ended_with_one_trigger(self) -> None:
            if self.run is None or not self.jobs:
                return
            for job_id in self.jobs[-3:]:  # the retained list is capped; recent jobs suffice
                assert len(self.triggers(job_id)) == 1, job_id

        def teardown(self) -> None:
            STATS.append(len(self.jobs))
            if self.lock is not None and self.run is not None:
                release_lock(web.ctx.clients.locks, self.r.runid, "wepp.nodb", self.lock)

    return Service


def test_the_service_keeps_its_invariants_under_random_operations(
    service: tuple[WebEnv, Workers], tmp_path: Path
) -> None:
    web, workers = service
    STATS.clear()
    machine = make_machine(web, workers)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=10,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
    slots = list(web.ctx.clients.data.scan_iter(f"{web.settings.key_prefix}:slot:*"))
    assert slots == []  # the queue drained and no slot stayed claimed
    assert sum(STATS) >= 5, STATS  # the machine really ran jobs, not only edits and lists
