"""What the list's ``usage`` block and an archive request's quota check cost on a big run.

Run as ``python -m bench.quota [--files N] [--mib N] [--archives N] [--repeat N] [--dir DIR]``.

In-process, in the core (what ``web/archives.list_body`` and ``jobs.reservation`` call):

list
    ``list_archives`` alone (the list before this change; its per-archive cache warm).
list + usage, warm
    ``list_archives`` then ``measure_usage(run, rows)`` with the run's walk cached: a
    ``statvfs`` and a dictionary lookup more.
list + usage, stale
    the same with every cached figure stale (``RUN_BYTES_TTL`` 0): the old figure is answered
    and one background thread walks the run again (stale-while-revalidate).
list + usage, first
    the cache emptied before each sample: the first list of a run in a process walks it.
fresh measure
    ``measure_usage(run, fresh=True)``, what an archive request pays before its job is
    queued: a walk now and the newest archive's central directory (the ratio); printed with
    the estimate it gives against the newest archive's real size.

Medians and 95th percentiles, with the 1-minute load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runarchive.core import create_archive, list_archives, measure_usage
from runarchive.core import quota as quota_module
from runarchive.synthetic_run import generate_run


def _stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered) * 1000:8.2f} ms  p95 {p95 * 1000:8.2f} ms"


def _time(n: int, call: Callable[[], object], before: Callable[[], None] | None = None) -> str:
    samples = []
    for _ in range(n):
        if before is not None:
            before()
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return _stats(samples)


def _wait_walks() -> None:
    while any(t.name == "runarchive-run-bytes" for t in threading.enumerate()):
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=30_000)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--archives", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="Keep the run here (reused).")
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="bench-quota-"))
    run = base / "bench-quota"
    if not run.exists():
        made = generate_run(run, files=args.files, target_bytes=args.mib << 20)
        print(f"generated {made.files} files, {made.bytes / 2**20:.1f} MiB")
    while len(list_archives(run)) < args.archives:
        create_archive(run, "bench")
    rows = list_archives(run)
    print(f"{len(rows)} archives of {rows[0].size / 2**20:.1f} MiB; load {os.getloadavg()[0]:.2f}")
    measure_usage(run, rows)

    def listed() -> None:
        measure_usage(run, list_archives(run))

    print("list                 ", _time(args.repeat, lambda: list_archives(run)))
    print("list + usage, warm   ", _time(args.repeat, listed))
    ttl = quota_module.RUN_BYTES_TTL
    quota_module.RUN_BYTES_TTL = 0.0
    print("list + usage, stale  ", _time(args.repeat, listed))
    quota_module.RUN_BYTES_TTL = ttl
    _wait_walks()
    first = max(5, args.repeat // 20)
    print("list + usage, first  ", _time(first, listed, quota_module._run_sizes.clear))
    start = time.perf_counter()
    usage = measure_usage(run, rows, fresh=True)
    took = time.perf_counter() - start
    print(
        f"fresh measure {took * 1000:.0f} ms: estimate {usage.estimate / 2**20:.1f} MiB vs the "
        f"newest archive's {rows[0].size / 2**20:.1f} MiB (ratio {usage.ratio:.3f}); "
        f"load {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
