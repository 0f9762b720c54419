"""What the A/B benchmarks share: this checkout against an older ``src``, as whole processes.

``bench.restore_ab`` and ``bench.create_ab`` run our CLI with one ``src`` or the other first on
``PYTHONPATH`` (``src_env``), time each run with its children's CPU (``timed``), hold the
machine's benchmark lock per round (``held``) and report medians and per-round ratios of
rotated rounds (``report``).
"""

from __future__ import annotations

import fcntl
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOCK = "/tmp/bench.lock"
MAIN = "from runarchive.cli import main; main()"


def src_env(src: Path | None, pycache: Path | None = None) -> dict[str, str]:
    """This process's environment for a tool: no Redis of ours, byte code allowed (into
    ``pycache``, one per ``src``), and ``src`` first on ``PYTHONPATH`` when given."""
    dropped = ("PYTHONDONTWRITEBYTECODE", "REDIS_URL", "RUNARCHIVE_REDIS_URL")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    if pycache is not None:
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[dict[str, float], str]:
    """Run ``argv`` to its end; return wall, user, sys (with its children) and the load."""
    load0 = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"{argv} exited {proc.returncode}:\n{out.decode()[-3000:]}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "load0": load0,
            "load1": os.getloadavg()[0]}, out.decode()  # fmt: skip


def held(lock: bool) -> int | None:
    if not lock:
        return None
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@dataclass(frozen=True, slots=True)
class Sample:
    tool: str
    round: int
    facts: dict[str, float]


def report(title: str, samples: list[Sample], tools: list[str]) -> None:
    print(f"\n{title}")
    for tool in tools:
        mine = [s.facts for s in samples if s.tool == tool]
        wall = [f["wall"] for f in mine]
        print(f"  {tool:9} wall median {statistics.median(wall):6.2f} s "
              f"({min(wall):.2f}-{max(wall):.2f}), user "
              f"{statistics.median(f['user'] for f in mine):.2f} s, sys "
              f"{statistics.median(f['sys'] for f in mine):.2f} s")  # fmt: skip
    ours = tools[0]
    for other in tools[1:]:
        ratios = [a.facts["wall"] / b.facts["wall"]
                  for a in samples if a.tool == ours
                  for b in samples if b.tool == other and b.round == a.round]  # fmt: skip
        print(
            f"  {ours}/{other}: {statistics.median(ratios):.2f} (rounds: "
            f"{', '.join(f'{r:.2f}' for r in ratios)})"
        )
    loads = [s.facts[k] for s in samples for k in ("load0", "load1")]
    print(f"  1-minute load {min(loads):.1f}-{max(loads):.1f}")
