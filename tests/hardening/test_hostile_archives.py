"""A hostile run's archives and names: bombs, lies about integrity, ambiguous zips, odd names.

Same world as ``test_hostile_run`` (victor's run beside mallory's, secrets around them, a real
worker on a real valkey, the CLI as its own process with a relative run dir). Here mallory
plants archives under valid names in her own ``archives/``, sends names and comments with
hidden characters, and swaps her folders for links while jobs run.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runarchive.core import create_archive
from tests.hardening.hostile import (
    full_snapshot,
    json_out,
    make_victim_run,
    unblock_fifo,
    within,
)
from tests.hardening.hostile_world import (
    Deployment,
    World,
    deployment,
    make_world,
    start_deployment,
    stop_deployment,
    world,
)
from tests.support.tree import archive_files, snapshot
from tests.support.workers import WORKER_CMD, worker_env
from tests.support.zipcraft import (
    DEFLATED,
    EOCD,
    Member,
    ZipBuilder,
    build_zip,
    deflate,
    file,
    manifest_for,
)

__all__ = ["deployment", "world"]

pytestmark = pytest.mark.slow

STAMP = "20240102T030405Z"


def planted_name(world: World, seq: str = "") -> str:
    return f"{world.attacker_id}.{STAMP}{seq}.zip"


def plant(world: World, data: bytes, seq: str = "") -> str:
    name = planted_name(world, seq)
    (world.attacker / "archives" / name).write_bytes(data)
    return name


def members_of_the_attacker(world: World, count: int = 2) -> list[Member]:
    return [file(f"output/f{i}.txt", f"mallory {i}\n".encode()) for i in range(count)]


def valid_zip(world: World, members: list[Member], *, junk: bytes = b"",
              comment: bytes = b"") -> bytes:  # fmt: skip
    """A zip as runarchive writes one for the attacker's run, plus ``junk`` and ``comment``."""
    zb = ZipBuilder()
    zb.body += junk
    for m in members:
        zb.add(m)
    zb.add(manifest_for(members, lambda doc: doc.update(run_id=world.attacker_id)))
    return zb.finish(comment)


def refused_restore(
    world: World, name: str, *words: str, env: dict[str, str] | None = None
) -> None:
    """Restore ``name`` through the API (a real worker) and the CLI; both must refuse.

    The attacker's own run content is unchanged too, and no stage is left behind.
    """
    before = snapshot(world.attacker)
    outcome = world.mutate("restore-archive", name)
    assert outcome.trigger == "RESTORE_FAILED", outcome
    for word in words:
        assert word in outcome.message, outcome.message[-1500:]
    done = world.cli("restore", world.rel_attacker, name, **(env or {}))
    assert done.returncode == 1, done.stderr
    for word in words:
        assert word.encode() in done.stderr, done.stderr
    assert snapshot(world.attacker) == before
    assert not [n for n in os.listdir(world.attacker) if n.startswith(".runarchive-stage-")]
    world.assert_untouched()


# --- 5. bombs and the free-space reserve ------------------------------------------------------


def test_a_whole_archive_zip_bomb_of_small_entries_is_refused_naming_the_ratio(
    world: World,
) -> None:
    size = (1 << 20) - 4096  # under 1 MiB each: no single entry passes the per-entry check
    zeros = bytes(size)
    payload = deflate(zeros)
    members = [Member(f"bomb/{i:03d}.dat", zeros, method=DEFLATED, payload=payload)
               for i in range(400)]  # fmt: skip
    data = build_zip(members, patch=lambda doc: doc.update(run_id=world.attacker_id))
    assert 400 * size / len(data) > 900  # about 1000:1 overall
    name = plant(world, data)
    refused_restore(world, name, "500:1 over the whole archive", "zip bomb")


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Deployment]:
    """A deployment of its own whose workers keep an impossible free-space reserve."""
    dep = start_deployment(tmp_path_factory.mktemp("tight"), redis_url)
    try:
        yield dep
    finally:
        stop_deployment(dep)


