"""``runarchive pin``, ``unpin`` and ``prune`` as typed: real processes, exit codes, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runarchive.core import Policy, list_archives, set_run_policy
from tests.support.processes import run_cli
from tests.support.runs import copy_archives
from tests.support.tree import File, build_tree

STAMPS = [f"202602{d:02d}T080000Z" for d in range(1, 6)]


@pytest.fixture
def run(run_dir: Path) -> tuple[Path, list[str]]:
    build_tree(run_dir, {"wepp/H1.loss.dat": File(b"1 2 3\n" * 1000), "ron.nodb": File(b"{}")})
    return run_dir, copy_archives(run_dir, STAMPS)


def names_on_disk(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "archives").iterdir() if p.suffix == ".zip"}


def test_a_pinned_archive_cannot_be_deleted_until_unpinned(run: tuple[Path, list[str]]) -> None:
    run_dir, names = run
    pinned = run_cli("pin", run_dir, names[0], "--json")
    assert pinned.returncode == 0, pinned.stderr
    assert json.loads(pinned.stdout) == {"name": names[0], "pinned": True}
    listed = json.loads(run_cli("list", run_dir, "--json").stdout)["archives"]
    assert {a["name"]: a["pinned"] for a in listed}[names[0]] is True

    refused = run_cli("delete", run_dir, names[0], "--json")
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["error"] == {
        "code": "pinned",
        "message": f"Archive {names[0]} is pinned",
    }
    assert names[0] in names_on_disk(run_dir)

    unpinned = run_cli("unpin", run_dir, names[0])
    assert (unpinned.returncode, unpinned.stdout) == (0, f"Archive unpinned: {names[0]}\n")
    assert run_cli("delete", run_dir, names[0]).returncode == 0
    assert names[0] not in names_on_disk(run_dir)


def test_a_dry_run_says_what_would_go_and_removes_nothing(run: tuple[Path, list[str]]) -> None:
    run_dir, names = run
    assert run_cli("pin", run_dir, names[1]).returncode == 0
    dry = run_cli("prune", run_dir, "--keep-last", "2", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    size = (run_dir / "archives" / names[0]).stat().st_size
    assert json.loads(dry.stdout) == {
        "keep": [names[4], names[3], names[1]],
        "remove": [names[2], names[0]],
        "bytes_freed": 2 * size,
        "dry_run": True,
        "reasons": {names[4]: ["last"], names[3]: ["last"], names[1]: ["pinned"]},
    }
    assert names_on_disk(run_dir) == set(names)


def test_prune_removes_and_reports_like_restics_forget(run: tuple[Path, list[str]]) -> None:
    run_dir, names = run
    done = run_cli("prune", run_dir, "--keep-daily", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [
        "keep 3 archive(s):",
        f"  {names[4]}  (daily)",
        f"  {names[3]}  (daily)",
        f"  {names[2]}  (daily)",
    ]
    assert lines[4:7] == ["removed 2 archive(s):", f"  {names[1]}", f"  {names[0]}"]
    assert lines[7].startswith("freed ")
    assert names_on_disk(run_dir) == set(names[2:])
    assert [i.name for i in list_archives(run_dir)] == names[:1:-1]


def test_without_options_the_runs_policy_then_the_site_default_applies_else_nothing(
    run: tuple[Path, list[str]],
) -> None:
    run_dir, names = run
    kept_all = run_cli("prune", run_dir, "--json")
    assert kept_all.returncode == 0 and json.loads(kept_all.stdout)["remove"] == []
    site = run_cli("prune", run_dir, "--dry-run", "--json", RUNARCHIVE_KEEP_LAST="1")
    assert json.loads(site.stdout)["keep"] == [names[4]]
    set_run_policy(run_dir, Policy(keep_last=4))
    own = run_cli("prune", run_dir, "--json", RUNARCHIVE_KEEP_LAST="1")
    assert json.loads(own.stdout)["remove"] == [names[0]]
    assert names_on_disk(run_dir) == set(names[1:])


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--keep-last", "-1"], {}),
        (["--keep-weekly", "x"], {}),
        ([], {"RUNARCHIVE_KEEP_DAILY": "lots"}),
    ],
)
def test_bad_counts_are_usage_errors_and_remove_nothing(
    run: tuple[Path, list[str]], args: list[str], env: dict[str, str]
) -> None:
    run_dir, names = run
    answer = run_cli("prune", run_dir, *args, **env)
    assert answer.returncode == 2, answer.stdout + answer.stderr
    assert names_on_disk(run_dir) == set(names)


def test_with_redis_a_held_nodb_lock_refuses_the_prune(
    run: tuple[Path, list[str]], redis_url: str
) -> None:
    from runarchive.jobs import JobsContext, Settings, acquire_lock, release_lock

    run_dir, names = run
    with JobsContext.from_settings(Settings(redis_url=redis_url)) as ctx:
        token = acquire_lock(ctx.clients.locks, run_dir.name, "ron.nodb", owner="host", ttl=60)
        assert token is not None
        try:
            refused = run_cli("prune", run_dir, "--keep-last", "1", REDIS_URL=redis_url)
        finally:
            release_lock(ctx.clients.locks, run_dir.name, "ron.nodb", token)
    assert refused.returncode == 3, refused.stderr
    assert "Cannot prune while files are locked: ron.nodb" in refused.stderr
    assert names_on_disk(run_dir) == set(names)


def test_archive_applies_the_runs_policy_after_the_new_archive(
    run: tuple[Path, list[str]],
) -> None:
    run_dir, names = run
    set_run_policy(run_dir, Policy(keep_last=2))
    made = run_cli("archive", run_dir, "-c", "newest", "--json")
    assert made.returncode == 0, made.stderr
    body = json.loads(made.stdout)
    assert body["pruned"] == names[:4]  # oldest first; the new one and the newest copy stay
    assert names_on_disk(run_dir) == {body["name"], names[4]}
    text = run_cli("archive", run_dir)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[-1] == f"Archive pruned: {names[4]}"


def test_a_failing_prune_after_archive_is_a_warning_and_the_archive_stands(
    run: tuple[Path, list[str]],
) -> None:
    run_dir, names = run
    (run_dir / "archives" / ".runarchive" / "pins.json").write_text("planted")
    made = run_cli("archive", run_dir, "--json", RUNARCHIVE_KEEP_LAST="1")
    assert made.returncode == 0, made.stderr
    body = json.loads(made.stdout)
    assert body["pruned"] == []
    assert any(w.startswith("prune failed (the archive is kept):") for w in body["warnings"])
    assert names_on_disk(run_dir) == {*names, body["name"]}
