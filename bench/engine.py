"""Benchmark archive creation and restore against zip, 7-Zip, stdlib zipfile, borg and restic.

Run as ``python -m bench.engine [--mixes demo,mixed,small] [--repeat N] [--warmup N]
[--scale F] [--out DIR] [--name STEM]``; ``make bench`` runs the defaults.

Every tool runs as a **whole process**, timed from spawn to exit (interpreter start-up,
imports and, for ours, the durability work included), as an operator would time it:

create
    ``runarchive archive RUN --json`` (ours, defaults: isal deflate level 1, 2 threads), with
    no archive of ours in the run; the same again over an unchanged run whose newest archive
    was made (untimed) just before, so the files cache copies every file (``ours-again``);
    ``zip -r -q`` (level 6); stdlib ``zipfile`` deflate 6 in its own Python process, walking
    the tree as WEPPcloud does; ``7zz a -tzip -mx1 -mmt2`` (7-Zip's fastest zip, two threads);
    and, when installed, ``borg create`` (lz4, no encryption) and ``restic backup`` (its
    default ``auto`` compression) into a fresh repository made untimed just before, and again
    into that repository over the unchanged run (``borg-again``, ``restic-again``: their files
    caches, against ``ours-again``).
restore
    ``runarchive restore RUN NAME --yes --json`` into the run **emptied** beforehand (untimed;
    ``archives/`` kept), which extracts and verifies every file, purge of the replaced tree
    included; the same over the intact run (unchanged files proven by sha256 and kept); and
    ``unzip -q``, ``7zz x``, ``borg extract`` and ``restic restore`` into an empty folder.

Data mixes (``runarchive.demo``, fixed seeds, so every run writes the same bytes):

demo
    ``generate_run`` as the demo makes it: ~200 MiB, ~3,000 files, a tenth of the bytes in
    rasters and parquet (random bytes, named ``.tif``/``.parquet``).
mixed
    a WEPP-like run of ~200 MiB and ~3,000 files with ~20 % incompressible bytes, most in large
    files: the demo tree at 176 MiB plus a 12 MiB float raster with no telling suffix
    (``.flt``: only the compressibility probe can tell), an 8 MiB GeoTIFF, and two
    parquet-like files whose 64 KiB pages alternate random and text-like bytes.
small
    30,000 files in ~100 MiB (average ~3 KiB): per-file cost dominates.

Rounds alternate the tools: each round runs every tool once on the same tree, the order
rotated from round to round, and the 1-minute load average is read before and after every
sample. A discarded warm-up round first fills the page cache (dropping it needs root and
would disturb the other work on this machine), so every number is warm-cache. Medians,
minima and maxima over the timed rounds are reported; peak RSS comes from GNU
``/usr/bin/time`` wrapped around each child (left out when it is missing). Python children
get a private byte-code cache (``PYTHONPYCACHEPREFIX``) warmed by the first round, so a
checkout run with ``PYTHONDONTWRITEBYTECODE`` is timed as an installed package would be.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from runarchive.synthetic_run import generate_run

SEED = 0
RUN_NAME = "bench-run"
# Kept out of the reference archives, as our archive keeps them out of its own.
SKIP_DIRS = ("archives", ".runarchive")
REPO_ROOT = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
RUNARCHIVE = [sys.executable, "-c", "from runarchive.cli import main; main()"]
MIXES = ("demo", "mixed", "small")
# Restores are measured in two states of the disk. ext4 without a journal (this machine's)
# will not reuse an inode freed within the last 60 s (300 s while its inode-table block is
# dirty) and reads inode tables to skip such inodes, so creating thousands of files right
# after thousands were deleted is much slower than otherwise.
#   deleted: every sample's output is deleted right after it, and the run is emptied by
#            deleting its content just before our restore: each tool starts right after a
#            large delete (what "empty the run, then restore" does).
#   settled: nothing is deleted during the rounds (outputs and the run's content are moved
#            aside and deleted afterwards), and the rounds start SETTLE_SECONDS after our
#            last deletion, with a sync first (other processes on the machine may still
#            delete; the load column says how busy it was).
STATES = ("deleted", "settled")
SETTLE_SECONDS = 65.0


def load_average() -> list[float]:
    """Return the 1-, 5- and 15-minute load averages from /proc/loadavg."""
    return [round(x, 2) for x in os.getloadavg()]


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed run of one tool: wall seconds, peak RSS, output size, 1-min load around it."""

    seconds: float
    rss_kib: int | None
    size: int | None
    load: tuple[float, float]


