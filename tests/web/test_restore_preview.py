"""The restore preview a confirm shows: what a restore (whole, or of chosen paths) would
restore, change and remove, counted from the diff the restore would plan, or why it would be
refused now. Every count is checked against the edits the test made; nothing is changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runarchive.jobs import acquire_lock, enqueue_archive, release_lock, running_job
from tests.support.web import Run, WebEnv

HILLSLOPE = len("hillslope 0\n" * 200)  # each output/H<i>.pass.dat of the small run


def _edit(run: Run) -> None:
    """Since the archive: one file deleted, two changed, two created."""
    (run.path / "output" / "H0.pass.dat").unlink()
    h1 = run.path / "output" / "H1.pass.dat"
    h1.write_bytes(h1.read_bytes()[::-1])  # same size, other bytes: proven by its sha256
    (run.path / "README.md").write_text("a small run, edited\n")
    (run.path / "new-since.txt").write_text("made after the archive\n")
    (run.path / "output" / "later.dat").write_bytes(b"z" * 3000)


def _url(run: Run, *paths: str) -> str:
    query = "&".join(f"path={p}" for p in paths)
    return f"/runs/{run.runid}/archive/{run.archive}/restore-preview" + (
        f"?{query}" if query else ""
    )


def test_the_preview_of_a_whole_restore_counts_each_edit_made_since_the_archive(
    web: WebEnv,
) -> None:
    run = web.new_run()
    _edit(run)
    body = web.as_role("owner").get(_url(run)).get_json()
    assert body == {
        "name": run.archive,
        "paths": None,
        "restores": {"files": 1, "bytes": HILLSLOPE},
        "changes": {"files": 2, "bytes": HILLSLOPE + len("a small run\n")},
        "removes": {"files": 2, "bytes": 3000 + len("made after the archive\n")},
        "unchanged": 4,  # H2, H3, H4 and wepp.nodb
        "sample": ["new-since.txt", "output/later.dat"],
    }
    assert not (run.path / "output" / "H0.pass.dat").exists()  # a preview changes nothing
    assert (run.path / "new-since.txt").is_file()


def test_the_preview_of_chosen_paths_counts_only_what_lies_within_them(web: WebEnv) -> None:
    run = web.new_run()
    _edit(run)
    owner = web.as_role("owner")
    folder = owner.get(_url(run, "output/")).get_json()
    assert folder["paths"] == ["output/"]
    assert folder["restores"] == {"files": 1, "bytes": HILLSLOPE}
    assert folder["changes"] == {"files": 1, "bytes": HILLSLOPE}
    assert folder["removes"] == {"files": 1, "bytes": 3000}
    assert folder["sample"] == ["output/later.dat"]
    assert folder["unchanged"] == 3
    both = owner.get(_url(run, "README.md", "output/H0.pass.dat")).get_json()
    assert both["paths"] == ["README.md", "output/H0.pass.dat"]
    assert both["restores"] == {"files": 1, "bytes": HILLSLOPE}
    assert both["changes"] == {"files": 1, "bytes": len("a small run\n")}
    assert both["removes"] == {"files": 0, "bytes": 0} and both["sample"] == []
    assert both["unchanged"] == 0
    same = owner.get(_url(run, "wepp.nodb")).get_json()
    assert (same["restores"]["files"], same["changes"]["files"], same["unchanged"]) == (0, 0, 1)


def test_a_preview_refuses_paths_a_restore_would_refuse_before_any_work(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    for path, words in (
        ("output/nope.dat", "is not in archive"),
        ("README.md/", "not a folder"),
        ("../etc/passwd", "Invalid path"),
        ("archives/", "reserved archives/ folder"),
        ("/etc", "Invalid path"),
    ):
        response = owner.get(_url(run, path))
        assert response.status_code == 400, path
        error = response.get_json()["error"]
        assert error["code"] == "invalid_input" and words in error["message"], error


def test_a_preview_while_locked_busy_read_only_or_damaged_says_so(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    token = acquire_lock(web.ctx.clients.locks, run.runid, "wepp.nodb", ttl=60)
    assert token is not None
    try:
        locked = owner.get(_url(run))
        assert locked.status_code == 409
        assert locked.get_json()["error"]["locked_files"] == ["wepp.nodb"]
    finally:
        release_lock(web.ctx.clients.locks, run.runid, "wepp.nodb", token)
    job_id = enqueue_archive(web.ctx, run.runid, "holds the run")
    busy = owner.get(_url(run))
    assert busy.status_code == 409
    error = busy.get_json()["error"]
    assert error["code"] == "job_running" and job_id in error["message"]
    assert running_job(web.ctx, run.runid) is not None  # a preview claims and frees nothing


def test_a_preview_of_a_read_only_run_or_a_damaged_archive_is_refused(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    (run.path / "READONLY").write_text("")
    refused = owner.get(_url(run))
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (409, "read_only")
    os.unlink(run.path / "READONLY")
    assert owner.get(_url(run)).status_code == 200  # planned once, and kept for this file
    damaged = run.path / "archives" / str(run.archive)
    damaged.write_bytes(damaged.read_bytes()[:-30])  # truncated: no end of central directory
    broken = owner.get(_url(run))  # another file now (its ctime moved): planned again
    assert broken.status_code == 409
    assert broken.get_json()["error"]["code"] == "invalid_archive"
    assert owner.get(f"/runs/{run.runid}/archive/nope.zip/restore-preview").status_code == 404


def test_a_preview_never_follows_a_link_planted_in_the_run(web: WebEnv, tmp_path: Path) -> None:
    run = web.new_run()
    outside = tmp_path / "outside"
    shutil.copytree(run.path / "output", outside)  # the same bytes, outside the run
    shutil.rmtree(run.path / "output")
    (run.path / "output").symlink_to(outside)
    before = sorted((p.name, p.read_bytes()) for p in outside.iterdir())
    owner = web.as_role("owner")

    whole = owner.get(_url(run)).get_json()
    # Seen as what it is, a link where the archive has a folder: the folder's five files are
    # restored (into a real folder), the link is changed; nothing behind it counts as the same.
    assert whole["restores"] == {"files": 5, "bytes": 5 * HILLSLOPE}
    assert whole["changes"] == {"files": 1, "bytes": 0}
    assert whole["removes"] == {"files": 0, "bytes": 0}
    beneath = owner.get(_url(run, "output/H0.pass.dat"))
    assert beneath.status_code == 400
    assert "is not a folder in the run" in beneath.get_json()["error"]["message"]
    assert sorted((p.name, p.read_bytes()) for p in outside.iterdir()) == before
    assert (run.path / "output").is_symlink()
