"""Inside an archive over HTTP: folder listings, one file's bytes (ranges, ETag), diffs.

Real runs, real archives made by the core, a real app; the damage mid-stream test drives a
real threaded server over a socket, since only a real connection can be cut.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runarchive.core import create_archive
from tests.support.tree import File, Link, build_tree
from tests.support.web import LiveServer, Run, WebEnv

NOISE = random.Random(14).randbytes(3_000_000)  # incompressible: stored, read in 3 pieces
TEXT = b"".join(b"line %d of the loss file\n" % i for i in range(4000))  # deflated


def archived(web: WebEnv, spec: dict[str, Any] | None = None) -> Run:
    """A run of the owner with ``spec`` added to the small run, and an archive of it."""
    run = web.new_run(archive=False)
    build_tree(run.path, spec or {})
    run.archive = create_archive(run.path, "inside").name
    return run


def api(run: Run, tail: str) -> str:
    return f"/runs/{run.runid}/archive/{run.archive}/{tail}"


def flip(run: Run, needle: bytes) -> None:
    """Flip one byte of the archive's copy of ``needle`` (a planted fault, on disk)."""
    path = run.path / "archives" / str(run.archive)
    data = bytearray(path.read_bytes())
    data[data.index(needle)] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------ entries


def test_the_top_lists_folders_first_with_their_subtree_totals_then_files(web: WebEnv) -> None:
    run = archived(web, {"wepp/out/loss.txt": File(TEXT), "wepp/H1.dat": File(b"h1\n"),
                         "latest": Link("wepp/H1.dat")})  # fmt: skip
    body = web.as_role("owner").get(api(run, "entries")).get_json()
    paths = [row["path"] for row in body["entries"]]
    assert paths == ["empty", "output", "wepp", "README.md", "latest", "wepp.nodb"]
    assert body["total"] == 6 and body["next"] is None and body["hidden"] == 0
    rows = {row["path"]: row for row in body["entries"]}
    assert (rows["wepp"]["type"], rows["wepp"]["files"]) == ("dir", 2)
    assert rows["wepp"]["bytes"] == len(TEXT) + 3
    assert rows["output"]["files"] == 5 and rows["empty"]["files"] == 0
    readme = rows["README.md"]
    assert readme["sha256"] == hashlib.sha256(b"a small run\n").hexdigest()
    assert readme["size"] == 12 and readme["mtime"].endswith("Z") and readme["target"] is None
    assert "files" not in readme
    assert (rows["latest"]["type"], rows["latest"]["target"]) == ("symlink", "wepp/H1.dat")


def test_a_prefix_lists_its_direct_children_and_pages_join_up(web: WebEnv) -> None:
    run = archived(web, {"wepp/out/loss.txt": File(TEXT), "wepp/H1.dat": File(b"h1\n")})
    owner = web.as_role("owner")
    one = owner.get(api(run, "entries?prefix=wepp/")).get_json()
    assert [r["path"] for r in one["entries"]] == ["wepp/out", "wepp/H1.dat"]
    seen, cursor = [], ""
    while True:
        page = owner.get(api(run, f"entries?prefix=output&limit=2&cursor={cursor}")).get_json()
        assert len(page["entries"]) <= 2 and page["total"] == 5
        seen += [r["path"] for r in page["entries"]]
        if page["next"] is None:
            break
        cursor = page["next"]
    assert seen == [f"output/H{i}.pass.dat" for i in range(5)]
    deep = owner.get(api(run, "entries?prefix=wepp&recursive=1")).get_json()
    assert [r["path"] for r in deep["entries"]] == ["wepp/H1.dat", "wepp/out", "wepp/out/loss.txt"]


