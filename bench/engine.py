"""Benchmark archive creation and restore against zip, unzip and stdlib zipfile.

Run as ``python -m bench.engine [--size MiB] [--files N] [--raster MiB] [--repeat N]
[--warmup N] [--out DIR]``. The ~2 GB run of the service benchmarks is
``python -m bench.engine --size 2048 --files 30000 --raster 300 --repeat 1 --warmup 0
--name large``: the run's DEM is replaced by one 300 MiB raster (seeded random bytes, as
incompressible as a real GeoTIFF), the rest of the 2 GiB generated as usual.

Method: one synthetic run (``runarchive.demo``, fixed seed) is written to a temp folder, and
every tool works on that same tree in the same process run, round after round:

1. ``zip -r -q`` at its default level (6), into a fresh file outside the run;
2. stdlib ``zipfile`` with ZIP_DEFLATED level 6, walking the tree as WEPPcloud does;
3. our ``create_archive`` with its defaults;
4. ``unzip -q`` of the zip from step 1 into an empty folder;
5. our ``restore_archive`` of the archive from step 3 back over the run, which still holds
   the tree, as a real restore does (unchanged files are proven equal by sha256 and reused);
6. the same restore into the run emptied beforehand (untimed), extracting every file: the
   like-for-like comparison with ``unzip`` into an empty folder;
7. the purge of the replaced tree, which our restores defer until after reporting success;
   then the archive is deleted, untimed.

Dropping the page cache needs root and would disturb the other work on this machine, so a
first, discarded round warms it instead: every number is warm-cache. Times are medians over
the rounds. Each tool runs in its own child process under GNU ``/usr/bin/time``, which
reports that child's peak RSS alone (without it, RSS is left out rather than guessed).
Python children time only the call itself, not interpreter start-up; zip and unzip are
timed around the process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from runarchive.demo import generate_run

if TYPE_CHECKING:
    from rich.console import Console

SEED = 0
RUN_NAME = "bench-run"
# Kept out of the reference archives, as create_archive keeps them out of ours.
SKIP_DIRS = ("archives", ".runarchive")
REPO_ROOT = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
CHILD = "import sys; from bench.engine import child_main; child_main(sys.argv[1:])"


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed run of one tool."""

    seconds: float
    rss_kib: int | None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """A tool's samples reduced to what the table shows."""

    key: str
    operation: str
    tool: str
    median_s: float
    min_s: float
    mib_per_s: float
    size: int | None
    peak_rss_mib: float | None
    samples: list[Sample]


