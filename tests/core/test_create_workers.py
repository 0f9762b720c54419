"""Creating with worker processes (``forkpool``): the same archive as the threads make, and
every way out clean.

A run of many small files is built by forked workers (``create.FORK_MIN_ENTRIES``); one with
``threads=1`` by the thread pool alone. The archives must hold the same bytes, entry by
entry. A worker killed for real (SIGKILL) must fail the create and leave nothing; a parent
killed for real (at a chosen point, and at random times) must take its workers with it (they
hold the run's handles); an error or a refusal in the parent must kill and reap them; nothing
may leak (processes, zombies, descriptors); a system that refuses the fork gets the threads.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from runarchive.core import (
    CreateResult,
    ProgressEvent,
    QuotaExceeded,
    WorkerFailed,
    create_archive,
    list_archives,
    recover_run,
    verify_archive,
)
from runarchive.core.create import FORK_MIN_ENTRIES
from runarchive.core.filescache import RACY_NS
from runarchive.core.manifest import MANIFEST_NAME
from tests.support.processes import alive, children, open_fds, wait_gone
from tests.support.tree import Dir, File, Link, Spec, archive_files, build_tree, snapshot

FILES = FORK_MIN_ENTRIES + 500


def small_run(files: int = FILES, noise: bool = False) -> Spec:
    """A run of ``files`` small files in a few folders, plus a link, an empty file, a stored
    raster and a file of several chunks (built by the thread pool beside the workers).
    ``noise``: the small files are random bytes (stored), so the archive outgrows the
    workers' pipes and they block on them until the parent reads."""
    spec: Spec = {
        "README.md": File(b"a run\n"),
        "wepp": Dir(0o750),
        "latest": Link("wepp/output"),
        "empty.txt": File(b""),
        "dem/dem.tif": File(os.urandom(40_000)),
        "wepp/output/big.dat": File(b"".join(b"%9d runoff\n" % i for i in range(250_000))),
    }
    for i in range(files):
        text = b"".join(b"%d %d %f\n" % (i, j, j / 7) for j in range(60))
        body = os.urandom(4096) if noise else text
        spec[f"wepp/output/H{i % 7}/h{i:05d}.pass"] = File(body, mode=0o640 if i % 3 else 0o644)
    return spec