def test_a_search_lists_the_matching_paths_of_the_subtree_with_their_rows(web: WebEnv) -> None:
    run = archived(web, {"wepp/out/H7.pass.dat": File(b"h7\n"), "wepp/H1.dat": File(b"h1\n")})
    owner = web.as_role("owner")
    body = owner.get(api(run, "entries?search=PASS&limit=3")).get_json()
    assert [r["path"] for r in body["entries"]] == [f"output/H{i}.pass.dat" for i in range(3)]
    assert body["total"] == 6 and body["next"] is not None
    rest = owner.get(api(run, f"entries?search=PASS&limit=3&cursor={body['next']}")).get_json()
    assert [r["path"] for r in rest["entries"]] == [
        "output/H3.pass.dat", "output/H4.pass.dat", "wepp/out/H7.pass.dat",
    ]  # fmt: skip
    assert rest["next"] is None
    within = owner.get(api(run, "entries?prefix=wepp/&search=.dat")).get_json()
    assert [r["path"] for r in within["entries"]] == ["wepp/H1.dat", "wepp/out/H7.pass.dat"]
    assert within["entries"][0]["sha256"] == hashlib.sha256(b"h1\n").hexdigest()
    other = owner.get(api(run, f"entries?search=dat&limit=3&cursor={body['next']}"))
    assert other.status_code == 400 and other.get_json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("prefix=../etc", 400, "invalid_input"),
        ("prefix=output/../..", 400, "invalid_input"),
        ("prefix=%2Fetc", 400, "invalid_input"),
        ("prefix=a%00b", 400, "invalid_input"),
        ("limit=0", 400, "invalid_input"),
        ("limit=1001", 400, "invalid_input"),
        ("limit=ten", 400, "invalid_input"),
        ("recursive=yes", 400, "invalid_input"),
        ("search=a%00b", 400, "invalid_input"),
        ("search=" + "x" * 201, 400, "invalid_input"),
        ("cursor=not-a-cursor", 400, "invalid_cursor"),
        ("prefix=README.md", 404, "entry_not_found"),
        ("prefix=nowhere/", 404, "entry_not_found"),
    ],
)
def test_bad_listing_queries_are_refused_in_the_json_envelope(
    web: WebEnv, query: str, status: int, code: str
) -> None:
    run = archived(web)
    response = web.as_role("owner").get(api(run, f"entries?{query}"))
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_a_cursor_of_another_folder_is_refused(web: WebEnv) -> None:
    run = archived(web)
    owner = web.as_role("owner")
    cursor = owner.get(api(run, "entries?prefix=output&limit=1")).get_json()["next"]
    other = owner.get(api(run, f"entries?limit=1&cursor={cursor}"))
    assert other.status_code == 400 and other.get_json()["error"]["code"] == "invalid_cursor"


def test_an_unknown_or_malformed_archive_name_is_404_or_400(web: WebEnv) -> None:
    run = archived(web)
    missing = web.as_role("owner").get(
        f"/runs/{run.runid}/archive/{run.runid}.20200101T000000Z.zip/entries"
    )
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    bad = web.as_role("owner").get(f"/runs/{run.runid}/archive/..%2Fx.zip/entries")
    assert bad.status_code in (400, 404)
    assert web.as_role("owner").get(f"/runs/{run.runid}/archive/-x.zip/entries").status_code == 400


# --------------------------------------------------------------------------------- file


def test_a_file_is_sent_whole_with_its_sha256_as_etag_and_as_an_attachment(web: WebEnv) -> None:
    run = archived(web, {"wepp/loss.txt": File(TEXT)})
    response = web.as_role("owner").get(api(run, "file/wepp/loss.txt"))
    assert response.status_code == 200
    assert response.get_data() == TEXT
    assert response.headers["Content-Length"] == str(len(TEXT))
    assert response.headers["ETag"] == f'"{hashlib.sha256(TEXT).hexdigest()}"'
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"] == "attachment; filename=loss.txt"
    assert response.headers["Accept-Ranges"] == "bytes"


