"""Measure the CLI's start-up as whole processes: ``--help``, ``list`` and a bare import.

Run as ``python -m bench.startup [--rounds N] [--before DIR]``. Each round runs, in turn,
``python -c pass`` (the interpreter alone), ``import click``, ``import runarchive.cli``,
``runarchive --help``, ``runarchive list`` of an empty run and ``runarchive archive`` of a
one-file run (the archive removed, untimed, after each sample), each as a fresh process timed
from spawn to exit; ``--before DIR`` adds the same commands with ``DIR`` (a ``src`` folder
exported with ``git archive``) first on ``PYTHONPATH``, alternated with ours in every round.
Byte code is
compiled once into a private cache (``PYTHONPYCACHEPREFIX``) and a discarded round warms it,
so the numbers are those of an installed package, whatever ``PYTHONDONTWRITEBYTECODE`` says.
Reports median, min and max wall milliseconds, CPU milliseconds and the load average; with
``--before``, also each command's now/before ratio, the median of the rounds' own ratios
(each round's pair ran back to back, so a burst of load on the machine moves both).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.engine import REPO_ROOT, load_average


def _commands(run: Path) -> dict[str, list[str]]:
    main = "import sys; from runarchive.cli import main; sys.argv[0] = 'runarchive'; main()"
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        # The floor under every command: click's own import (8.x imports inspect, typing,
        # uuid, platform, datetime).
        "import click": [sys.executable, "-c", "import click"],
        "import runarchive.cli": [sys.executable, "-c", "import runarchive.cli"],
        "runarchive --help": [sys.executable, "-c", main, "--help"],
        "runarchive list": [sys.executable, "-c", main, "list", str(run)],
        "runarchive archive": [sys.executable, "-c", main, "archive", str(run.parent / "one")],
    }


def _time(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``argv``; return its wall and CPU (user + system) milliseconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if "archive" in argv:  # the next sample archives the same one-file run again
        archives = Path(argv[-1]) / "archives"
        for made in archives.glob("*.zip"):
            made.unlink()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall * 1000, cpu * 1000


def main(argv: Sequence[str] | None = None) -> None:
    """Alternate the start-up commands for ``--rounds`` rounds and print a table."""
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--before", type=Path, help="a src folder to compare against")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runarchive-startup-") as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        (Path(tmp) / "one").mkdir()
        (Path(tmp) / "one" / "a.txt").write_text("one file\n")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        variants = {"now": str(REPO_ROOT / "src")}
        if args.before:
            variants["before"] = str(args.before.resolve())
        cases = [
            (f"{label}: {name}", cmd, {**env, "PYTHONPATH": path})
            for label, path in variants.items()
            for name, cmd in _commands(run).items()
            if label == "now" or name not in ("python -c pass", "import click")
        ]
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
        load_before = load_average()
        for round_no in range(args.rounds + 1):
            for name, cmd, case_env in cases:
                sample = _time(cmd, case_env)
                if round_no:  # round 0 compiles the byte code and warms the page cache
                    times[name].append(sample)
        load_after = load_average()
    print(f"{args.rounds} rounds, load (1/5/15 min) before {load_before}, after {load_after}")
    print(f"{'command':36} {'wall median':>11} {'min':>6} {'max':>6} {'cpu median':>10}")
    for name, samples in times.items():
        walls = [w for w, _ in samples]
        cpu = statistics.median(c for _, c in samples)
        print(
            f"{name:36} {statistics.median(walls):9.1f}ms {min(walls):6.1f} {max(walls):6.1f} "
            f"{cpu:8.1f}ms"
        )
    names = [name.removeprefix("now: ") for name in times if name.startswith("now: ")]
    paired = [name for name in names if f"before: {name}" in times]
    if paired:
        print(f"{'now / before, median of the rounds':36} {'wall':>11} {'cpu':>17}")
    for name in paired:
        rounds = list(zip(times[f"now: {name}"], times[f"before: {name}"], strict=True))
        walls = [now[0] / before[0] for now, before in rounds]
        cpus = [now[1] / before[1] for now, before in rounds if before[1]]
        cpu_ratio = f"{statistics.median(cpus):16.2f}x" if cpus else f"{'-':>17}"
        print(f"{name:36} {statistics.median(walls):10.2f}x {cpu_ratio}")


if __name__ == "__main__":
    main()