@dataclass(frozen=True, slots=True)
class Report:
    """Everything one benchmark run measured, as printed and as written to JSON."""

    machine: dict[str, object]
    settings: dict[str, object]
    run_files: int
    run_bytes: int
    baseline_rss_kib: int | None
    rows: list[Row]
    ratios: dict[str, float]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run the benchmark and write its report."""
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument("--size", type=int, default=200, help="run size in MiB (default 200)")
    parser.add_argument("--files", type=int, default=3000, help="files in the run (default 3000)")
    parser.add_argument(
        "--raster", type=int, default=0, help="replace dem/dem.tif by a raster of MiB (default 0)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="discarded warm-up rounds first (default 1)"
    )
    parser.add_argument("--name", default="engine", help="report file stem (default engine)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="report folder")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for tool in ("zip", "unzip"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (make sysdeps)")

    # Imported here, not at the top, so that measured children do not carry rich in their RSS.
    from rich.console import Console

    # Off a terminal rich assumes 80 columns, too narrow for the table in a log.
    console = Console(width=None if sys.stdout.isatty() else 110)
    with tempfile.TemporaryDirectory(prefix="runarchive-bench-") as tmp:
        report = _bench(
            Path(tmp), args.size, args.files, args.repeat, console, args.raster, args.warmup
        )
    args.out.mkdir(parents=True, exist_ok=True)
    md, js = args.out / f"{args.name}.md", args.out / f"{args.name}.json"
    js.write_text(json.dumps(asdict(report), indent=2) + "\n")
    md.write_text(_markdown(report))
    _print(report, console)
    console.print(f"Wrote {md} and {js}")


def _bench(
    tmp: Path,
    size_mib: int,
    files: int,
    repeat: int,
    console: Console,
    raster_mib: int = 0,
    warmup: int = 1,
) -> Report:
    run = tmp / RUN_NAME
    out = tmp / "out"
    out.mkdir()
    started = time.perf_counter()
    load_before = os.getloadavg()
    generated = generate_run(
        run, seed=SEED, target_bytes=(size_mib - raster_mib) * 2**20, files=files
    )
    run_bytes = generated.bytes
    if raster_mib:
        run_bytes += _big_raster(run / "dem" / "dem.tif", raster_mib)
    console.print(
        f"Generated {generated.files} files, {run_bytes / 2**20:.1f} MiB "
        f"in {time.perf_counter() - started:.1f} s; {warmup} warm-up round(s), {repeat} timed"
    )
    samples: dict[str, list[Sample]] = {}
    for round_no in range(warmup + repeat):
        for key, sample in _round(run, out):
            if round_no >= warmup:
                samples.setdefault(key, []).append(sample)
        console.print(f"  round {round_no + 1 - warmup if round_no >= warmup else 'warm-up'} done")
    rows = [_row(key, found, run_bytes) for key, found in samples.items()]
    machine = _machine(tmp)
    machine["load_before"] = [round(x, 2) for x in load_before]
    machine["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return Report(
        machine=machine,
        settings={
            "size_mib": size_mib,
            "files_asked": files,
            "raster_mib": raster_mib,
            "repeat": repeat,
            "seed": SEED,
            "cache": f"{warmup} discarded warm-up round(s) first, page cache not dropped",
            "rss": "peak RSS of each child from GNU time" if GNU_TIME else "RSS not measured",
        },
        run_files=generated.files,
        run_bytes=run_bytes,
        baseline_rss_kib=_spawn_python(["idle"]).rss_kib,
        rows=rows,
        ratios=_ratios({row.key: row for row in rows}),
    )


def _big_raster(path: Path, mib: int) -> int:
    """Replace ``path`` by a seeded random raster of ``mib`` MiB; return the bytes added."""
    import random

    old = path.stat().st_size
    rng = random.Random(SEED + 1)
    with path.open("wb") as out:
        out.write(b"II*\x00")
        for _ in range(mib):
            out.write(rng.randbytes(2**20))
    return path.stat().st_size - old


def _round(run: Path, out: Path) -> list[tuple[str, Sample]]:
    from runarchive.core import delete_archive

    ref_zip, std_zip, unzipped = out / "zip.zip", out / "stdlib.zip", out / "unzipped"
    # zip adds to an existing archive, so every round starts from none.
    for old in (ref_zip, std_zip):
        old.unlink(missing_ok=True)
    excludes = [arg for skip in SKIP_DIRS for arg in ("-x", f"{skip}/*")]
    zipped = _spawn(["zip", "-r", "-q", str(ref_zip), ".", *excludes], cwd=run)
    stdlib = _spawn_python(["stdlib", str(run), str(std_zip)])
    created, name = _spawn_python_named(["create", str(run)])
    shutil.rmtree(unzipped, ignore_errors=True)
    unzipped.mkdir()
    unzip = _spawn(["unzip", "-q", str(ref_zip), "-d", str(unzipped)], cwd=out)
    shutil.rmtree(unzipped)
    restored = _spawn_python(["restore", str(run), name])
    _empty_run(run)
    restored_empty = _spawn_python(["restore", str(run), name])
    purged = _spawn_python(["purge", str(run)])
    delete_archive(run, name)
    return [
        ("zip", Sample(zipped.seconds, zipped.rss_kib, ref_zip.stat().st_size)),
        ("stdlib", stdlib),
        ("create", created),
        ("unzip", unzip),
        ("restore", restored),
        ("restore-empty", restored_empty),
        ("purge", purged),
    ]


def _empty_run(run: Path) -> None:
    """Delete the run's content (untimed) so the next restore must extract every file."""
    for child in run.iterdir():
        if child.name in SKIP_DIRS:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _spawn(argv: Sequence[str], cwd: Path) -> Sample:
    """Run ``argv`` to completion; return its wall time and peak RSS."""
    seconds, rss_kib, _ = _spawn_raw(argv, cwd)
    return Sample(seconds, rss_kib)


def _spawn_raw(argv: Sequence[str], cwd: Path) -> tuple[float, int | None, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with tempfile.NamedTemporaryFile("r", prefix="rss-", suffix=".txt") as rss_file:
        # A child exec'd straight from this process inherits its RSS high-water mark (Linux
        # keeps it across exec), so a tiny zip would report our own 30 MiB; GNU time is a
        # small parent whose child starts clean.
        wrapper = [GNU_TIME, "-f", "%M", "-o", rss_file.name] if GNU_TIME else []
        started = time.perf_counter()
        proc = subprocess.run(
            [*wrapper, *argv],
            cwd=cwd,
            env=env,
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


def _spawn_python(args: Sequence[str]) -> Sample:
    return _spawn_python_named(args)[0]


def _spawn_python_named(args: Sequence[str]) -> tuple[Sample, str]:
    """Run a ``child_main`` operation; return its own timing and the archive name, if any."""
    _, rss_kib, output = _spawn_raw([sys.executable, "-c", CHILD, *args], cwd=REPO_ROOT)
    result = json.loads(output.strip().splitlines()[-1])
    return Sample(result["seconds"], rss_kib, result.get("size")), result.get("name", "")


def child_main(args: Sequence[str]) -> None:
    """Run one measured operation in this (child) process and print its result as JSON."""
    op, *rest = args
    result: dict[str, object] = {}
    started = time.perf_counter()
    if op == "stdlib":
        run, target = Path(rest[0]), Path(rest[1])
        _stdlib_zip(run, target)
        result["size"] = target.stat().st_size
    elif op == "create":
        from runarchive.core import create_archive

        created = create_archive(Path(rest[0]))
        result.update(size=created.size, name=created.name)
    elif op == "restore":
        from runarchive.core import restore_archive

        restored = restore_archive(Path(rest[0]), rest[1], defer_delete=True)
        result["reused"] = restored.reused
    elif op == "purge":
        from runarchive.core import purge_trash

        purge_trash(Path(rest[0]))
    elif op == "idle":
        import runarchive.core  # noqa: F401  (the baseline: interpreter plus our imports)
    else:
        raise SystemExit(f"unknown operation {op!r}")
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result))


