"""Benchmark issue 14's read side in the core: diff, folder listings, one file from a big archive.

Run as ``python -m bench.inside [--files N] [--big-gib G] [--rounds R] [--out FILE]``.

Every sample is one whole request as a route would serve it, in this process: open the run
(``open_run``), open the archive (``open_archive``: fstat-checked descriptor, central
directory), parse it (``read_contents``: tree and manifest), then the operation. Numbers are
warm-cache (a first, discarded round reads everything once; dropping the page cache needs
root and would disturb the other work on the machine), and the 1-minute load average is
printed with them, because the machine is shared.

diff
    a run of ``--files`` files (default 30,000, ~3 KiB each, 300 folders) against its own
    archive: unchanged; 10 % of the files rewritten with the same size (so each must be read
    and hashed: the worst case of the rule); 10 % only touched (read, hashed, proven
    unchanged); 10 % grown by one byte (no read needed).
entries
    one page (200 rows) of a folder of 10,000 files, every page of it in turn, each page a
    whole request; p50 and p95.
read
    a 1 MiB file at the end of a ``--big-gib`` GiB archive (default 2), stored (random bytes)
    and deflated (text), whole with its CRC checked; the same two files in a 4 MiB archive
    to show the time does not depend on the archive's size.
restore preview (``preview``, with diff)
    what the dashboard's restore confirm asks (``preview_restore``: the restore's plan, then the
    diff counted as restores/changes/removes), in the same four states.
text diff
    the unified diff of a 1 MiB text file with 1 line in 100 changed (capped at 2,000 lines).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from runarchive.core import create_archive, inside, open_run, preview_restore
from runarchive.core.compare import diff_against_run, diff_text
from runarchive.core.inside import list_entries, open_contents
from runarchive.core.member import open_member

T = TypeVar("T")


class Sample(float):
    """Wall seconds of one call, carrying the CPU seconds (user + system) it used."""

    cpu: float


def _timed(fn: Callable[[], T]) -> tuple[Sample, T]:
    """Time one call: wall clock, and this process's CPU time, which a busy machine inflates
    far less (a runnable process waiting for a core uses no CPU)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sample = Sample(time.perf_counter() - wall)
    sample.cpu = time.process_time() - cpu
    return sample, out