class Watch:
    """A progress listener that records the write events and the workers seen during them."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, str | None]] = []
        self.pids: set[int] = set()

    def __call__(self, event: ProgressEvent) -> None:
        if event.phase == "write":
            self.events.append((event.files_done, event.bytes_done, event.path))
            if len(self.events) % 200 == 1:
                self.pids.update(children())


def raw_entries(path: Path) -> list[tuple[bytes, bytes, bytes]]:
    """Each entry of our archive as (name, central record without its offset, local header
    and data): everything an entry holds, independent of where the archive places it."""
    data = path.read_bytes()
    eocd = data.rindex(b"PK\x05\x06")
    count, _, cd_offset = struct.unpack_from("<HII", data, eocd + 10)
    out, pos = [], cd_offset
    for _ in range(count):
        nlen, xlen, clen = struct.unpack_from("<HHH", data, pos + 28)
        csize, local = (
            struct.unpack_from("<I", data, pos + 20)[0],
            struct.unpack_from("<I", data, pos + 42)[0],
        )
        record = bytearray(data[pos : pos + 46 + nlen + xlen + clen])
        record[42:46] = b"\0\0\0\0"
        lnlen, lxlen = struct.unpack_from("<HH", data, local + 26)
        name = data[pos + 46 : pos + 46 + nlen]
        out.append((name, bytes(record), data[local : local + 30 + lnlen + lxlen + csize]))
        pos += 46 + nlen + xlen + clen
    return out


def entries(path: Path) -> list[tuple[bytes, bytes, bytes, bytes]]:
    """Each entry as ``raw_entries`` gives it but for its compressed size and bytes, with its
    content (inflated, CRC checked). isal's deflate may pick other matches for the same bytes
    from one run to the next (two archives by the same code differ in a compressed size or
    two), so the compressed bytes of two archives are not compared, only what they hold."""
    out = []
    with zipfile.ZipFile(path) as zf:
        for (name, record, local), info in zip(raw_entries(path), zf.infolist(), strict=True):
            central, head = bytearray(record), bytearray(local[: 30 + len(name) + 45])
            central[20:24] = head[18:22] = b"\0\0\0\0"
            out.append((name, bytes(central), bytes(head), zf.read(info)))
    return out


def manifest(path: Path) -> dict[str, object]:
    with zipfile.ZipFile(path) as zf:
        doc: dict[str, object] = json.loads(zf.read(MANIFEST_NAME))
    doc.pop("created")
    return doc


@pytest.fixture
def aged(run_dir: Path) -> Path:
    """The small run, its files' ctimes past the racy window (so each archive records the
    same facts, and the files cache can offer every file)."""
    build_tree(run_dir, small_run())
    time.sleep(RACY_NS / 1e9 + 0.2)
    return run_dir


def _keep(result: CreateResult, where: Path) -> Path:
    """Move an archive out of the run (the next one is then not offered it as a cache)."""
    target = where / result.name
    os.rename(result.path, target)
    return target


def test_workers_build_the_archive_the_threads_build_byte_for_byte(
    aged: Path, tmp_path: Path
) -> None:
    fds = open_fds()
    by_threads = Watch()
    threads = create_archive(aged, threads=1, reuse=False, progress=by_threads)
    by_workers = Watch()
    forked = create_archive(aged, threads=2, reuse=False, progress=by_workers)

    assert by_threads.pids == set() and len(by_workers.pids) == 2
    assert children() == [] and open_fds() == fds
    for result in (threads, forked):
        assert verify_archive(aged, result.name).ok
    # The same entries (headers, CRCs, contents), the same manifest (but for its time, which
    # also makes the manifest's own entry differ), the same events.
    assert entries(forked.path)[:-1] == entries(threads.path)[:-1]
    assert manifest(forked.path) == manifest(threads.path)
    assert by_workers.events == by_threads.events
    assert len(by_workers.events) == forked.files == FILES + 4
    assert (forked.files, forked.entries, forked.bytes_total) == (
        threads.files, threads.entries, threads.bytes_total,
    )  # fmt: skip

    # Through the files cache too: every file copied, by the workers, the bytes unchanged.
    _keep(threads, tmp_path)
    again = create_archive(aged, threads=2)
    assert again.reused == FILES + 4
    assert raw_entries(again.path)[:-1] == raw_entries(forked.path)[:-1]  # but the manifest
    assert manifest(again.path) == manifest(forked.path)
    assert children() == [] and open_fds() == fds


def test_a_worker_killed_mid_create_fails_it_and_leaves_nothing(run_dir: Path) -> None:
    build_tree(run_dir, small_run(noise=True))
    before = snapshot(run_dir)
    fds = open_fds()
    killed: list[int] = []

    def kill_a_worker(event: ProgressEvent) -> None:
        if event.phase == "write" and not killed:
            killed.append(children()[-1])
            os.kill(killed[0], signal.SIGKILL)

    with pytest.raises(WorkerFailed) as failed:
        create_archive(run_dir, progress=kill_a_worker)

    assert f"({killed[0]}) was killed by SIGKILL" in str(failed.value)
    assert not alive(killed[0])
    assert archive_files(run_dir / "archives") == [], "no archive and no temp file"
    assert list_archives(run_dir) == []
    assert snapshot(run_dir) == before
    assert children() == [] and open_fds() == fds
    assert verify_archive(run_dir, create_archive(run_dir).name).ok  # the run is not locked


def test_an_error_in_the_parent_kills_and_reaps_the_workers(run_dir: Path) -> None:
    # The quota's hard check, a canceled job and a listener's own error all raise in the
    # writer while the workers are busy: they are killed and reaped, nothing is kept.
    build_tree(run_dir, small_run(noise=True))
    fds = open_fds()
    seen: list[int] = []

    def refuse() -> None:
        raise RuntimeError("canceled")

    def fail_midway(event: ProgressEvent) -> None:
        if event.phase == "write" and event.files_done == 300:
            seen.extend(children())
            raise RuntimeError("listener failed")

    with pytest.raises(QuotaExceeded):
        create_archive(run_dir, budget=1 << 20)
    with pytest.raises(RuntimeError, match="canceled"):
        create_archive(run_dir, before_publish=refuse)
    with pytest.raises(RuntimeError, match="listener failed"):
        create_archive(run_dir, progress=fail_midway)

    assert len(seen) == 2 and all(not alive(pid) for pid in seen)
    assert children() == [] and open_fds() == fds
    assert archive_files(run_dir / "archives") == []


PARENT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from runarchive.core import create_archive

    def progress(event):
        if event.phase == "write" and event.files_done == 100:
            children = []
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as fh:
                    children += fh.read().split()
            print(" ".join(children), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    create_archive(Path(sys.argv[1]), progress=progress)
    """
)