def test_a_restore_that_would_eat_into_the_free_space_reserve_says_what_is_needed_and_free(
    tight: Deployment,
) -> None:
    world = make_world(tight)
    reserve = {"RUNARCHIVE_RESERVE_BYTES": str(1 << 50)}
    (world.attacker / "README.md").write_text("changed since the archive\n")
    before = snapshot(world.attacker)
    job_id = (
        world.as_user("mallory")
        .post(world.url("rq/api/restore-archive"), json={"archive_name": world.attacker_archive})
        .get_json()["job_id"]
    )
    worker = subprocess.run([*WORKER_CMD, "--burst"], env={**worker_env(tight.settings), **reserve},
                            capture_output=True, timeout=90)  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-2000:]
    info = world.as_user("mallory").get(f"/rq/api/jobinfo/{job_id}").get_json()
    assert info["trigger"] == "RESTORE_FAILED"
    for text in (
        info["exc_info"],
        world.cli("restore", world.rel_attacker, world.attacker_archive, **reserve).stderr.decode(),
    ):
        assert "Not enough disk space to restore the archive" in text, text[-1500:]
        assert "needed (keeping 1024.0 TiB in reserve)" in text and " free." in text
    assert snapshot(world.attacker) == before
    world.assert_untouched()


# --- 6. integrity of what a restore reuses ----------------------------------------------------


def central_record(data: bytes, name: bytes) -> int:
    """Return the offset of ``name``'s central-directory record."""
    eocd = data.rindex(b"PK\x05\x06")
    count, _, offset = struct.unpack_from("<HII", data, eocd + 10)
    for _ in range(count):
        n, e, c = struct.unpack_from("<HHH", data, offset + 28)
        if data[offset + 46 : offset + 46 + n] == name:
            return offset
        offset += 46 + n + e + c
    raise AssertionError(f"{name!r} not in the central directory")


@pytest.fixture
def stored(world: World) -> tuple[str, Path]:
    """An archive of the attacker's run with a stored (not deflated) binary file in it."""
    (world.attacker / "map.png").write_bytes(os.urandom(8192))
    name = create_archive(world.attacker, "with a map").name
    with zipfile.ZipFile(world.attacker / "archives" / name) as zf:
        assert zf.getinfo("map.png").compress_type == zipfile.ZIP_STORED
    return name, world.attacker / "archives" / name


def test_a_central_crc_that_disagrees_with_the_run_file_refuses_the_restore_as_damaged(
    world: World, stored: tuple[str, Path]
) -> None:
    """The manifest's sha256 matches the run's copy, the central CRC-32 does not: no reuse."""
    name, path = stored
    data = bytearray(path.read_bytes())
    crc_at = central_record(bytes(data), b"map.png") + 16
    data[crc_at] ^= 0x01
    path.write_bytes(bytes(data))
    assert world.cli("verify", world.rel_attacker, name).returncode == 1
    refused_restore(world, name, "map.png")


def test_a_damaged_entry_is_never_restored_and_reuse_happens_only_for_proven_bytes(
    world: World, stored: tuple[str, Path]
) -> None:
    name, path = stored
    original = (world.attacker / "map.png").read_bytes()
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo("map.png").header_offset
    n, e = struct.unpack_from("<HH", data, local + 26)
    data[local + 30 + n + e + 100] ^= 0xFF  # one byte of the entry's data; CRC and sha kept
    path.write_bytes(bytes(data))
    verified = world.cli("verify", world.rel_attacker, name)
    assert verified.returncode == 1 and b"DAMAGED" in verified.stdout

    # The run's copy still equals the manifest's sha256 and the central CRC-32 and size, so
    # the restore may reuse it instead of reading the damaged bytes: success means the
    # proven bytes are in place, never the archive's damaged ones.
    done = world.cli("restore", world.rel_attacker, name, "--json")
    if done.returncode == 0:
        assert json_out(done)["reused"] >= 1
        assert (world.attacker / "map.png").read_bytes() == original
    else:
        assert done.returncode == 1 and b"damaged" in done.stdout.lower() + done.stderr.lower()

    # Once the run's copy differs, the entry must be extracted, and its damage refuses it.
    (world.attacker / "map.png").write_bytes(b"changed by the model since")
    refused_restore(world, name, "map.png")
    world.assert_untouched()


# --- 7. ambiguous zips, odd names, hidden characters, fifos -----------------------------------


def test_a_zip_with_prepended_bytes_is_refused_as_ambiguous(world: World) -> None:
    name = plant(world, valid_zip(world, members_of_the_attacker(world), junk=b"MZ" + bytes(510)))
    refused_restore(world, name, "ambiguous", "512 unexplained bytes before the first entry")


def test_a_zip_hiding_a_second_end_record_in_its_comment_is_refused_as_ambiguous(
    world: World,
) -> None:
    fake = EOCD.pack(0x06054B50, 0, 0, 0, 0, 0, 0, 0)
    name = plant(world, valid_zip(world, members_of_the_attacker(world), comment=fake))
    refused_restore(world, name, "ambiguous", "comment holds another end record")


