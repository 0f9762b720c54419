"""A hostile run: its owner plants journals, links and odd files in our state and archives.

The attacker (mallory) can write anything into her own run, ``.runarchive/`` and
``archives/`` included; victor's run sits beside it in the same runs root. Every attack goes
through the product's app (real accounts, a real worker process on a real valkey) and through
the ``runarchive`` command run as its own process with a relative run dir. After each one the
victim's run, the files outside the runs root and the data dir are byte-identical, modes and
mtimes included, and no response or CLI output held a secret byte (``hostile_world``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.hardening.hostile_world import Outcome, World, deployment, world

__all__ = ["deployment", "world"]

JID = "a1b2c3d4e5f6"
Planter = Callable[[World], None]


def work(world: World) -> Path:
    """Where our lock and journal live: ``archives/.runarchive``."""
    folder = world.attacker / "archives" / ".runarchive"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def transient(world: World, name: str) -> Path:
    """A restore's transient folder, at the run's top."""
    return world.attacker / f".runarchive-{name}"


def write_journal(world: World, doc: dict[str, Any] | bytes) -> None:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    (work(world) / "journal.json").write_bytes(data)


def swapping(world: World, **fields: Any) -> dict[str, Any]:
    return {"id": JID, "archive": world.attacker_archive, "state": "swapping",
            "old": [], "new": [], "modes": {}, **fields}  # fmt: skip


def staging_id_climbs_to_the_victim(world: World) -> None:
    transient(world, "stage-x").mkdir()
    write_journal(world, {"id": f"x/../../../{world.victim_id}", "state": "staging"})


def old_names_the_victim(world: World) -> None:
    transient(world, f"old-{JID}").mkdir()
    write_journal(world, swapping(world, old=[f"../{world.victim_id}"]))


def new_names_the_victim(world: World) -> None:
    transient(world, f"stage-{JID}").mkdir()
    (work(world) / world.victim_id).mkdir()
    (work(world) / world.victim_id / "evil.txt").write_text("mallory was here\n")
    write_journal(world, swapping(world, new=[f"../{world.victim_id}"]))


def absolute_names(world: World) -> None:
    transient(world, f"stage-{JID}").mkdir()
    write_journal(world, swapping(world, old=[str(world.victim / "README.md")],
                                  new=[str(world.victim / "output")]))  # fmt: skip


def modes_setuid_an_outside_file(world: World) -> None:
    transient(world, f"stage-{JID}").mkdir()
    secret = str(world.dep.outside / "secret.txt")
    write_journal(world, swapping(world, modes={secret: 0o4755}))


def journal_is_a_link_to_a_planted_file(world: World) -> None:
    transient(world, "stage-x").mkdir()
    notes = world.attacker / "notes.txt"
    notes.write_text(json.dumps({"id": f"x/../../../{world.victim_id}", "state": "staging"}))
    (work(world) / "journal.json").symlink_to("../notes.txt")


def journal_is_a_link_to_the_secret(world: World) -> None:
    (work(world) / "journal.json").symlink_to(world.dep.outside / "secret.txt")


def state_folder_is_the_victims(world: World) -> None:
    state = work(world)
    (state / "lock").unlink()
    state.rmdir()
    state.symlink_to(f"../../{world.victim_id}/archives/.runarchive")


def stage_is_a_link_to_the_victim(world: World) -> None:
    transient(world, f"stage-{JID}").symlink_to(world.victim)
    write_journal(world, swapping(world, new=["output"]))


def old_is_a_link_to_the_victim(world: World) -> None:
    transient(world, f"old-{JID}").symlink_to(world.victim)
    transient(world, f"stage-{JID}").mkdir()
    write_journal(world, swapping(world, old=["empty"]))


JOURNAL_ATTACKS: list[Planter] = [
    staging_id_climbs_to_the_victim,
    old_names_the_victim,
    new_names_the_victim,
    absolute_names,
    modes_setuid_an_outside_file,
    journal_is_a_link_to_a_planted_file,
    journal_is_a_link_to_the_secret,
    state_folder_is_the_victims,
    stage_is_a_link_to_the_victim,
    old_is_a_link_to_the_victim,
]


def assert_refused_as_unsafe(outcome: Outcome) -> None:
    """Refused at once with 409 ``unsafe_run``, or a job that failed on ``UnsafeRun``."""
    if outcome.status == 202:
        assert outcome.trigger is not None and outcome.trigger.endswith("_FAILED"), outcome
        assert "UnsafeRun" in outcome.message, outcome.message[-2000:]
    else:
        assert (outcome.status, outcome.code) == (409, "unsafe_run"), outcome
        assert "nothing was changed" in outcome.message.lower(), outcome.message


def list_answers(world: World, who: str | None) -> Any:
    """The list answers (200 with the attacker's own archives, or a clear 409), never a 500."""
    response = world.as_user(who).get(world.url("archive/list"))
    assert response.status_code in (200, 409), response.get_data(as_text=True)[:500]
    body = response.get_json()
    if response.status_code == 200:
        assert [a["name"] for a in body["archives"]] == [world.attacker_archive]
    else:
        assert body["error"]["code"] == "unsafe_run"
    return response


@pytest.mark.slow
@pytest.mark.parametrize("plant", JOURNAL_ATTACKS, ids=lambda p: p.__name__)
def test_a_planted_journal_never_reaches_outside_the_attackers_run(
    world: World, plant: Planter
) -> None:
    (world.attacker / "PUBLIC").write_text("")
    plant(world)
    attacker_journal = os.path.lexists(work(world) / "journal.json")

    first = list_answers(world, "mallory")  # a list recovers a pending journal first
    world.assert_untouched()
    list_answers(world, None)  # an anonymous viewer of the public run
    if first.status_code == 200 and plant is staging_id_climbs_to_the_victim:
        assert first.get_json()["archives"][0]["readable"] is True

    for op, name in (("delete-archive", world.attacker_archive), ("archive", None),
                     ("restore-archive", world.attacker_archive)):  # fmt: skip
        assert_refused_as_unsafe(world.mutate(op, name))
        world.assert_untouched()
    recovered = world.cli("recover", world.rel_attacker)
    assert recovered.returncode == 1, recovered.stderr
    assert b"nothing was changed" in recovered.stderr.lower()
    assert b"Traceback" not in recovered.stderr

    world.assert_untouched()
    # Refused means refused: the attacker's journal and her archive are still where she left them.
    assert os.path.lexists(work(world) / "journal.json") == attacker_journal
    assert (world.attacker / "archives" / world.attacker_archive).is_file()


@pytest.mark.slow
def test_an_archive_or_restore_of_a_run_with_a_planted_journal_is_refused_at_once_with_409(
    world: World,
) -> None:
    staging_id_climbs_to_the_victim(world)
    for op, name in (("archive", None), ("restore-archive", world.attacker_archive)):
        outcome = world.mutate(op, name)
        world.assert_untouched()
        assert (outcome.status, outcome.code) == (409, "unsafe_run"), outcome


def archives_link_to_the_victims(world: World) -> None:
    archives = world.attacker / "archives"
    shutil.rmtree(archives)
    archives.symlink_to(f"../{world.victim_id}/archives")


@pytest.mark.slow
def test_archives_linked_to_the_victims_shows_serves_and_changes_none_of_them(
    world: World,
) -> None:
    archives_link_to_the_victims(world)
    mallory = world.as_user("mallory")
    listed = mallory.get(world.url("archive/list"))
    assert listed.status_code == 409
    assert listed.get_json()["error"]["code"] == "unsafe_run"
    assert "archives is a symbolic link" in listed.get_json()["error"]["message"]
    assert world.victim_archive not in listed.get_data(as_text=True)

    for method in (mallory.get, mallory.head):
        got = method(world.url(f"archive/download/{world.victim_archive}"))
        assert got.status_code in (404, 409)
        assert got.mimetype == "application/json"
        assert not got.get_data().startswith(b"PK")

    assert_refused_as_unsafe(world.mutate("archive"))
    assert_refused_as_unsafe(world.mutate("restore-archive", world.victim_archive))
    assert_refused_as_unsafe(world.mutate("delete-archive", world.victim_archive))
    for args in (("list",), ("archive",), ("delete", world.victim_archive),
                 ("restore", world.victim_archive)):  # fmt: skip
        done = world.cli(args[0], world.rel_attacker, *args[1:])
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert b"archives is a symbolic link" in done.stderr
    world.assert_untouched()


# --- odd files where our folders and files go -------------------------------------------------


@pytest.mark.slow
def test_archives_as_a_regular_file_is_reported_and_every_change_refused(world: World) -> None:
    archives = world.attacker / "archives"
    shutil.rmtree(archives)
    archives.write_bytes(b"not a folder")
    listed = world.as_user("mallory").get(world.url("archive/list"))
    assert listed.status_code == 409
    assert "archives is not a folder" in listed.get_json()["error"]["message"]
    assert_refused_as_unsafe(world.mutate("archive"))
    assert_refused_as_unsafe(world.mutate("delete-archive", world.attacker_archive))
    made = world.cli("archive", world.rel_attacker)
    assert made.returncode == 1 and b"archives is not a folder" in made.stderr
    assert archives.read_bytes() == b"not a folder"
    world.assert_untouched()


@pytest.mark.slow
def test_a_folder_named_like_a_temp_archive_is_left_alone_and_breaks_nothing(
    world: World,
) -> None:
    planted = world.attacker / "archives" / ".tmp-x.partial"
    planted.mkdir()
    (planted / "keep.txt").write_text("mine\n")
    listed = world.as_user("mallory").get(world.url("archive/list"))
    assert listed.status_code == 200
    assert [a["name"] for a in listed.get_json()["archives"]] == [world.attacker_archive]
    recovered = world.cli("recover", world.rel_attacker, "--json")
    assert recovered.returncode == 0, recovered.stderr
    made = world.mutate("archive")
    assert made.trigger == "ARCHIVE_COMPLETE", made
    assert (planted / "keep.txt").read_text() == "mine\n"
    world.assert_untouched()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dangling link out", "link to the secret", "fifo", "folder"])
def test_a_planted_lock_file_is_refused_and_creates_nothing_outside(
    world: World, kind: str
) -> None:
    lock = work(world) / "lock"
    lock.unlink()
    made_outside = world.dep.outside / f"made-by-mallory-{world.attacker_id}"
    if kind == "dangling link out":
        lock.symlink_to(made_outside)
    elif kind == "link to the secret":
        lock.symlink_to(world.dep.outside / "secret.txt")
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    for args in (("recover",), ("archive",), ("delete", world.attacker_archive)):
        done = world.cli(args[0], world.rel_attacker, *args[1:], timeout=30)
        assert done.returncode == 1, (args, done.stderr)
        assert b"archives/.runarchive/lock" in done.stderr
    assert_refused_as_unsafe(world.mutate("restore-archive", world.attacker_archive))
    assert not os.path.lexists(made_outside)
    world.assert_untouched()


@pytest.mark.slow
def test_a_huge_sparse_journal_is_refused_without_being_read(world: World) -> None:
    with (work(world) / "journal.json").open("wb") as out:
        out.truncate(100 << 20)  # 100 MiB of holes: costs no disk, would cost memory
    list_answers(world, "mallory")
    assert_refused_as_unsafe(world.mutate("delete-archive", world.attacker_archive))
    done = world.cli("recover", world.rel_attacker)
    assert done.returncode == 1 and b"larger than any journal" in done.stderr
    world.assert_untouched()


@pytest.mark.slow
def test_a_public_marker_that_is_a_link_does_not_make_the_run_public(world: World) -> None:
    (world.attacker / "PUBLIC").symlink_to(world.dep.outside / "secret.txt")
    anonymous = world.as_user(None)
    assert anonymous.get(world.url("archive/list")).status_code == 401
    got = anonymous.get(world.url(f"archive/download/{world.attacker_archive}"))
    assert got.status_code == 401 and not got.get_data().startswith(b"PK")
    world.assert_untouched()
