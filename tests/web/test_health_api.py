"""The scrub's health in the archive list, and the restore refusal of a damaged archive, as the
API answers them (real app, real Redis, real archives with a byte flipped)."""

from __future__ import annotations

import re
import zipfile

from runarchive.core import check_archive, open_run
from runarchive.jobs import running_job
from runarchive.jobs.health import record_result
from runarchive.web.openapi import document
from tests.support.runs import flip_entry_byte
from tests.support.tree import snapshot
from tests.support.web import Run, WebEnv

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _check(web: WebEnv, run: Run) -> None:
    assert run.archive is not None
    with open_run(run.path) as opened:
        result = check_archive(opened, run.archive)
    assert result is not None
    record_result(web.ctx, run.runid, result)


def _row(web: WebEnv, run: Run) -> dict[str, object]:
    body = web.as_role("owner").get(f"/runs/{run.runid}/archive/list").get_json()
    (row,) = [a for a in body["archives"] if a["name"] == run.archive]
    return dict(row)


def test_a_new_archive_lists_unchecked_then_ok_once_checked(web: WebEnv) -> None:
    run = web.new_run()
    row = _row(web, run)
    assert (row["health"], row["checked_at"], row["damage"]) == ("unchecked", None, None)
    _check(web, run)
    row = _row(web, run)
    assert row["health"] == "ok" and row["damage"] is None
    assert ISO_Z.match(str(row["checked_at"]))
    assert set(row) <= set(document()["components"]["schemas"]["Archive"]["properties"])


def test_a_damaged_archive_lists_damaged_naming_the_entry(web: WebEnv) -> None:
    run = web.new_run()
    assert run.archive is not None
    archive = run.path / "archives" / run.archive
    flip_entry_byte(archive, "output/H3.pass.dat", zipfile.ZIP_DEFLATED)
    _check(web, run)
    row = _row(web, run)
    assert row["health"] == "damaged"
    assert "'output/H3.pass.dat'" in str(row["damage"])
    assert row["readable"] is True  # the directory reads fine: only the data is damaged


def test_restore_of_a_damaged_archive_is_409_naming_the_damage_before_any_work(
    web: WebEnv,
) -> None:
    run = web.new_run()
    assert run.archive is not None
    flip_entry_byte(run.path / "archives" / run.archive, "output/H1.pass.dat", zipfile.ZIP_DEFLATED)
    _check(web, run)
    before = snapshot(run.path)
    owner = web.as_role("owner")
    for extra in ({}, {"paths": ["README.md"]}):
        response = owner.post(
            f"/runs/{run.runid}/rq/api/restore-archive",
            json={"archive_name": run.archive, **extra},
        )
        assert response.status_code == 409, response.get_data(as_text=True)
        message = response.get_json()["error"]["message"]
        assert f"Archive {run.archive} is damaged" in message
        assert "'output/H1.pass.dat'" in message
    assert running_job(web.ctx, run.runid) is None
    assert snapshot(run.path) == before
    # Deleting it is still possible (it is not pinned).
    deleted = owner.post(
        f"/runs/{run.runid}/rq/api/delete-archive", json={"archive_name": run.archive}
    )
    assert deleted.status_code == 200
    assert not (run.path / "archives" / run.archive).exists()