def _pct(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _stats(samples: list[Sample]) -> dict[str, float]:
    ordered = sorted(samples)
    cpu = sorted(s.cpu for s in samples)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(_pct(ordered, 0.95) * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "cpu_median_ms": round(statistics.median(cpu) * 1000, 2),
        "cpu_p95_ms": round(_pct(cpu, 0.95) * 1000, 2),
    }


def _make_small_files(run: Path, count: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    words = [b"runoff", b"sediment", b"0.000", b"1.250", b"hillslope", b"channel", b"\n"]
    paths = []
    for i in range(count):
        folder = run / f"h{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"H{i:05d}.pass.dat"
        path.write_bytes(b" ".join(rng.choice(words) for _ in range(rng.randint(200, 600))))
        paths.append(path)
    return paths


def _diff_once(run: Path, name: str, cold: bool) -> dict[str, int]:
    if cold:
        inside._cache.clear()  # the archive parsed again, as on its first request
    with open_run(run) as handle, open_contents(handle, name) as contents:
        diff = diff_against_run(contents, handle)
    return {"changes": diff.total, "hashed": diff.hashed_files, "unchanged": diff.unchanged}


def _preview_once(run: Path, name: str, cold: bool) -> dict[str, int]:
    if cold:
        inside._cache.clear()
    preview = preview_restore(run, name)
    return {"restores": preview.restores.files, "changes": preview.changes.files,
            "removes": preview.removes_files}  # fmt: skip


def bench_diff(tmp: Path, files: int, rounds: int, preview: bool = False) -> dict[str, object]:
    run = tmp / "diff-run"
    paths = _make_small_files(run, files, 1)
    name = create_archive(run).name
    out: dict[str, object] = {"files": files}

    def measure(label: str) -> None:
        _diff_once(run, name, False)  # the page cache warm
        for cold in (True, False):
            samples: list[Sample] = []
            facts: dict[str, int] = {}
            for _ in range(rounds):
                seconds, facts = _timed(partial(_diff_once, run, name, cold))
                samples.append(seconds)
            key = f"{label}, {'first request' if cold else 'archive parsed before'}"
            out[key] = {**_stats(samples), **facts, "load": os.getloadavg()[0]}
            print(f"diff {key}: {out[key]}")
            if not preview:
                continue
            samples = []
            for _ in range(rounds):
                seconds, facts = _timed(partial(_preview_once, run, name, cold))
                samples.append(seconds)
            out[f"preview: {key}"] = {**_stats(samples), **facts, "load": os.getloadavg()[0]}
            print(f"restore preview {key}: {out[f'preview: {key}']}")

    measure("unchanged")
    rng = random.Random(2)
    tenth = rng.sample(paths, files // 10)
    for path in tenth:  # same size, new bytes, new mtime: each must be read and hashed
        data = path.read_bytes()
        path.write_bytes(data[::-1])
    measure("10% rewritten, same size")
    for path in tenth:
        data = path.read_bytes()
        path.write_bytes(data[::-1])  # the original bytes again, a new mtime: proven by hash
    measure("10% touched only")
    for path in tenth:
        with path.open("ab") as fh:
            fh.write(b"+")
    measure("10% grown (no read needed)")
    return out


def bench_entries(tmp: Path, rounds: int) -> dict[str, object]:
    run = tmp / "entries-run"
    folder = run / "wepp" / "output"
    folder.mkdir(parents=True)
    for i in range(10_000):
        (folder / f"H{i:05d}.pass.dat").write_bytes(b"%d\n" % i)
    name = create_archive(run).name

    def one_page(cursor: str | None, cold: bool) -> str | None:
        if cold:
            inside._cache.clear()
        with open_run(run) as handle, open_contents(handle, name) as contents:
            return list_entries(contents, "wepp/output/", cursor=cursor).next

    out: dict[str, object] = {}
    for cold in (True, False):
        samples: list[Sample] = []
        for round_ in range(rounds + 1):
            cursor: str | None = None
            while True:
                seconds, cursor = _timed(partial(one_page, cursor, cold))
                if round_:
                    samples.append(seconds)
                if cursor is None:
                    break
        key = "every request parses" if cold else "archive parsed before"
        out[key] = {**_stats(samples), "load": os.getloadavg()[0]}
        print(f"entries, 200-row pages of a 10,000-file folder, {key}: {out[key]}")
    return out


def _read_whole(run: Path, name: str, path: str) -> int:
    with open_run(run) as handle, open_contents(handle, name) as contents:
        stream = open_member(contents, path)
        with stream:
            return sum(len(piece) for piece in stream.chunks())


def bench_read(tmp: Path, big_gib: float, rounds: int) -> dict[str, object]:
    rng = random.Random(3)
    tail_bin = rng.randbytes(1 << 20)
    tail_txt = b"".join(b"%08d some text of the model's output\n" % i for i in range(24_000))
    tail_txt = tail_txt[: 1 << 20]
    out: dict[str, object] = {}
    for label, filler in (("small", 4 << 20), ("big", int(big_gib * (1 << 30)))):
        run = tmp / f"read-{label}"
        run.mkdir()
        chunk = os.urandom(64 << 20)
        with (run / "aa-filler.bin").open("wb") as fh:  # incompressible: stored, fast to write
            left = filler
            while left > 0:
                fh.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        (run / "zz-last.bin").write_bytes(tail_bin)
        (run / "zz-last.txt").write_bytes(tail_txt)
        seconds, result = _timed(partial(create_archive, run))
        name = result.name
        (run / "aa-filler.bin").unlink()  # only the archive is needed now
        size = (run / "archives" / name).stat().st_size
        row: dict[str, object] = {"archive_bytes": size, "create_s": round(seconds, 1)}
        for path in ("zz-last.bin", "zz-last.txt"):
            _read_whole(run, name, path)
            read = partial(_read_whole, run, name, path)
            samples = [_timed(read)[0] for _ in range(rounds)]
            row[path] = {**_stats(samples), "load": os.getloadavg()[0]}
        out[label] = row
        print(f"read 1 MiB at the end of a {size / 2**30:.2f} GiB archive: {row}")
        (run / "archives" / name).unlink()
    return out


def bench_text_diff(tmp: Path, rounds: int) -> dict[str, object]:
    run = tmp / "text-run"
    run.mkdir()
    lines = [f"{i:08d} 0.125 0.250 0.500 sediment yield\n" for i in range(24_000)]
    (run / "out.txt").write_text("".join(lines))
    name = create_archive(run).name
    for i in range(0, len(lines), 100):
        lines[i] = lines[i].replace("sediment", "SEDIMENT")
    (run / "out.txt").write_text("".join(lines))

    def once() -> int:
        with open_run(run) as handle, open_contents(handle, name) as contents:
            return len(diff_text(contents, "out.txt", handle).lines)

    once()
    samples = [_timed(once)[0] for _ in range(rounds)]
    out: dict[str, object] = {
        **_stats(samples),
        "bytes": (run / "out.txt").stat().st_size,
        "lines": once(),
    }
    print(f"text diff of a 1 MiB file, 1 line in 100 changed: {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=30_000)
    parser.add_argument("--big-gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="diff,preview,entries,read,text")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    report: dict[str, object] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-inside-") as tmp_name:
        tmp = Path(tmp_name)
        if "diff" in only:
            report["diff"] = bench_diff(tmp, args.files, args.rounds, "preview" in only)
        if "entries" in only:
            report["entries"] = bench_entries(tmp, max(1, args.rounds // 2))
        if "read" in only:
            report["read"] = bench_read(tmp, args.big_gib, args.rounds * 4)
        if "text" in only:
            report["text_diff"] = bench_text_diff(tmp, args.rounds)
    report["load_after"] = os.getloadavg()
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
