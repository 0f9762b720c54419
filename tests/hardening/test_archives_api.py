"""Hostile archives dropped into ``<run>/archives/`` by hand, then restored through the API.

The core's corpus (``tests/core/test_malicious.py``, built byte by byte with ``_zipcraft``) is
replayed end to end: the archive is copied into a real run of the web deployment, an owner asks
for a restore over HTTP, a real worker runs the job. Each must end ``RESTORE_FAILED`` with the
core's reason in the job's traceback and in the run's ``Error:`` status line, exactly one final
trigger, and the run, its archives and everything around it unchanged byte for byte.

Decisions pinned here:

* **Case-colliding names** (``Data.txt`` and ``data.txt``) are two different files on the
  case-sensitive filesystems runs live on: the archive is not hostile, both are restored with
  their own bytes and neither overwrites the other. (On a case-insensitive filesystem the
  duplicate check would see one path twice; we do not support runs on such filesystems.)
* **Huge zip comments** (up to 64 KiB, control characters, invalid UTF-8) are cut to the
  40 characters the dashboard shows, control characters replaced, in the list.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from runarchive.jobs.lines import parse_line
from runarchive.jobs.vocabulary import Event
from tests.core.test_malicious import CASES, TOKEN, Case
from tests.support.journal import leftovers
from tests.support.tree import snapshot, tree_bytes
from tests.support.web import Run, WebEnv
from tests.support.workers import Workers
from tests.support.zipcraft import ZipBuilder, build_zip, file, folder

STAMP = "20240102T030405Z"
# the core tests' own custom-limit cases need limits a worker does not take from a request
API_CASES = [c for c in CASES if c.limits is None]


@dataclass
class Attempt:
    case: Case
    run: Run
    name: str
    before: dict[str, object]
    archives: dict[str, bytes]
    response: tuple[int, dict[str, object]]


def hostile_name(run: Run) -> str:
    return f"{run.runid}.{STAMP}.zip"


def plant(run: Run, data: bytes, name: str | None = None) -> str:
    name = name or hostile_name(run)
    (run.path / "archives" / name).write_bytes(data)
    return name


def restore(web: WebEnv, run: Run, name: str) -> tuple[int, dict[str, object]]:
    response = web.token_client("owner").post(
        f"/runs/{run.runid}/rq/api/restore-archive", json={"archive_name": name}
    )
    return response.status_code, response.get_json()


def triggers(web: WebEnv, runid: str, job_id: str) -> list[str]:
    lines = [parse_line(x) for x in web.ctx.stream(runid).recent()]
    return [str(p.trigger) for p in lines if p.event is Event.TRIGGER and p.job_id == job_id]


def errors(web: WebEnv, runid: str) -> list[str]:
    return [x for x in web.ctx.stream(runid).recent() if x.startswith("Error: ")]


def escaped(root: Path) -> list[str]:
    places = [Path("/"), Path("/tmp"), Path("/etc"), root, root.parent]
    found = [str(p / n) for p in places for n in os.listdir(p) if TOKEN in n]
    for dirpath, dirnames, filenames in os.walk(root):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames if TOKEN in n]
    return found


@pytest.mark.slow
def test_every_hostile_archive_restored_through_the_api_fails_and_changes_nothing(
    web: WebEnv, workers: Workers
) -> None:
    attempts: list[Attempt] = []
    for case in API_CASES:
        run = web.new_run()
        variant = "manifest" in case.variants
        name = plant(run, case.build(variant))
        before = snapshot(run.path)
        archives = tree_bytes(run.path / "archives")
        attempts.append(Attempt(case, run, name, before, archives, restore(web, run, name)))
    assert workers.burst() == 0

    problems: dict[str, str] = {}
    owner = web.token_client("owner")
    for a in attempts:
        status, body = a.response
        if status != 202:
            problems[a.case.id] = f"enqueue answered {status} {body}"
            continue
        job_id = str(body["job_id"])
        info = owner.get(f"/rq/api/jobinfo/{job_id}").get_json()
        said = errors(web, a.run.runid)
        if info["trigger"] != "RESTORE_FAILED":
            problems[a.case.id] = f"trigger {info['trigger']}"
        elif not re.search(a.case.match, info["exc_info"] or ""):
            problems[a.case.id] = f"traceback lacks {a.case.match!r}: {info['exc_info'][-300:]}"
        elif not any(re.search(a.case.match, line) for line in said):
            problems[a.case.id] = f"no Error line matching {a.case.match!r}: {said}"
        elif triggers(web, a.run.runid, job_id) != ["RESTORE_FAILED"]:
            problems[a.case.id] = f"triggers {triggers(web, a.run.runid, job_id)}"
        elif snapshot(a.run.path) != a.before:
            problems[a.case.id] = "run changed"
        elif tree_bytes(a.run.path / "archives") != a.archives:
            problems[a.case.id] = "archives changed"
        elif leftovers(a.run.path):
            problems[a.case.id] = f"left behind {leftovers(a.run.path)}"
        listing = owner.get(f"/runs/{a.run.runid}/archive/list").get_json()
        if listing["in_progress"]:
            problems[a.case.id] = "slot still claimed"
    assert problems == {}
    assert escaped(web.runs_root) == []
    assert len(attempts) >= 50


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_archive_lists_as_unreadable_and_is_refused(
    web: WebEnv, workers: Workers, keep: float
) -> None:
    run = web.new_run()
    whole = build_zip([file("a.txt", b"a" * 5000), file("b.txt", b"b" * 5000)])
    name = plant(run, whole[: int(len(whole) * keep)])
    before = snapshot(run.path)
    owner = web.token_client("owner")
    listing = owner.get(f"/runs/{run.runid}/archive/list")
    assert listing.status_code == 200
    shown = {a["name"]: a for a in listing.get_json()["archives"]}
    assert shown[name]["readable"] is False
    assert shown[run.archive]["readable"] is True  # the good archive beside it still lists
    status, body = restore(web, run, name)
    assert status == 202
    assert workers.burst() == 0
    info = owner.get(f"/rq/api/jobinfo/{body['job_id']}").get_json()
    assert info["trigger"] == "RESTORE_FAILED"
    assert snapshot(run.path) == before


def test_case_colliding_names_both_restore_and_neither_overwrites(
    web: WebEnv, workers: Workers
) -> None:
    run = web.new_run()
    name = plant(
        run,
        build_zip(
            [
                folder("out"),
                file("out/Data.txt", b"upper\n"),
                file("out/data.txt", b"lower\n"),
                file("README", b"r\n"),
                file("readme", b"R\n"),
            ]
        ),
    )
    status, body = restore(web, run, name)
    assert status == 202
    assert workers.burst() == 0
    info = web.token_client("owner").get(f"/rq/api/jobstatus/{body['job_id']}").get_json()
    assert info["trigger"] == "RESTORE_COMPLETE"
    got = tree_bytes(run.path)
    assert got["out/Data.txt"] == b"upper\n"
    assert got["out/data.txt"] == b"lower\n"
    assert got["README"] == b"r\n"
    assert got["readme"] == b"R\n"


def test_a_huge_zip_comment_does_not_break_the_list_and_is_shown_cut(web: WebEnv) -> None:
    run = web.new_run()
    zb = ZipBuilder()
    zb.add(file("a.txt"))
    comment = (b"<script>alert(1)</script>\x1b[31m\x00\xff\xfe" * 3000)[:65535]
    name = plant(run, zb.finish(comment=comment))
    listing = web.token_client("owner").get(f"/runs/{run.runid}/archive/list")
    assert listing.status_code == 200
    assert len(listing.get_data()) < 4096
    shown = {a["name"]: a for a in listing.get_json()["archives"]}[name]
    assert shown["readable"] is True
    assert len(shown["comment"]) == 41 and shown["comment"].endswith("\u2026")
    assert shown["comment"].startswith("<script>alert(1)</script>")
    assert not any(ord(c) < 32 for c in shown["comment"])