@pytest.mark.parametrize("tail", ["%0A", "%0D%0A", "%00"])
def test_an_archive_name_with_a_trailing_line_break_is_a_400_never_a_500(
    world: World, tail: str
) -> None:
    mallory = world.as_user("mallory")
    raw = world.attacker_archive + {"%0A": "\n", "%0D%0A": "\r\n", "%00": "\x00"}[tail]
    for response in (
        mallory.get(world.url(f"archive/download/{world.attacker_archive}{tail}")),
        mallory.head(world.url(f"archive/download/{world.attacker_archive}{tail}")),
        mallory.post(world.url("rq/api/restore-archive"), json={"archive_name": raw}),
        mallory.post(world.url("rq/api/delete-archive"), json={"archive_name": raw}),
    ):
        assert response.status_code == 400, response.get_data(as_text=True)[:300]
    if tail != "%00":  # argv cannot hold a NUL
        for cmd in ("restore", "delete", "verify"):
            done = world.cli(cmd, world.rel_attacker, raw)
            assert done.returncode == 2 and b"Invalid archive name" in done.stderr, done.stderr
    assert (world.attacker / "archives" / world.attacker_archive).is_file()
    world.assert_untouched()


def test_a_run_id_with_a_trailing_line_break_is_a_400(world: World) -> None:
    mallory = world.as_user("mallory")
    for tail in ("%0A", "%0D"):
        for path in (
            f"/runs/{world.attacker_id}{tail}/archive/list",
            f"/runs/{world.victim_id}{tail}/archive/list",
            f"/runs/{world.attacker_id}{tail}/archive/download/{world.attacker_archive}",
        ):
            response = mallory.get(path)
            assert response.status_code == 400, (path, response.status_code)
            assert response.get_json()["error"]["code"] == "invalid_input"
        posted = mallory.post(f"/runs/{world.attacker_id}{tail}/rq/api/archive", json={})
        assert posted.status_code == 400
    world.assert_untouched()


def test_a_grant_on_a_two_character_run_id_does_not_reach_the_runs_in_that_shard(
    world: World,
) -> None:
    dep = world.dep
    shard = dep.runs / "ab"
    inner_id = f"ab-{uuid.uuid4().hex[:8]}"
    inner = make_victim_run(shard, inner_id)
    inner_archive = create_archive(inner, "sharded").name
    dep.grant(inner_id, "victor")
    dep.grant("ab", "mallory")
    world.before = world.protected()
    before = full_snapshot(shard)
    mallory = world.as_user("mallory")
    try:
        assert mallory.get("/runs/ab/archive/list").status_code == 404
        assert mallory.get(f"/runs/ab/archive/download/{inner_archive}").status_code == 404
        assert mallory.post("/runs/ab/rq/api/archive", json={}).status_code == 404
        restore = {"archive_name": inner_archive}
        assert mallory.post("/runs/ab/rq/api/restore-archive", json=restore).status_code == 404
        assert mallory.get(f"/runs/{inner_id}/archive/list").status_code == 403
        # the sharded run itself is found, for its owner
        listed = world.as_user("victor").get(f"/runs/{inner_id}/archive/list")
        assert [a["name"] for a in listed.get_json()["archives"]] == [inner_archive]
        assert full_snapshot(shard) == before
        world.assert_untouched()
    finally:
        shutil.rmtree(shard)


HIDDEN = {
    "bidi override": ("report\u202egnp.exe", "report\u202egnp.exe".encode()),
    "zero-width space": ("a\u200bb", "a\u200bb".encode()),
    "lone surrogate": ("x\ud800y", b"x\xed\xa0\x80y"),
}


@pytest.mark.parametrize("kind", HIDDEN)
def test_a_comment_with_hidden_characters_is_refused_up_front_and_runs_no_job(
    world: World, kind: str
) -> None:
    text, argv = HIDDEN[kind]
    before = sorted(os.listdir(world.attacker / "archives"))
    response = world.as_user("mallory").post(world.url("rq/api/archive"), json={"comment": text})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_input"
    assert "invisible or direction-changing" in response.get_json()["error"]["message"]
    done = world.cli("archive", world.rel_attacker, "--comment", argv)
    assert done.returncode == 2, done.stderr
    listed = world.as_user("mallory").get(world.url("archive/list")).get_json()
    assert listed["in_progress"] is False and listed["job_id"] is None
    assert sorted(os.listdir(world.attacker / "archives")) == before
    world.assert_untouched()


