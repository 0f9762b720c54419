"""Restore of one mix as whole processes, this checkout against an older ``src``, with the
reference extractors, in both disk states (issue 16).

Run as ``python -m bench.restore_ab --before DIR [--mix small] [--rounds 4]
[--states deleted,settled] [--over 5] [--work DIR]``, ``DIR`` being a ``src`` folder exported
with ``git archive``; hold ``flock /tmp/bench.lock`` around it on a shared machine (it takes
it itself per round with ``--lock``).

Every round runs each tool once, the order rotated from round to round: ``runarchive restore
RUN NAME --yes --json`` into the emptied run, with this checkout's ``src`` (``new``) and with
``DIR`` (``old``) first on ``PYTHONPATH``; ``unzip -q`` of ``zip -r`` 's archive and ``borg
extract`` (when installed) into an empty folder. States as in ``bench.engine``: *deleted*
deletes each sample's output right after it and empties the run by deleting; *settled* moves
them aside, starts ``SETTLE`` seconds after our last deletion and deletes them after its
rounds. ``--over N`` adds N alternated pairs of the restore over the intact run. Each sample
records wall seconds, user and system CPU of the process and its children (``wait4``) and the
1-minute load before and after; the report gives medians and, per round, ours over each other
tool. The mix, our archive, the zip and the borg repository are made once, untimed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from bench.ab import LOCK, MAIN, Sample, held, report, src_env, timed
from bench.engine import REPO_ROOT, SKIP_DIRS, DiskState, make_mix

SETTLE = 300.0  # ext4 without a journal skips inodes freed in the last 60 s (360 s if dirty)


class Lab(DiskState):
    """The mix, its archives and the tools, under ``work``."""

    def __init__(self, work: Path, mix: str, before: Path) -> None:
        super().__init__(work / "trash", SETTLE)
        self.work, self.run, self.out = work, work / "run", work / "out"
        self.srcs = {"new": REPO_ROOT / "src", "old": before}
        if not self.run.exists():
            make_mix(mix, self.run)
        self.out.mkdir(parents=True, exist_ok=True)
        names = sorted(p.name for p in (self.run / "archives").glob("*.zip"))
        if not names:
            made = self.spawn("new", ["archive", str(self.run), "--json"])[1]
            names = [json.loads(made.strip().splitlines()[-1])["name"]]
        self.name = names[-1]
        if not (self.out / "zip.zip").exists():
            excludes = [arg for skip in SKIP_DIRS for arg in ("-x", f"{skip}/*")]
            subprocess.run(["zip", "-r", "-q", str(self.out / "zip.zip"), ".", *excludes],
                           cwd=self.run, check=True)  # fmt: skip
        self.borg = shutil.which("borg") is not None
        if self.borg and not (self.out / "borg-repo").exists():
            repo, env = self.out / "borg-repo", self.borg_env()
            subprocess.run(["borg", "init", "-e", "none", str(repo)], env=env, check=True)
            excludes = [arg for skip in SKIP_DIRS for arg in ("--exclude", skip)]
            subprocess.run(["borg", "create", "--compression", "lz4", f"{repo}::snap", ".",
                            *excludes], cwd=self.run, env=env, check=True)  # fmt: skip
        for which in self.srcs:  # byte code compiled into a private cache, untimed
            self.spawn(which, ["list", str(self.run)])

    def env(self, which: str | None) -> dict[str, str]:
        if which is None:
            return src_env(None)
        return src_env(self.srcs[which], self.work / "pycache" / which)

    def borg_env(self) -> dict[str, str]:
        return {**self.env(None), "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_BASE_DIR": str(self.work / "borg-home")}  # fmt: skip

    def spawn(self, which: str, args: list[str]) -> tuple[dict[str, float], str]:
        return timed([sys.executable, "-c", MAIN, *args], self.work, self.env(which))

    def sample(self, tool: str) -> dict[str, float]:
        if tool in ("unzip", "borg"):
            target = self.out / f"{tool}-out"
            self.discard(target)
            target.mkdir()
            if tool == "unzip":
                argv, cwd, env = ["unzip", "-q", str(self.out / "zip.zip"), "-d", str(target)], \
                    self.out, self.env(None)  # fmt: skip
            else:
                argv, cwd, env = ["borg", "extract", f"{self.out / 'borg-repo'}::snap"], \
                    target, self.borg_env()  # fmt: skip
            result = timed(argv, cwd, env)[0]
            self.discard(target)
            return result
        which, _, over = tool.partition("-")
        if not over:
            for child in self.run.iterdir():
                if child.name not in SKIP_DIRS:
                    self.discard(child)
        return self.spawn(which, ["restore", str(self.run), self.name, "--yes", "--json"])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--mix", default="small")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--states", default="deleted,settled")
    parser.add_argument("--over", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/runarchive-restore-ab"))
    parser.add_argument("--lock", action="store_true", help=f"hold {LOCK} per round")
    args = parser.parse_args()
    lab = Lab(args.work / args.mix, args.mix, args.before.resolve())
    tools = ["new", "old", "unzip"] + (["borg"] if lab.borg else [])
    everything: list[dict[str, object]] = []
    for state in args.states.split(","):
        lab.settled = state == "settled"
        if lab.settled:
            lab.settle()
        samples: list[Sample] = []
        for index in range(args.rounds):
            order = tools[index % len(tools) :] + tools[: index % len(tools)]
            fd = held(args.lock)
            try:
                for tool in order:
                    samples.append(Sample(tool, index, lab.sample(tool)))
            finally:
                if fd is not None:
                    os.close(fd)
        report(f"{args.mix}, restore into the emptied run, {state}", samples, tools)
        everything += [{**asdict(s), "state": state} for s in samples]
        if lab.settled:
            lab.empty_trash()
    lab.settled = False
    pairs: list[Sample] = []
    for index in range(args.over):
        fd = held(args.lock)
        try:
            for tool in ("new-over", "old-over")[:: 1 if index % 2 == 0 else -1]:
                pairs.append(Sample(tool, index, lab.sample(tool)))
        finally:
            if fd is not None:
                os.close(fd)
    if pairs:
        report(f"{args.mix}, restore over the intact run", pairs, ["new-over", "old-over"])
        everything += [{**asdict(s), "state": "over"} for s in pairs]
    out = args.work / f"{args.mix}.json"
    out.write_text(json.dumps(everything, indent=1))
    print(f"\nsamples: {out}")


if __name__ == "__main__":
    main()