@dataclass(slots=True)
class MixReport:
    """Everything measured on one data mix."""

    mix: str
    files: int
    bytes: int
    incompressible_bytes: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tool:
    """One measured command: how to prepare (untimed), run (timed) and size its output."""

    key: str
    operation: str
    label: str
    run: Callable[[Bench], Sample]


class DiskState:
    """The disk state a restore is measured in (see ``STATES``): delete now, or set aside.

    In the "settled" state nothing is deleted: what a sample leaves is moved into ``trash``
    (a rename) and deleted after the state's rounds, which ``settle`` makes start
    ``settle_seconds`` after our last deletion.
    """

    def __init__(self, trash: Path, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.trash, self.settle_seconds = trash, settle_seconds
        self.trash.mkdir(parents=True, exist_ok=True)
        self.settled = False
        self.trashed = 0
        self.last_delete = time.monotonic()

    def discard(self, path: Path) -> None:
        """Delete ``path`` now ("deleted" state), or move it into the trash ("settled")."""
        if not path.exists() and not path.is_symlink():
            return
        if self.settled:
            self.trashed += 1
            path.rename(self.trash / f"{self.trashed}-{path.name}")
            return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        self.last_delete = time.monotonic()

    def empty_trash(self) -> None:
        """Delete what the settled rounds set aside (untimed)."""
        for child in self.trash.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        self.last_delete = time.monotonic()

    def settle(self) -> None:
        """Wait until no deletion of ours is in ext4's recent-deletion window (see STATES)."""
        os.sync()  # clean inode-table buffers: ext4 then waits RECENTCY_MIN, not RECENTCY_DIRTY
        wait = self.settle_seconds - (time.monotonic() - self.last_delete)
        if wait > 0:
            print(f"settling {wait:.0f} s after the last deletion", flush=True)
            time.sleep(wait)


class Bench(DiskState):
    """The temp folders of one mix and the commands that act on them."""

    def __init__(self, tmp: Path, run: Path, env: dict[str, str]) -> None:
        self.tmp, self.run, self.env = tmp, run, env
        self.out = tmp / "out"
        self.out.mkdir(exist_ok=True)
        self.ours = ""  # the name of our latest archive
        super().__init__(tmp / "trash")
        self.again = 0  # second borg snapshots made, for their names

    def spawn(self, argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> Sample:
        """Run ``argv`` to completion as a whole process; return its time and peak RSS."""
        seconds, rss_kib, _ = self.spawn_raw(argv, cwd, env)
        return Sample(seconds, rss_kib, None, (0.0, 0.0))

    def spawn_raw(
        self, argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None
    ) -> tuple[float, int | None, str]:
        with tempfile.NamedTemporaryFile("r", prefix="rss-", suffix=".txt") as rss_file:
            # GNU time is a small parent whose child starts with a clean RSS high-water mark
            # (Linux keeps it across exec, so a child exec'd from us would report ours).
            wrapper = [GNU_TIME, "-f", "%M", "-o", rss_file.name] if GNU_TIME else []
            started = time.perf_counter()
            proc = subprocess.run(
                [*wrapper, *argv],
                cwd=cwd,
                env=env or self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
            seconds = time.perf_counter() - started
            rss_kib = int(rss_file.read().split()[-1]) if GNU_TIME else None
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}")
        return seconds, rss_kib, proc.stdout

    def fresh(self, name: str) -> Path:
        """Return an empty folder (or a missing path) ``name`` under the output folder."""
        path = self.out / name
        self.discard(path)
        return path


# --- create -------------------------------------------------------------------------------


def _zip(b: Bench) -> Sample:
    target = b.fresh("zip.zip")  # zip adds to an existing archive: start from none
    excludes = [arg for skip in SKIP_DIRS for arg in ("-x", f"{skip}/*")]
    s = b.spawn(["zip", "-r", "-q", str(target), ".", *excludes], cwd=b.run)
    return _sized(s, target)


def _stdlib(b: Bench) -> Sample:
    target = b.fresh("stdlib.zip")
    code = "import sys; from bench.engine import stdlib_zip; stdlib_zip(sys.argv[1], sys.argv[2])"
    s = b.spawn([sys.executable, "-c", code, str(b.run), str(target)], cwd=REPO_ROOT)
    return _sized(s, target)


def _7z(b: Bench) -> Sample:
    target = b.fresh("7z.zip")
    excludes = [f"-xr!{skip}" for skip in SKIP_DIRS]
    s = b.spawn(["7zz", "a", "-tzip", "-mx1", "-mmt2", "-bd", "-bso0", str(target), ".",
                 *excludes], cwd=b.run)  # fmt: skip
    return _sized(s, target)


def _ours_create(b: Bench) -> Sample:
    if b.ours:
        _delete_ours(b)
    seconds, rss, output = b.spawn_raw([*RUNARCHIVE, "archive", str(b.run), "--json"], REPO_ROOT)
    result = json.loads(output.strip().splitlines()[-1])
    b.ours = result["name"]
    return Sample(seconds, rss, int(result["size"]), (0.0, 0.0))


def _ours_again(b: Bench) -> Sample:
    """Archive the unchanged run a second time: the files cache's case (borg's and restic's
    second snapshot). The base archive is made untimed, once the run's files are older than
    the racy window, so that every file is recorded as reusable; twice, because the first
    archive after a restore ends the undo it kept and purges it, and unlinking the undo's
    hard links changes the run's files' ctime (the cache then rightly reads them again)."""
    time.sleep(1.2)
    flush = b.spawn_raw([*RUNARCHIVE, "archive", str(b.run), "--json"], REPO_ROOT)[2]
    (b.run / "archives" / json.loads(flush.strip().splitlines()[-1])["name"]).unlink()
    time.sleep(1.2)
    base = b.spawn_raw([*RUNARCHIVE, "archive", str(b.run), "--json"], REPO_ROOT)[2]
    seconds, rss, output = b.spawn_raw([*RUNARCHIVE, "archive", str(b.run), "--json"], REPO_ROOT)
    result = json.loads(output.strip().splitlines()[-1])
    if result.get("reused") != result["files"]:
        reused = f"{result.get('reused')} of {result['files']}"
        print(f"  files cache: {reused} files reused", flush=True)
    for made in (result["name"], json.loads(base.strip().splitlines()[-1])["name"]):
        (b.run / "archives" / made).unlink()
    return Sample(seconds, rss, int(result["size"]), (0.0, 0.0))


def _delete_ours(b: Bench) -> None:
    (b.run / "archives" / b.ours).unlink()
    b.ours = ""


def _borg_env(b: Bench) -> dict[str, str]:
    return {**b.env, "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_BASE_DIR": str(b.tmp / "borg-home")}  # fmt: skip


def _borg(b: Bench) -> Sample:
    repo = b.fresh("borg-repo")
    env = _borg_env(b)
    b.spawn(["borg", "init", "-e", "none", str(repo)], cwd=b.run, env=env)
    excludes = [arg for skip in SKIP_DIRS for arg in ("--exclude", skip)]
    s = b.spawn(["borg", "create", "--compression", "lz4", f"{repo}::snap", ".", *excludes],
                cwd=b.run, env=env)  # fmt: skip
    return _sized(s, repo)


def _borg_again(b: Bench) -> Sample:
    """A second ``borg create`` of the unchanged run into the repository of a first one."""
    repo = b.out / "borg-repo"
    if not repo.is_dir():
        _borg(b)
    b.again += 1
    excludes = [arg for skip in SKIP_DIRS for arg in ("--exclude", skip)]
    s = b.spawn(["borg", "create", "--compression", "lz4", f"{repo}::again-{b.again}", ".",
                 *excludes], cwd=b.run, env=_borg_env(b))  # fmt: skip
    return _sized(s, repo)


def _restic_again(b: Bench) -> Sample:
    """A second ``restic backup`` of the unchanged run (its parent snapshot: its files cache)."""
    repo = b.out / "restic-repo"
    if not repo.is_dir():
        _restic(b)
    excludes = [arg for skip in SKIP_DIRS for arg in ("--exclude", f"{b.run}/{skip}")]
    s = b.spawn(["restic", "-q", "-r", str(repo), "backup", ".", *excludes], cwd=b.run,
                env=_restic_env(b))  # fmt: skip
    return _sized(s, repo)


def _restic_env(b: Bench) -> dict[str, str]:
    return {**b.env, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(b.tmp / "restic-cache")}


def _restic(b: Bench) -> Sample:
    repo = b.fresh("restic-repo")
    env = _restic_env(b)
    b.spawn(["restic", "-q", "-r", str(repo), "init"], cwd=b.run, env=env)
    excludes = [arg for skip in SKIP_DIRS for arg in ("--exclude", f"{b.run}/{skip}")]
    s = b.spawn(["restic", "-q", "-r", str(repo), "backup", ".", *excludes], cwd=b.run, env=env)
    return _sized(s, repo)


def _sized(sample: Sample, path: Path) -> Sample:
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        size = path.stat().st_size
    return Sample(sample.seconds, sample.rss_kib, size, sample.load)


# --- restore ------------------------------------------------------------------------------


def _unzip(b: Bench) -> Sample:
    target = b.fresh("unzipped")
    target.mkdir()
    s = b.spawn(["unzip", "-q", str(b.out / "zip.zip"), "-d", str(target)], cwd=b.out)
    b.discard(target)
    return s


def _7z_x(b: Bench) -> Sample:
    target = b.fresh("7z-out")
    target.mkdir()
    s = b.spawn(["7zz", "x", "-bd", "-bso0", "-y", f"-o{target}", str(b.out / "7z.zip")],
                cwd=b.out)  # fmt: skip
    b.discard(target)
    return s


def _borg_x(b: Bench) -> Sample:
    target = b.fresh("borg-out")
    target.mkdir()
    repo = b.out / "borg-repo"
    s = b.spawn(["borg", "extract", f"{repo}::snap"], cwd=target, env=_borg_env(b))
    b.discard(target)
    return s


def _restic_x(b: Bench) -> Sample:
    target = b.fresh("restic-out")
    target.mkdir()
    repo = b.out / "restic-repo"
    s = b.spawn(["restic", "-q", "-r", str(repo), "restore", "latest", "--target", str(target)],
                cwd=b.out, env=_restic_env(b))  # fmt: skip
    b.discard(target)
    return s


def _ours_restore_over(b: Bench) -> Sample:
    return b.spawn([*RUNARCHIVE, "restore", str(b.run), b.ours, "--yes", "--json"], REPO_ROOT)


def _ours_restore_empty(b: Bench) -> Sample:
    _empty_run(b)
    return b.spawn([*RUNARCHIVE, "restore", str(b.run), b.ours, "--yes", "--json"], REPO_ROOT)


def _empty_run(b: Bench) -> None:
    """Take the run's content away (untimed) so the next restore must extract every file."""
    for child in b.run.iterdir():
        if child.name not in SKIP_DIRS:
            b.discard(child)


CREATE_TOOLS = (
    Tool("ours", "create", "runarchive archive", _ours_create),
    Tool("ours-again", "create", "runarchive archive again, unchanged run", _ours_again),
    Tool("zip", "create", "zip -r -q (level 6)", _zip),
    Tool("stdlib", "create", "python zipfile deflate 6", _stdlib),
    Tool("7z", "create", "7zz a -tzip -mx1 -mmt2", _7z),
    Tool("borg", "create", "borg create (lz4, no encryption)", _borg),
    Tool("restic", "create", "restic backup (auto compression)", _restic),
    Tool("borg-again", "create", "borg create again, unchanged run", _borg_again),
    Tool("restic-again", "create", "restic backup again, unchanged run", _restic_again),
)
RESTORE_TOOLS = (
    Tool("ours-empty", "restore", "runarchive restore into emptied run", _ours_restore_empty),
    Tool("unzip", "restore", "unzip -q into empty dir", _unzip),
    Tool("7z-x", "restore", "7zz x into empty dir", _7z_x),
    Tool("borg-x", "restore", "borg extract into empty dir", _borg_x),
    Tool("restic-x", "restore", "restic restore into empty dir", _restic_x),
    Tool("ours-over", "restore", "runarchive restore over the run (unchanged reused)",
         _ours_restore_over),
)  # fmt: skip
NEEDS = {"7z": "7zz", "7z-x": "7zz", "borg": "borg", "borg-x": "borg", "restic": "restic",
         "borg-again": "borg", "restic-again": "restic",
         "restic-x": "restic", "zip": "zip", "unzip": "unzip"}  # fmt: skip
LABELS = {tool.key: (tool.operation, tool.label) for tool in CREATE_TOOLS + RESTORE_TOOLS}


def _available(tools: Sequence[Tool]) -> list[Tool]:
    return [t for t in tools if t.key not in NEEDS or shutil.which(NEEDS[t.key])]


def _timed(tool: Tool, b: Bench) -> Sample:
    before = os.getloadavg()[0]
    sample = tool.run(b)
    return Sample(sample.seconds, sample.rss_kib, sample.size, (before, os.getloadavg()[0]))


def _rotated(tools: list[Tool], by: int) -> list[Tool]:
    """Rotate the order, keeping ``ours-over`` last (it needs the run our restore rebuilt)."""
    head = [t for t in tools if t.key != "ours-over"]
    by %= len(head)
    return head[by:] + head[:by] + [t for t in tools if t.key == "ours-over"]


# --- data mixes ---------------------------------------------------------------------------


def make_mix(mix: str, run: Path, scale: float = 1.0) -> tuple[int, int, int]:
    """Write mix ``mix`` into ``run``; return its files, bytes and incompressible bytes."""
    mib = 2**20
    if mix == "demo":
        made = generate_run(run, seed=SEED, target_bytes=int(200 * mib * scale), files=3000)
        return made.files, made.bytes, int(made.bytes * 0.10)
    if mix == "small":
        made = generate_run(run, seed=SEED + 2, target_bytes=int(100 * mib * scale), files=30000)
        return made.files, made.bytes, int(made.bytes * 0.10)
    if mix != "mixed":
        raise SystemExit(f"unknown mix {mix!r}")
    made = generate_run(run, seed=SEED + 1, target_bytes=int(176 * mib * scale), files=2996)
    rng = random.Random(SEED + 3)
    random_bytes = int(made.bytes * 0.10)
    extra = 0
    for rel, size, kind in (
        ("rasters/burn_severity.flt", 12, "random"),
        ("rasters/ndvi.tif", 8, "random"),
        ("watershed/flowpaths.parquet", 3, "pages"),
        ("wepp/output/interchange/totalwatsed3.parquet", 1, "pages"),
    ):
        data = _opaque(rng, int(size * mib * scale), kind)
        path = run / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        extra += len(data)
        random_bytes += len(data) if kind == "random" else len(data) // 2
    return made.files + 4, made.bytes + extra, random_bytes


def _opaque(rng: random.Random, size: int, kind: str) -> bytes:
    """Random bytes, or parquet-like pages alternating random and repetitive text."""
    if kind == "random":
        return rng.randbytes(size)
    page, parts, words = 64 << 10, [b"PAR1"], [b"hillslope", b"0.000", b"12.5", b"NaN", b";"]
    total = 4
    for i in range(size // page):
        if i % 2:
            parts.append(b"".join(rng.choice(words) for _ in range(page // 6))[:page])
        else:
            parts.append(rng.randbytes(page))
        total += len(parts[-1])
    parts.append(rng.randbytes(max(0, size - total)))
    return b"".join(parts)


def stdlib_zip(run: str, target: str) -> None:
    """Zip ``run`` the way WEPPcloud does today: os.walk and ZipFile.write, deflate level 6."""
    root = Path(run)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for folder, dirs, files in os.walk(root):
            if Path(folder) == root:
                dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            for name in files:
                path = os.path.join(folder, name)
                archive.write(path, os.path.relpath(path, root))


# --- the run ------------------------------------------------------------------------------


def bench_mix(
    mix: str, tmp: Path, repeat: int, warmup: int, scale: float, states: Sequence[str] = STATES
) -> MixReport:
    """Generate ``mix`` and alternate every available tool over it for the rounds asked."""
    run = tmp / RUN_NAME
    started = time.perf_counter()
    files, size, opaque = make_mix(mix, run, scale)
    took = time.perf_counter() - started
    print(f"[{mix}] {files} files, {size / 2**20:.1f} MiB ({opaque / size:.0%} incompressible) "
          f"written in {took:.1f} s; load {load_average()}", flush=True)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    for var in ("REDIS_URL", "RUNARCHIVE_REDIS_URL"):  # the local commands, no service rules
        env.pop(var, None)
    b = Bench(tmp, run, env)
    # Compile our byte code into the private cache now, so no timed round pays for it.
    b.spawn([*RUNARCHIVE, "--help"], REPO_ROOT)
    b.spawn([*RUNARCHIVE, "list", str(run)], REPO_ROOT)
    report = MixReport(mix, files, size, opaque)
    creates, restores = _available(CREATE_TOOLS), _available(RESTORE_TOOLS)
    for index, state in enumerate(states):
        b.settled = state == "settled"
        if b.settled:
            b.settle()
        for round_no in range(warmup + repeat):
            # Creates run in the first state only: the disk's state is a restore matter.
            tools = [*_rotated(creates, round_no)] if index == 0 else []
            for tool in [*tools, *_rotated(restores, round_no)]:
                sample = _timed(tool, b)
                if round_no >= warmup:
                    key = tool.key if tool.operation == "create" else f"{tool.key}@{state}"
                    report.samples.setdefault(key, []).append(sample)
            label = f"round {round_no + 1 - warmup}" if round_no >= warmup else "warm-up"
            print(f"[{mix}] {state}: {label} done, load {load_average()}", flush=True)
        b.settled = False
        b.empty_trash()
    shutil.rmtree(run)
    shutil.rmtree(b.out)
    report.ratios = _ratios(report.samples)
    return report


def _median(samples: list[Sample]) -> float:
    return statistics.median(s.seconds for s in samples)


def _size(samples: list[Sample]) -> int | None:
    sizes = [s.size for s in samples if s.size is not None]
    return int(statistics.median(sizes)) if sizes else None


def _ratios(samples: dict[str, list[Sample]]) -> dict[str, float]:
    ratios: dict[str, float] = {}
    for ref in ("zip", "stdlib", "7z", "borg", "restic"):
        if "ours" in samples and ref in samples:
            ratios[f"time ours/{ref}"] = _median(samples["ours"]) / _median(samples[ref])
    for ours, theirs in (("ours-again", "ours"), ("ours-again", "borg-again"),
                         ("ours-again", "restic-again")):  # fmt: skip
        if ours in samples and theirs in samples:
            ratios[f"time {ours}/{theirs}"] = _median(samples[ours]) / _median(samples[theirs])
    for state in STATES:
        for ours, refs in ((f"ours-empty@{state}", ("unzip", "7z-x", "borg-x", "restic-x")),
                           (f"ours-over@{state}", ("unzip",))):  # fmt: skip
            for ref in refs:
                theirs = f"{ref}@{state}"
                if ours in samples and theirs in samples:
                    ratios[f"time {ours}/{theirs}"] = _median(samples[ours]) / _median(
                        samples[theirs]
                    )
    for ref in ("zip", "stdlib", "7z", "borg", "restic"):
        a, z = _size(samples.get("ours", [])), _size(samples.get(ref, []))
        if a and z:
            ratios[f"size ours/{ref}"] = a / z
    return ratios


def machine(tmp: Path | None = None) -> dict[str, object]:
    """Describe the machine (and, given ``tmp``, where the temp files live)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for tool, flag in (("zip", "-v"), ("7zz", ""), ("borg", "--version"), ("restic", "version")):
        if shutil.which(tool):
            out = subprocess.run([tool, *filter(None, [flag])], capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
            versions[tool] = lines[1 if tool == "zip" else 0].strip()[:80] if lines else "?"
    machine: dict[str, object] = {"nproc": os.cpu_count(), "cpu": cpu,
                                  "python": platform.python_version(),
                                  "platform": platform.platform(), "tools": versions}  # fmt: skip
    if tmp is not None:
        machine["temp_dir"] = str(tmp.parent)
    machine["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    return machine


def markdown(reports: list[MixReport], machine: dict[str, object]) -> str:
    """Render the reports as the Markdown tables docs/benchmarks.md quotes."""
    lines = ["# runarchive engine benchmark", "", f"- {machine}", ""]
    for r in reports:
        loads = [x for ss in r.samples.values() for s in ss for x in s.load]
        lines += [f"## {r.mix}: {r.files} files, {r.bytes / 2**20:.1f} MiB, "
                  f"{r.incompressible_bytes / r.bytes:.0%} incompressible", "",
                  f"1-min load during samples: {min(loads):.2f}–{max(loads):.2f} "
                  f"(median {statistics.median(loads):.2f})", "",
                  "| operation | tool | median s | min s | max s | size MiB | peak RSS MiB "
                  "| load 1-min |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for key, ss in r.samples.items():
            base, _, state = key.partition("@")
            op, label = LABELS[base]
            label = f"{label} ({state})" if state else label
            size = _size(ss)
            rss = [s.rss_kib for s in ss if s.rss_kib]
            ld = [x for s in ss for x in s.load]
            lines.append(
                f"| {op} | {label} | {_median(ss):.2f} | {min(s.seconds for s in ss):.2f} | "
                f"{max(s.seconds for s in ss):.2f} | "
                f"{'' if size is None else f'{size / 2**20:.1f}'} | "
                f"{max(rss) / 1024:.0f} | {min(ld):.1f}–{max(ld):.1f} |"
                if rss
                else f"| {op} | {label} | {_median(ss):.2f} | | | | | |"
            )
        lines += ["", "| ratio (< 1: ours wins) | value |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in r.ratios.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run every mix and write ``{out}/{name}.md`` and ``.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mixes", default=",".join(MIXES), help="comma-separated mixes")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds first (1)")
    parser.add_argument("--scale", type=float, default=1.0, help="scale every mix's bytes")
    parser.add_argument(
        "--states", default=",".join(STATES), help="restore disk states: deleted,settled (both)"
    )
    parser.add_argument("--name", default="engine", help="report file stem (default engine)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="report folder")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    states = args.states.split(",")
    if not states or set(states) - set(STATES):
        parser.error(f"--states takes {', '.join(STATES)}")
    for tool in ("zip", "unzip"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (make sysdeps)")
    missing = sorted({NEEDS[k] for k in NEEDS if not shutil.which(NEEDS[k])})
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    facts = machine()
    facts["started"] = datetime.now(UTC).isoformat(timespec="seconds")
    facts["load_before"] = load_average()
    reports = []
    for mix in args.mixes.split(","):
        with tempfile.TemporaryDirectory(prefix="runarchive-bench-") as tmp:
            reports.append(bench_mix(mix, Path(tmp), args.repeat, args.warmup, args.scale, states))
    facts["load_after"] = load_average()
    facts["ended"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    md, js = args.out / f"{args.name}.md", args.out / f"{args.name}.json"
    js.write_text(json.dumps({"machine": facts, "mixes": [asdict(r) for r in reports]},
                             indent=1) + "\n")  # fmt: skip
    md.write_text(markdown(reports, facts))
    print(md.read_text())
    print(f"Wrote {md} and {js}")


if __name__ == "__main__":
    main()
