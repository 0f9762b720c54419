"""Create of one mix as whole processes, this checkout against an older ``src``, with ``zip``.

Run as ``python -m bench.create_ab --before DIR [--mix small] [--rounds 6] [--work DIR]``,
``DIR`` being a ``src`` folder exported with ``git archive``; hold ``flock /tmp/bench.lock``
around it on a shared machine.

Every round runs ``runarchive archive RUN --json`` with this checkout's ``src`` (``new``) and
with ``DIR`` (``old``) first on ``PYTHONPATH``, and ``zip -r -q`` of the run (level 6, our
folders left out), the order rotated from round to round. Each archive is deleted untimed
after its sample, so every create reads every file (no files cache). The mix is made once,
untimed. The report gives each tool's median wall seconds and, per round, new/old and
new/zip.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.engine import REPO_ROOT, SKIP_DIRS, make_mix

MAIN = "from runarchive.cli import main; main()"


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
    return seconds, proc.stdout


def _ours(run: Path, src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    seconds, out = _timed([sys.executable, "-c", MAIN, "archive", str(run), "--json"], run, env)
    (run / "archives" / json.loads(out.strip().splitlines()[-1])["name"]).unlink()
    return seconds


def _zip(run: Path, out: Path) -> float:
    target = out / "zip.zip"
    target.unlink(missing_ok=True)
    excludes = [arg for skip in SKIP_DIRS for arg in ("-x", f"{skip}/*")]
    seconds, _ = _timed(["zip", "-r", "-q", str(target), ".", *excludes], run, dict(os.environ))
    target.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="an older src folder")
    parser.add_argument("--mix", default="small")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--work", type=Path, default=Path("/tmp/create-ab"))
    args = parser.parse_args()
    run, out = args.work / "run", args.work / "out"
    if not run.exists():
        make_mix(args.mix, run)
    out.mkdir(parents=True, exist_ok=True)
    tools = {
        "new": lambda: _ours(run, REPO_ROOT / "src"),
        "old": lambda: _ours(run, args.before.resolve()),
        "zip": lambda: _zip(run, out),
    }
    names = list(tools)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(args.rounds):
        order = names[round_no % 3 :] + names[: round_no % 3]
        got = {name: tools[name]() for name in order}
        for name, seconds in got.items():
            samples[name].append(seconds)
        print(f"round {round_no + 1} ({' '.join(order)}, load {os.getloadavg()[0]:.1f}): "
              + "  ".join(f"{n} {got[n]:.2f} s" for n in names)
              + f"  new/old {got['new'] / got['old']:.2f}  new/zip {got['new'] / got['zip']:.2f}",
              flush=True)  # fmt: skip
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(json.dumps({"mix": args.mix, "rounds": args.rounds, "median_seconds": medians,
                      "new_over_old": medians["new"] / medians["old"],
                      "new_over_zip": medians["new"] / medians["zip"]}, indent=2))  # fmt: skip
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