def _stdlib_zip(run: Path, target: Path) -> None:
    """Zip ``run`` the way WEPPcloud does today: os.walk and ZipFile.write, deflate level 6."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for root, dirs, files in os.walk(run):
            if Path(root) == run:
                dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            for name in files:
                path = os.path.join(root, name)
                archive.write(path, os.path.relpath(path, run))


_LABELS = {
    "zip": ("create", "zip -r -q (level 6)"),
    "stdlib": ("create", "zipfile deflate 6 (WEPPcloud)"),
    "create": ("create", "runarchive create_archive"),
    "unzip": ("restore", "unzip -q into empty dir"),
    "restore": ("restore", "runarchive restore over the run (unchanged files reused)"),
    "restore-empty": ("restore", "runarchive restore into emptied run (full extract)"),
    "purge": ("restore", "runarchive purge of replaced tree (after success)"),
}


def _row(key: str, samples: list[Sample], run_bytes: int) -> Row:
    median = statistics.median(s.seconds for s in samples)
    sizes = [s.size for s in samples if s.size is not None]
    rss = [s.rss_kib for s in samples if s.rss_kib is not None]
    operation, tool = _LABELS[key]
    return Row(
        key=key,
        operation=operation,
        tool=tool,
        median_s=median,
        min_s=min(s.seconds for s in samples),
        mib_per_s=run_bytes / 2**20 / median,
        size=int(statistics.median(sizes)) if sizes else None,
        peak_rss_mib=max(rss) / 1024 if rss else None,
        samples=samples,
    )


def _ratios(rows: dict[str, Row]) -> dict[str, float]:
    ours, zipped, stdlib = rows["create"], rows["zip"], rows["stdlib"]
    ratios = {
        "create time ours/zip": ours.median_s / zipped.median_s,
        "create time ours/stdlib": ours.median_s / stdlib.median_s,
        "restore time ours/unzip (run holds the snapshot)": rows["restore"].median_s
        / rows["unzip"].median_s,
        "restore time ours/unzip (emptied run, full extract)": rows["restore-empty"].median_s
        / rows["unzip"].median_s,
    }
    if ours.size and zipped.size and stdlib.size:
        ratios["archive size ours/zip"] = ours.size / zipped.size
        ratios["archive size ours/stdlib"] = ours.size / stdlib.size
    return ratios


def _machine(tmp: Path) -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "temp_dir": str(tmp.parent),
    }


_HEADERS = ("operation", "tool", "median s", "min s", "MiB/s", "archive MiB", "peak RSS MiB")


def _cells(row: Row) -> list[str]:
    return [
        row.operation,
        row.tool,
        f"{row.median_s:.2f}",
        f"{row.min_s:.2f}",
        f"{row.mib_per_s:.0f}",
        f"{row.size / 2**20:.1f}" if row.size is not None else "",
        f"{row.peak_rss_mib:.0f}" if row.peak_rss_mib is not None else "n/a",
    ]


def _summary(report: Report) -> list[str]:
    machine, settings = report.machine, report.settings
    baseline = f"{report.baseline_rss_kib / 1024:.0f} MiB" if report.baseline_rss_kib else "n/a"
    return [
        f"{machine['date']}, {machine['nproc']} x {machine['cpu']}, Python {machine['python']}",
        f"run: {report.run_files} files, {report.run_bytes / 2**20:.1f} MiB "
        f"(seed {settings['seed']}); medians of {settings['repeat']} rounds",
        f"{settings['cache']}; {settings['rss']}",
        f"load averages (1/5/15 min) before {machine.get('load_before')}, "
        f"after {machine.get('load_after')} (2 cores shared with other engineers' tests)",
        f"baseline RSS of a child with runarchive.core imported, before any work: {baseline}",
    ]


def _print(report: Report, console: Console) -> None:
    from rich.table import Table

    table = Table(title="runarchive engine benchmark", caption="\n".join(_summary(report)))
    for header in _HEADERS:
        table.add_column(header, justify="left" if header in ("operation", "tool") else "right")
    for row in report.rows:
        table.add_row(*_cells(row))
    ratios = Table(title="ours / reference (< 1: ours wins)")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    for name, value in report.ratios.items():
        ratios.add_row(name, f"{value:.2f}")
    console.print(table)
    console.print(ratios)


def _markdown(report: Report) -> str:
    lines = ["# runarchive engine benchmark", "", *(f"- {line}" for line in _summary(report)), ""]
    lines += ["| " + " | ".join(_HEADERS) + " |", "|" + "---|" * len(_HEADERS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in report.rows]
    lines += ["", "| ours / reference | value |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in report.ratios.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