def test_a_name_outside_ascii_gets_a_safe_filename_and_the_exact_one_encoded(web: WebEnv) -> None:
    run = archived(web, {"données/été 1.txt": File(b"x"), "evil\u202etxt.exe": File(b"y")})
    owner = web.as_role("owner")
    plain = owner.get(api(run, "file/donn%C3%A9es/%C3%A9t%C3%A9%201.txt"))
    assert plain.get_data() == b"x"
    assert plain.headers["Content-Disposition"] == (
        "attachment; filename=ete_1.txt; filename*=UTF-8''%C3%A9t%C3%A9%201.txt"
    )
    bidi = owner.get(api(run, "file/evil%E2%80%AEtxt.exe"))
    assert bidi.get_data() == b"y"
    assert bidi.headers["Content-Disposition"] == "attachment; filename=eviltxt.exe"


@pytest.mark.parametrize("name", ["noise.bin", "loss.txt"], ids=["stored", "deflated"])
def test_ranges_answer_206_with_exactly_those_bytes(web: WebEnv, name: str) -> None:
    data = NOISE if name == "noise.bin" else TEXT
    run = archived(web, {name: File(data)})
    owner = web.as_role("owner")
    size = len(data)
    for header, start, stop in [
        ("bytes=10-19", 10, 20),
        ("bytes=1048570-1048600", 1048570, 1048601),
        (f"bytes={size - 7}-", size - 7, size),
        ("bytes=-5", size - 5, size),
        (f"bytes=-{size + 100}", 0, size),
        (f"bytes=0-{size + 100}", 0, size),
    ]:
        if start >= size:
            continue
        got = owner.get(api(run, f"file/{name}"), headers={"Range": header})
        assert got.status_code == 206, header
        assert got.get_data() == data[start:stop], header
        assert got.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"
        assert got.headers["Content-Length"] == str(stop - start)


