"""Benchmark issue 15's storage work on the 2 GB benchmark run: prune and scrub throughput.

Run as ``python -m bench.storage [--base DIR] [--scale S] [--archives N] [--rounds R]
[--out FILE]`` (``make bench-storage``).

The run is ``bench.engine``'s ``mixed`` mix at ``--scale`` (default 10: ~2 GB, ~3,000 files,
a tenth of its bytes incompressible), built once under ``--base`` (default
``$TMPDIR/runarchive-bench-storage``) with one real archive of it, and reused by later runs of
the benchmark (a ``READY`` file says it is complete). Each round then:

1. gives the run ``--archives`` archives (default 6): byte copies of the seed archive under
   names one day apart, each a real file with its own blocks (not a hard link, so removing it
   frees its bytes as a prune of real archives would);
2. **scrub, unbounded**: ``runarchive scrub RUN --json`` as a whole process (start-up, every
   archive checked: layout, CRC, sha256 of every file against the manifest) — MB/s is the
   archives' bytes over the process's wall time;
3. **prune**: ``runarchive prune RUN --keep-last 1 --json`` as a whole process, which removes
   all but the newest — archives per second and bytes freed per second (its JSON's
   ``bytes_freed``) over the wall time;
4. **scrub at the default rate**: ``runarchive scrub RUN --rate 52428800`` (the
   ``RUNARCHIVE_SCRUB_RATE`` default) over the one archive left — MB/s, expected just under
   50 MiB/s (the bound holds over the whole check; start-up and the central directory are
   outside it).

The archives were just written, so scrub reads them from the page cache (warm: what is
measured is the check's own cost — inflate, CRC, sha256 — not the disk; dropping the cache
needs root and would disturb the other work on this shared machine). CPU seconds of each
child process are reported with the wall time, and the load average before and after, because
the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.engine import make_mix
from runarchive.core import create_archive

MIB = 2**20
DEFAULT_RATE = 50 * MIB
RUNID = "bench-storage-run"


def _cli() -> list[str]:
    return [sys.executable, "-m", "runarchive"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RUNARCHIVE_REDIS_URL")}
    env["RUNARCHIVE_SCRUB_INTERVAL"] = "0"
    return env


def ensure_run(base: Path, scale: float) -> tuple[Path, Path, dict[str, Any]]:
    """Build (or reuse) the benchmark run and its seed archive; return them and the run's size."""
    run = base / RUNID
    seed = base / "seed.zip"
    ready = base / "READY"
    if ready.exists():
        return run, seed, json.loads(ready.read_text())
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    files, nbytes, opaque = make_mix("mixed", run, scale)
    start = time.perf_counter()
    made = create_archive(run, "seed")
    made.path.rename(seed)
    facts = {"files": files, "bytes": nbytes, "incompressible": opaque,
             "archive_bytes": seed.stat().st_size,
             "create_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    ready.write_text(json.dumps(facts))
    return run, seed, facts


def place_archives(run: Path, seed: Path, count: int) -> list[str]:
    """Give the run ``count`` real copies of the seed archive, one day apart, oldest first."""
    archives = run / "archives"
    for old in archives.glob("*.zip"):
        old.unlink()
    archives.mkdir(exist_ok=True)
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    names = []
    for i in range(count):
        stamp = (start + timedelta(days=i)).strftime("%Y%m%dT%H%M%SZ")
        name = f"{RUNID}.{stamp}.zip"
        shutil.copyfile(seed, archives / name)
        names.append(name)
    os.sync()  # the copies' writeback is not the next measurement's cost
    return names


def timed(args: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, float, str]:
    """Run one CLI process; return wall seconds, its CPU seconds and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([*_cli(), *args], capture_output=True, text=True, env=_env(), check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}: {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def one_round(run: Path, seed: Path, count: int) -> dict[str, Any]:
    names = place_archives(run, seed, count)
    total = sum((run / "archives" / n).stat().st_size for n in names)

    wall, cpu, out = timed(["scrub", str(run), "--json"])
    body = json.loads(out)
    assert body["checked"] == count and body["damaged"] == 0, body
    scrub = {"archives": count, "bytes": total, "seconds": wall, "cpu": cpu,
             "mb_per_s": total / wall / 1e6}  # fmt: skip

    wall, cpu, out = timed(["prune", str(run), "--keep-last", "1", "--json"])
    plan = json.loads(out)
    removed, freed = len(plan["remove"]), int(plan["bytes_freed"])
    assert removed == count - 1, plan
    prune = {"removed": removed, "bytes_freed": freed, "seconds": wall, "cpu": cpu,
             "archives_per_s": removed / wall, "mb_freed_per_s": freed / wall / 1e6}  # fmt: skip

    left = (run / "archives" / names[-1]).stat().st_size
    wall, cpu, out = timed(["scrub", str(run), "--json", "--rate", str(DEFAULT_RATE)])
    assert json.loads(out)["checked"] == 1
    rated = {"bytes": left, "seconds": wall, "cpu": cpu, "mb_per_s": left / wall / 1e6,
             "mib_per_s": left / wall / MIB}  # fmt: skip
    return {"scrub": scrub, "prune": prune, "scrub_rated": rated}


def _median(rounds: list[dict[str, Any]], part: str, key: str) -> float:
    return float(statistics.median(float(r[part][key]) for r in rounds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_base = Path(tempfile.gettempdir()) / "runarchive-bench-storage"
    parser.add_argument("--base", type=Path, default=default_base)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--archives", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    run, seed, facts = ensure_run(args.base, args.scale)
    report["run"] = facts
    rounds = []
    for i in range(args.rounds):
        rounds.append(one_round(run, seed, args.archives))
        r = rounds[-1]
        print(
            f"round {i + 1}: scrub {r['scrub']['mb_per_s']:.0f} MB/s "
            f"({r['scrub']['archives']} archives, {r['scrub']['bytes'] / 1e9:.2f} GB in "
            f"{r['scrub']['seconds']:.1f} s, cpu {r['scrub']['cpu']:.1f} s); "
            f"prune {r['prune']['archives_per_s']:.1f} archives/s, "
            f"{r['prune']['mb_freed_per_s']:.0f} MB freed/s ({r['prune']['removed']} in "
            f"{r['prune']['seconds']:.2f} s); scrub at 50 MiB/s: "
            f"{r['scrub_rated']['mib_per_s']:.1f} MiB/s ({r['scrub_rated']['seconds']:.1f} s)",
            flush=True,
        )
    report["rounds"] = rounds
    report["median"] = {
        "scrub_mb_per_s": _median(rounds, "scrub", "mb_per_s"),
        "prune_archives_per_s": _median(rounds, "prune", "archives_per_s"),
        "prune_mb_freed_per_s": _median(rounds, "prune", "mb_freed_per_s"),
        "scrub_rated_mib_per_s": _median(rounds, "scrub_rated", "mib_per_s"),
    }
    report["load_after"] = os.getloadavg()
    print(json.dumps({"run": facts, "median": report["median"],
                      "load": [report["load_before"], report["load_after"]]}))  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