@pytest.mark.slow
def test_a_parent_killed_mid_create_takes_its_workers_with_it(run_dir: Path) -> None:
    build_tree(run_dir, small_run(noise=True))
    before = snapshot(run_dir)
    proc = subprocess.run(
        [sys.executable, "-c", PARENT, str(run_dir)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(pid) for pid in proc.stdout.split()]
    assert len(pids) == 2
    assert wait_gone(pids) == [], "workers outlived their parent"

    # Only the temp file is left (recover removes it), and nothing holds the run's lock.
    names = archive_files(run_dir / "archives")
    assert len(names) == 1 and names[0].startswith(".tmp-"), names
    assert list_archives(run_dir) == []
    assert recover_run(run_dir).removed_temp == 1
    assert archive_files(run_dir / "archives") == []
    assert snapshot(run_dir) == before
    assert verify_archive(run_dir, create_archive(run_dir).name).ok


def test_when_no_worker_process_can_be_forked_the_threads_build_the_archive(
    aged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system refusing a fork (a process limit, a sandbox) is injected at os.fork: the
    # second worker cannot start, the first is killed and reaped, the threads do the work.
    threads = _keep(create_archive(aged, threads=1, reuse=False), tmp_path)
    real_fork, forks = os.fork, []

    def fork() -> int:
        if forks:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        forks.append(real_fork())
        return forks[-1]

    monkeypatch.setattr(os, "fork", fork)
    watch = Watch()
    result = create_archive(aged, threads=2, reuse=False, progress=watch)

    assert forks and forks[0] > 0 and not alive(forks[0])
    assert watch.pids == set() and children() == []
    assert entries(result.path)[:-1] == entries(threads)[:-1]
    assert manifest(result.path) == manifest(threads)


KILLABLE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from runarchive.core import create_archive

    told = []

    def progress(event):
        if event.phase == "write" and not told:
            told.append(True)
            children = []
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as fh:
                    children += fh.read().split()
            print(" ".join(children), flush=True)

    create_archive(Path(sys.argv[1]), progress=progress)
    print("done", flush=True)
    """
)


def _start(run: Path) -> tuple[subprocess.Popen[str], list[int], float]:
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    pids = [int(pid) for pid in proc.stdout.readline().split()]
    return proc, pids, time.monotonic()


@pytest.mark.slow
def test_a_create_by_workers_killed_at_random_times_leaves_no_partial_archive(
    run_dir: Path,
) -> None:
    build_tree(run_dir, small_run(noise=True))
    before = snapshot(run_dir)
    proc, pids, started = _start(run_dir)  # calibration: how long the writing takes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and len(pids) == 2, err
    duration = time.monotonic() - started
    for name in archive_files(run_dir / "archives"):
        os.unlink(run_dir / "archives" / name)
    rng, removed = random.Random(16), 0
    for fraction in (0.1, 0.5, 0.9):
        proc, pids, started = _start(run_dir)
        time.sleep(
            max(0.0, started + duration * fraction * rng.uniform(0.9, 1.1) - time.monotonic())
        )
        proc.kill()
        proc.communicate(timeout=60)
        assert wait_gone(pids) == [], "workers outlived their parent"
        for info in list_archives(run_dir):
            assert verify_archive(run_dir, info.name).ok, f"{info.name} is listed but incomplete"
            os.unlink(run_dir / "archives" / info.name)
        removed += recover_run(run_dir).removed_temp
        assert archive_files(run_dir / "archives") == []
        assert snapshot(run_dir) == before
    assert removed >= 1, "no kill landed while the archive was being written"
    assert verify_archive(run_dir, create_archive(run_dir).name).ok  # nothing holds the lock