def test_unsatisfiable_multiple_and_conditional_ranges(web: WebEnv) -> None:
    run = archived(web, {"loss.txt": File(TEXT)})
    owner, url, size = web.as_role("owner"), api(run, "file/loss.txt"), len(TEXT)
    etag = f'"{hashlib.sha256(TEXT).hexdigest()}"'
    beyond = owner.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"
    several = owner.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.get_data() == TEXT
    stale = owner.get(url, headers={"Range": "bytes=0-1", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.get_data() == TEXT
    fresh = owner.get(url, headers={"Range": "bytes=0-1", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.get_data() == TEXT[:2]
    cached = owner.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.get_data() == b""
    assert cached.headers["ETag"] == etag
    other = owner.get(url, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.get_data() == TEXT


def test_head_gives_the_headers_without_a_body(web: WebEnv) -> None:
    run = archived(web, {"loss.txt": File(TEXT)})
    owner = web.as_role("owner")
    head = owner.head(api(run, "file/loss.txt"))
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["Content-Length"] == str(len(TEXT))
    part = owner.head(api(run, "file/loss.txt"), headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.headers["Content-Length"] == "10"


@pytest.mark.parametrize(
    ("tail", "status", "code"),
    [
        ("file/nowhere.txt", 404, "entry_not_found"),
        ("file/output", 404, "entry_not_found"),
        ("file/output/", 404, "entry_not_found"),
        ("file/latest", 404, "entry_not_found"),
        ("file/output/../README.md", 400, "invalid_input"),
        ("file/output/%2E%2E/README.md", 400, "invalid_input"),
        ("file/a%5Cb", 400, "invalid_input"),
        ("file/archives/x", 404, "entry_not_found"),
    ],
)
def test_paths_the_archive_does_not_hold_as_files_are_refused(
    web: WebEnv, tail: str, status: int, code: str
) -> None:
    run = archived(web, {"latest": Link("README.md")})
    response = web.as_role("owner").get(api(run, tail))
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code


def test_damage_in_a_small_file_is_409_before_any_byte(web: WebEnv) -> None:
    noise = NOISE[:200_000]
    run = archived(web, {"small.bin": File(noise)})
    flip(run, noise[150_000:150_032])
    response = web.as_role("owner").get(api(run, "file/small.bin"))
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "damaged_archive"
    assert web.as_role("owner").get(api(run, "file/README.md")).get_data() == b"a small run\n"


def test_damage_found_mid_stream_cuts_the_connection_short(web: WebEnv, live: LiveServer) -> None:
    run = archived(web, {"noise.bin": File(NOISE)})
    flip(run, NOISE[2_500_000:2_500_032])
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.request("GET", api(run, "file/noise.bin"),
                 headers={"Authorization": f"Bearer {web.tokens['owner']}"})  # fmt: skip
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Length") == str(len(NOISE))
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    got = cut.value.partial
    assert 0 < len(got) < len(NOISE)
    assert got == NOISE[: len(got)]  # what was sent is right; the rest never came
    conn.close()


def test_a_whole_file_over_a_real_connection_arrives_complete(
    web: WebEnv, live: LiveServer
) -> None:
    run = archived(web, {"noise.bin": File(NOISE)})
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.request("GET", api(run, "file/noise.bin"),
                 headers={"Authorization": f"Bearer {web.tokens['owner']}"})  # fmt: skip
    response = conn.getresponse()
    assert response.status == 200 and response.read() == NOISE
    conn.close()


# --------------------------------------------------------------------------------- diff


def changed_run(web: WebEnv) -> Run:
    """An archived run, then changed: one file edited, one added, one removed, a folder made a
    file."""
    run = archived(web, {"wepp/loss.txt": File(TEXT), "gone.txt": File(b"bye\n")})
    (run.path / "wepp" / "loss.txt").write_bytes(TEXT.replace(b"line 2000 ", b"LINE 2000 "))
    (run.path / "new.txt").write_bytes(b"hello\n")
    os.remove(run.path / "gone.txt")
    os.rmdir(run.path / "empty")
    (run.path / "empty").write_bytes(b"now a file\n")
    return run


def test_the_diff_against_the_run_groups_every_change(web: WebEnv) -> None:
    run = changed_run(web)
    body = web.as_role("owner").get(api(run, "diff")).get_json()
    assert body["archive"] == run.archive and body["against"] is None
    assert [r["path"] for r in body["added"]] == ["new.txt"]
    assert [r["path"] for r in body["removed"]] == ["gone.txt"]
    assert [(r["path"], r["reason"]) for r in body["modified"]] == [("wepp/loss.txt", "content")]
    assert [(r["path"], r["type"], r["type_a"]) for r in body["type_changed"]] == [
        ("empty", "file", "dir")
    ]
    row = body["modified"][0]
    assert row["size_a"] == row["size_b"] == len(TEXT) and row["mtime_a"].endswith("Z")
    assert body["summary"]["added"] == {"entries": 1, "files": 1, "bytes": 6}
    assert body["total"] == 4 and body["next"] is None
    assert body["unchanged"] > 0


def test_the_diff_pages_join_up_to_the_whole(web: WebEnv) -> None:
    run = changed_run(web)
    owner = web.as_role("owner")
    rows, cursor = [], ""
    while True:
        page = owner.get(api(run, f"diff?limit=1&cursor={cursor}")).get_json()
        got = [(b, r["path"]) for b in ("added", "removed", "modified", "type_changed")
               for r in page[b]]  # fmt: skip
        assert len(got) == 1 and page["total"] == 4
        rows += got
        if page["next"] is None:
            break
        cursor = page["next"]
    assert rows == [("added", "new.txt"), ("removed", "gone.txt"),
                    ("modified", "wepp/loss.txt"), ("type_changed", "empty")]  # fmt: skip
    bad = owner.get(api(run, "diff?cursor=zzzz"))
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_cursor"


def test_the_diff_against_another_archive_reads_both_manifests(web: WebEnv) -> None:
    run = changed_run(web)
    second = create_archive(run.path, "after").name
    owner = web.as_role("owner")
    body = owner.get(api(run, f"diff?against={second}")).get_json()
    assert body["against"] == second
    assert [r["path"] for r in body["added"]] == ["new.txt"]
    assert [r["path"] for r in body["modified"]] == ["wepp/loss.txt"]
    back = owner.get(f"/runs/{run.runid}/archive/{second}/diff?against={run.archive}").get_json()
    assert [r["path"] for r in back["removed"]] == ["new.txt"]
    missing = owner.get(api(run, f"diff?against={run.runid}.20200101T000000Z.zip"))
    assert missing.status_code == 404
    assert owner.get(api(run, "diff?against=../x.zip")).status_code == 400


def test_a_modified_text_file_gives_its_unified_diff(web: WebEnv) -> None:
    run = changed_run(web)
    owner = web.as_role("owner")
    body = owner.get(api(run, "diff/file/wepp/loss.txt")).get_json()
    assert body["path"] == "wepp/loss.txt" and body["cut"] is False and body["note"] is None
    lines = body["diff"].splitlines()
    assert lines[:2] == ["--- a/wepp/loss.txt", "+++ b/wepp/loss.txt"]
    assert "-line 2000 of the loss file" in lines and "+LINE 2000 of the loss file" in lines
    same = owner.get(api(run, "diff/file/README.md")).get_json()
    assert same["diff"] == "" and same["note"] == "No differences."
    added = owner.get(api(run, "diff/file/new.txt")).get_json()
    assert added["diff"].startswith("--- /dev/null\n+++ b/new.txt\n")


def test_a_text_diff_of_a_binary_or_missing_file_is_refused(web: WebEnv) -> None:
    run = archived(web, {"noise.bin": File(NOISE[:1000])})
    owner = web.as_role("owner")
    binary = owner.get(api(run, "diff/file/noise.bin"))
    assert binary.status_code == 400 and binary.get_json()["error"]["code"] == "not_text"
    nowhere = owner.get(api(run, "diff/file/nowhere.txt"))
    assert nowhere.status_code == 404
    assert nowhere.get_json()["error"]["code"] == "entry_not_found"
    climbing = owner.get(api(run, "diff/file/output/../../x"))
    assert climbing.status_code == 400


def test_a_text_diff_never_reads_through_a_link_in_the_run(web: WebEnv, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    run = archived(web)
    os.symlink(secret, run.path / "secret.txt")
    response = web.as_role("owner").get(api(run, "diff/file/secret.txt"))
    assert response.status_code == 404
    assert "top secret" not in response.get_data(as_text=True)


def test_an_info_zip_archive_is_served_without_etag_and_diffs_by_crc(web: WebEnv) -> None:
    run = web.new_run(archive=False)
    (run.path / "archives").mkdir()
    made = subprocess.run(["zip", "-qr", "archives/made-by-zip.zip", "README.md", "output"],
                          cwd=run.path, capture_output=True)  # fmt: skip
    assert made.returncode == 0, made.stderr
    run.archive = "made-by-zip.zip"
    owner = web.as_role("owner")
    rows = owner.get(api(run, "entries?prefix=output")).get_json()["entries"]
    assert len(rows) == 5 and all(r["sha256"] is None for r in rows)
    got = owner.get(api(run, "file/output/H3.pass.dat"))
    assert got.status_code == 200 and got.get_data() == b"hillslope 3\n" * 200
    assert "ETag" not in got.headers
    (run.path / "output" / "H3.pass.dat").write_text("hillslope 3\n" * 199 + "hillslope X\n")
    body = owner.get(api(run, "diff")).get_json()
    assert [(r["path"], r["reason"]) for r in body["modified"]] == [
        ("output/H3.pass.dat", "content")
    ]
    assert body["unchanged_by"]["crc32_size"] == 5  # README.md and the four other files
