"""Create of one mix as whole processes, this checkout against an older ``src``, with ``zip``.

Run as ``python -m bench.create_ab --before DIR [--mix small] [--rounds 6] [--work DIR]``,
``DIR`` being a ``src`` folder exported with ``git archive``; hold ``flock /tmp/bench.lock``
around it on a shared machine (``--lock`` takes it per round).

Every round runs ``runarchive archive RUN --json`` with this checkout's ``src`` (``new``) and
with ``DIR`` (``old``) first on ``PYTHONPATH``, and ``zip -r -q`` of the run (level 6, our
folders left out), the order rotated from round to round. Each archive is deleted untimed
after its sample, so every create reads every file (no files cache). The mix is made once,
untimed (and each ``src``'s byte code compiled, untimed, into a cache of its own). The report
(``bench.ab``) gives each tool's median wall, user and system seconds and, per round, new/old
and new/zip.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from bench.ab import MAIN, Sample, held, report, src_env, timed
from bench.engine import REPO_ROOT, SKIP_DIRS, make_mix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="an older src folder")
    parser.add_argument("--mix", default="small")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--work", type=Path, default=Path("/tmp/create-ab"))
    parser.add_argument("--lock", action="store_true", help="hold the bench lock per round")
    args = parser.parse_args()
    run, out = args.work / "run", args.work / "out"
    if not run.exists():
        make_mix(args.mix, run)
    out.mkdir(parents=True, exist_ok=True)
    srcs = {"new": REPO_ROOT / "src", "old": args.before.resolve()}
    envs = {which: src_env(src, args.work / "pycache" / which) for which, src in srcs.items()}
    excludes = [arg for skip in SKIP_DIRS for arg in ("-x", f"{skip}/*")]
    for env in envs.values():  # byte code compiled into a private cache, untimed
        timed([sys.executable, "-c", MAIN, "list", str(run)], run, env)

    def sample(tool: str) -> dict[str, float]:
        if tool == "zip":
            target = out / "zip.zip"  # zip adds to an existing archive: start from none
            target.unlink(missing_ok=True)
            facts = timed(["zip", "-r", "-q", str(target), ".", *excludes], run, src_env(None))[0]
            target.unlink()
            return facts
        argv = [sys.executable, "-c", MAIN, "archive", str(run), "--json"]
        facts, output = timed(argv, run, envs[tool])
        (run / "archives" / json.loads(output.strip().splitlines()[-1])["name"]).unlink()
        return facts

    tools = ["new", "old", "zip"]
    samples: list[Sample] = []
    for index in range(args.rounds):
        fd = held(args.lock)
        try:
            for tool in tools[index % 3 :] + tools[: index % 3]:
                samples.append(Sample(tool, index, sample(tool)))
        finally:
            if fd is not None:
                os.close(fd)
    report(f"{args.mix}, create", samples, tools)
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