def test_a_fifo_in_the_run_or_at_an_archive_name_hangs_nothing(world: World) -> None:
    model_fifo = world.attacker / "output" / "H1.pass.dat"
    model_fifo.unlink()
    os.mkfifo(model_fifo)
    archive_fifo = world.attacker / "archives" / planted_name(world)
    os.mkfifo(archive_fifo)
    mallory = world.as_user("mallory")
    try:
        listed = within(20, lambda: mallory.get(world.url("archive/list")),
                        unblock_fifo(archive_fifo))  # fmt: skip
        assert listed.status_code == 200
        rows = {a["name"]: a for a in listed.get_json()["archives"]}
        assert rows[archive_fifo.name]["readable"] is False
        got = within(20, lambda: mallory.get(world.url(f"archive/download/{archive_fifo.name}")),
                     unblock_fifo(archive_fifo))  # fmt: skip
        assert got.status_code in (404, 409) and not got.get_data().startswith(b"PK")
        done = world.cli("archive", world.rel_attacker, "--json", timeout=30)
        assert done.returncode == 0, done.stderr
        made = json_out(done)
        assert any("H1.pass.dat" in s and "fifo" in s for s in made["skipped"]), made
        with zipfile.ZipFile(world.attacker / "archives" / made["name"]) as zf:
            assert "output/H1.pass.dat" not in zf.namelist()
        assert within(30, lambda: world.cli("list", world.rel_attacker, "--json", timeout=25),
                      unblock_fifo(archive_fifo)).returncode == 0  # fmt: skip
    finally:
        unblock_fifo(model_fifo)()
        unblock_fifo(archive_fifo)()
    world.assert_untouched()


# --- 8. links while jobs run, links out of the run ---------------------------------------------


def attacker_files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*")
            if p.is_file() and not p.is_symlink()
            and p.relative_to(run).parts[0] not in ("archives", ".runarchive")}  # fmt: skip


def test_a_subfolder_swapped_for_a_link_while_archiving_never_brings_outside_files_in(
    world: World,
) -> None:
    output = world.attacker / "output"
    for i in range(1500):
        (output / f"extra-{i:04d}.dat").write_bytes(b"m" * 64 + str(i).encode())
    own = attacker_files(world.attacker)
    real = world.attacker / "output.real"
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            os.rename(output, real)
            os.symlink(world.victim, output)
            time.sleep(0.002)
            os.unlink(output)
            os.rename(real, output)
            time.sleep(0.002)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    try:
        outcomes = [world.mutate("archive") for _ in range(5)]
    finally:
        stop.set()
        thread.join(10)
    assert all(o.trigger in ("ARCHIVE_COMPLETE", "ARCHIVE_FAILED") for o in outcomes), outcomes
    archives = sorted((world.attacker / "archives").glob("*.zip"))
    assert len(archives) >= 2
    for path in archives:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                body = zf.read(info)
                world.dep.secrets.check(body, f"{path.name}:{info.filename}")
                if info.is_dir() or info.filename.startswith(".runarchive/"):
                    continue
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    assert body == str(world.victim).encode(), info.filename
                    continue
                rel = info.filename.replace("output.real/", "output/")
                assert own.get(rel) == body, info.filename
    world.assert_untouched()


def test_links_to_etc_passwd_are_archived_as_links_and_never_restored_or_served_as_content(
    world: World,
) -> None:
    passwd = Path("/etc/passwd").read_bytes()
    world.dep.secrets.add(passwd[:64])
    (world.attacker / "passwd").symlink_to("/etc/passwd")
    (world.attacker / "output" / "victims").symlink_to(world.victim / "output" / "H0.pass.dat")
    made = world.mutate("archive")
    assert made.trigger == "ARCHIVE_COMPLETE", made
    (name,) = set(archive_files(world.attacker / "archives")) - {world.attacker_archive}
    got = world.as_user("mallory").get(world.url(f"archive/download/{name}"))
    assert got.status_code == 200 and got.get_data().startswith(b"PK")
    with zipfile.ZipFile(world.attacker / "archives" / name) as zf:
        assert zf.read("passwd") == b"/etc/passwd"
    (world.attacker / "passwd").unlink()
    refused_restore(world, name, "points outside the run")
    assert not (world.attacker / "passwd").exists()
