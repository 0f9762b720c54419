"""What keeping a restore's replaced tree for undo costs: time added to a restore, disk held.

Run as ``python -m bench.undo [--mixes mixed,small] [--repeat N] [--warmup N] [--scale F]
[--edit F] [--out DIR]``.

Every command runs as a **whole process**, timed from spawn to exit, as ``bench.engine``
times them (its data mixes, its spawn with GNU ``time`` for peak RSS):

keep
    ``runarchive restore RUN NAME --yes --json`` with undo on (the default): the replaced
    tree is renamed to ``archives/.runarchive/undo-<id>``, measured (one walk by handle) and
    recorded; nothing of it is deleted. The run kept no undo before (its first restore).
keep-again
    the same when the run already keeps an earlier restore's undo (the steady state of a run
    restored again and again): that one is parked as trash and purged by the command after
    it answered.
off
    the same with ``RUNARCHIVE_UNDO_TTL=0``: the replaced tree is parked as trash and purged
    by the command after it answered (the behaviour before undo existed).
pre-archive
    ``runarchive archive RUN --json`` of the run as the restore would find it: what the other
    mechanism (an automatic archive before every restore) would add, and the disk it holds.

``--parts`` measures in-process instead, where whole processes cannot resolve a few per cent
on a loaded machine: the restore (``restore_archive``, wall and CPU time of the process,
user + system) and, inside it, exactly what keeping adds (``undo.keep_tree``: the walk that
measures the disk held, the record's atomic write, dropping an earlier undo), against the
restore with undo off and its ``purge_trash`` (what keeping saves).

Before each sample (untimed) the run is put back to the archive by a restore, its kept undo
is removed, and a fraction ``--edit`` of its files (every k-th, in sorted order) is rewritten
with other bytes of the same size: the restore then replaces every top-level name, reuses
the unchanged files by hard link and extracts the edited ones, as a user undoing an
experiment on a run would see. Rounds alternate keep and off, rotated, after a discarded
warm-up round; medians, minima and maxima are reported with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.engine import RUNARCHIVE, Bench, load_average, make_mix
from runarchive.core import create_archive, purge_trash, restore_archive, undo_info

REPO_ROOT = Path(__file__).resolve().parent.parent
MODES = ("keep", "keep-again", "off")


def _edit(run: Path, fraction: float, salt: int) -> int:
    """Rewrite every k-th file (sorted) with other bytes of the same size; return how many."""
    files = sorted(
        p
        for p in run.rglob("*")
        if p.is_file() and not p.is_symlink() and "archives" not in p.parts
    )
    step = max(1, round(1 / fraction)) if fraction > 0 else 0
    chosen = files[::step] if step else []
    for path in chosen:
        size = path.stat().st_size
        path.write_bytes((b"edited %d " % salt * (size // 9 + 1))[:size])
    return len(chosen)


def _reset(run: Path, name: str, *, keep_undo: bool = False) -> None:
    """Put the run back to the archive and drop any kept undo, unless asked (untimed).

    The reset is a restore itself: with ``keep_undo`` the undo it keeps (the edited tree of
    the previous sample) is what the timed restore replaces.
    """
    restore_archive(run, name)
    if keep_undo:
        return
    work = run / "archives" / ".runarchive"
    for child in work.iterdir():
        if child.name.startswith(("undo-", "trash-")):
            shutil.rmtree(child)
        elif child.name == "undo.json":
            child.unlink()


def bench_mix(
    mix: str, tmp: Path, repeat: int, warmup: int, scale: float, edit: float
) -> dict[str, Any]:
    run = tmp / "bench-undo"
    run.mkdir()
    files, size, _ = make_mix(mix, run, scale)
    name = create_archive(run).name
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
    b = Bench(tmp, run, env)
    times: dict[str, list[float]] = {m: [] for m in (*MODES, "pre-archive")}
    held: list[int] = []
    edited = 0
    loads: list[float] = []
    for round_ in range(warmup + repeat):
        by = round_ % len(MODES)
        for mode in MODES[by:] + MODES[:by]:
            _reset(run, name, keep_undo=mode == "keep-again")
            edited = _edit(run, edit, round_)
            loads.append(load_average()[0])
            extra = {"RUNARCHIVE_UNDO_TTL": "0"} if mode == "off" else {}
            seconds, _, _ = b.spawn_raw(
                [*RUNARCHIVE, "restore", str(run), name, "--yes", "--json"], REPO_ROOT,
                {**env, **extra},
            )  # fmt: skip
            if round_ >= warmup:
                times[mode].append(seconds)
                if mode != "off":
                    info = undo_info(run)
                    assert info.available
                    held.append(info.disk)
        _reset(run, name)
        _edit(run, edit, round_)
        seconds, _, out = b.spawn_raw([*RUNARCHIVE, "archive", str(run), "--json"], REPO_ROOT)
        made = json.loads(out)
        archive_size = (run / "archives" / made["name"]).stat().st_size
        (run / "archives" / made["name"]).unlink()
        if round_ >= warmup:
            times["pre-archive"].append(seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "mix": mix,
        "files": files,
        "bytes": size,
        "edited_files": edited,
        "rounds": repeat,
        "seconds": {k: {"median": med[k], "min": min(v), "max": max(v)} for k, v in times.items()},
        "keep_vs_off_percent": 100 * (med["keep"] - med["off"]) / med["off"],
        "keep_again_vs_off_percent": 100 * (med["keep-again"] - med["off"]) / med["off"],
        "pre_archive_vs_off_percent": 100 * med["pre-archive"] / med["off"],
        "undo_bytes_held": statistics.median(held),
        "pre_archive_bytes": archive_size,
        "load_1min": {"min": min(loads), "max": max(loads)},
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_parts(mix: str, tmp: Path, repeat: int, scale: float, edit: float) -> dict[str, Any]:
    """Time the restore and, inside it, ``keep_tree`` (in this process; wall and CPU)."""
    import runarchive.core.journal as journal_module

    run = tmp / "bench-undo"
    run.mkdir()
    files, size, _ = make_mix(mix, run, scale)
    name = create_archive(run).name
    real_keep = vars(journal_module)["keep_tree"]  # wrapped for the timing, put back after
    spent: list[tuple[float, float]] = []

    def timed_keep(*args: Any, **kwargs: Any) -> None:
        wall, cpu = time.perf_counter(), _cpu()
        real_keep(*args, **kwargs)
        spent.append((time.perf_counter() - wall, _cpu() - cpu))

    setattr(journal_module, "keep_tree", timed_keep)  # noqa: B010
    rows: dict[str, list[float]] = {k: [] for k in (
        "keep_wall", "keep_cpu", "keep_tree_wall", "keep_tree_cpu", "off_wall", "off_cpu",
        "purge_wall", "purge_cpu")}  # fmt: skip
    try:
        for round_ in range(repeat + 1):
            for mode in ("keep", "off") if round_ % 2 else ("off", "keep"):
                # The reset restore deletes what it replaced inline, in both modes alike: the
                # freed inodes then weigh on the timed restore's creates the same way.
                os.environ["RUNARCHIVE_UNDO_TTL"] = "0"
                _reset(run, name)
                _edit(run, edit, round_)
                os.environ["RUNARCHIVE_UNDO_TTL"] = "0" if mode == "off" else str(7 * 86400)
                spent.clear()
                wall, cpu = time.perf_counter(), _cpu()
                restore_archive(run, name, defer_delete=True)
                wall, cpu = time.perf_counter() - wall, _cpu() - cpu
                if mode == "off":
                    pw, pc = time.perf_counter(), _cpu()
                    purge_trash(run)
                    pw, pc = time.perf_counter() - pw, _cpu() - pc
                if round_ == 0:
                    continue  # warm-up
                rows[f"{mode}_wall"].append(wall)
                rows[f"{mode}_cpu"].append(cpu)
                if mode == "keep":
                    rows["keep_tree_wall"].append(sum(w for w, _ in spent))
                    rows["keep_tree_cpu"].append(sum(c for _, c in spent))
                else:
                    rows["purge_wall"].append(pw)
                    rows["purge_cpu"].append(pc)
    finally:
        setattr(journal_module, "keep_tree", real_keep)  # noqa: B010
        os.environ.pop("RUNARCHIVE_UNDO_TTL", None)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "mix": mix, "files": files, "bytes": size, "rounds": repeat, "median_seconds": med,
        "keep_tree_percent_of_restore_wall": 100 * med["keep_tree_wall"] / med["keep_wall"],
        "keep_tree_percent_of_restore_cpu": 100 * med["keep_tree_cpu"] / med["keep_cpu"],
        "purge_percent_of_restore_wall": 100 * med["purge_wall"] / med["off_wall"],
        "load_1min": load_average()[0],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mixes", default="mixed,small")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--edit", type=float, default=0.1, help="fraction of files edited")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "out")
    parser.add_argument("--parts", action="store_true", help="in-process: what keeping adds")
    args = parser.parse_args(argv)
    reports = []
    if args.parts:
        for mix in args.mixes.split(","):
            with tempfile.TemporaryDirectory(prefix=f"undo-parts-{mix}-") as tmp:
                report = bench_parts(mix, Path(tmp), args.repeat, args.scale, args.edit)
            reports.append(report)
            m = report["median_seconds"]
            print(
                f"{mix}: {report['files']} files | restore keep {m['keep_wall']:.3f} s wall "
                f"{m['keep_cpu']:.3f} s CPU, of which keep_tree {m['keep_tree_wall']:.4f} s "
                f"({report['keep_tree_percent_of_restore_wall']:.2f} % wall, "
                f"{report['keep_tree_percent_of_restore_cpu']:.2f} % CPU) | off "
                f"{m['off_wall']:.3f} s, then purge {m['purge_wall']:.3f} s "
                f"({report['purge_percent_of_restore_wall']:.1f} %)",
                flush=True,
            )
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (args.out / f"undo-parts-{stamp}.json").write_text(json.dumps(reports, indent=2))
        return
    for mix in args.mixes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"undo-{mix}-") as tmp:
            report = bench_mix(mix, Path(tmp), args.repeat, args.warmup, args.scale, args.edit)
        reports.append(report)
        s = report["seconds"]
        print(
            f"{mix}: {report['files']} files, {report['bytes'] / 2**20:.0f} MiB, "
            f"{report['edited_files']} edited | restore keep {s['keep']['median']:.3f} s, "
            f"again {s['keep-again']['median']:.3f} s, off {s['off']['median']:.3f} s "
            f"({report['keep_vs_off_percent']:+.1f} % / "
            f"{report['keep_again_vs_off_percent']:+.1f} %) | "
            f"pre-archive {s['pre-archive']['median']:.3f} s "
            f"({report['pre_archive_vs_off_percent']:.0f} % of a restore) | undo holds "
            f"{report['undo_bytes_held'] / 2**20:.1f} MiB, a pre-archive "
            f"{report['pre_archive_bytes'] / 2**20:.1f} MiB",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"undo-{stamp}.json"
    path.write_text(json.dumps({"scale": args.scale, "edit": args.edit, "mixes": reports},
                               indent=2))  # fmt: skip
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
