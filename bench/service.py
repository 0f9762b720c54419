"""Benchmark the service: list, status stream, jobstatus, throughput, message volume, HTTP load.

Run as ``python -m bench.service [--only ITEM,...] [--out DIR]``; items, in order:

``list``
    500 archives in one run (one real archive, hard-linked under 499 more valid names);
    ``GET /runs/<runid>/archive/list`` with a Bearer token: the first call (every central
    directory read) and 200 warm calls on one keep-alive connection.
``ws``
    1, 50 and 200 websocket watchers of one run (``simple_websocket`` clients, up to 50 per
    client process, one reader thread each). Lines are PUBLISHed straight to the run's channel
    carrying ``time.monotonic_ns()`` (system-wide on Linux), ``--rate`` a second (default 20,
    above the ~12 a job publishes); each client takes
    its receive time when its reader thread gets the frame. Meanwhile one thread polls
    ``GET /rq/api/jobstatus/<id>`` every 20 ms: its latency while the sockets are open.
``throughput``
    20 generated runs archived through ``POST /runs/<runid>/rq/api/archive`` by 2 workers (the
    one ``serve`` starts plus one more ``runarchive worker`` on the same embedded valkey);
    jobs per minute, and the TRIGGER lines counted per job from a ``PSUBSCRIBE *``.
``volume``
    messages published on the channel of one archive job of a 30,000-file run.
``load``
    ``wrk`` (Debian package) from a second process on loopback, 10 s per route: list (the
    500-archive run), jobstatus and download, while archive jobs run back to back; then the
    slowest route once more under ``py-spy record`` for the profile.

The service is a real ``runarchive serve`` (temp data dir and runs root, embedded valkey, its
local worker) with ONE gunicorn worker process (``--web-workers N`` to compare),
``RUNARCHIVE_WEB_THREADS=256`` and ``RUNARCHIVE_WS_MAX_SOCKETS=220`` (the default cap is half
the threads, 16 with the default 32, which would refuse the 50- and 200-watcher rounds).
Every latency is measured by a client on the same 2-core machine, so it includes the loopback
and the client's own scheduling; load averages are recorded before and after each item, and
the ws rounds record the CPU share of the server and of the client processes. Results go to
``<out>/service.json``; ``docs/benchmarks.md`` is written from them. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from bench.engine import machine
from bench.harness import (
    WEB_THREADS,
    WS_MAX_SOCKETS,
    Service,
    load,
    make_run,
    running_service,
    stats_ms,
)

ITEMS = ("list", "ws", "throughput", "volume", "load")
PER_PROCESS = 50
# Leaf frames of threads that wait for work, not do it (gunicorn's pool waits in _worker).
IDLE = re.compile(r"\b(wait|select|poll|_wait_for_tstate_lock|accept)\b|^_worker \(concurrent/")
TRIGGER = re.compile(r"^rq:(?P<id>\S+) TRIGGER +\S+ (?P<trigger>\S+)$")


# ---------------------------------------------------------------------------- 2: list


def bench_list(service: Service, args: argparse.Namespace) -> dict[str, Any]:
    from runarchive.core import create_archive

    runid = "bench-list"
    run = make_run(service, runid, 4, 300)
    created = create_archive(run)
    folder = run / "archives"
    first_stamp = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(1, args.archives):
        stamp = (first_stamp + timedelta(seconds=i)).strftime("%Y%m%dT%H%M%SZ")
        os.link(folder / created.name, folder / f"{runid}.{stamp}.zip")
    path = f"/runs/{runid}/archive/list"
    conn = service.connection()
    status, body, first = service.request("GET", path, conn=conn)
    listed = len(json.loads(body)["archives"]) if status == 200 else 0
    warm = [service.request("GET", path, conn=conn)[2] for _ in range(args.list_calls)]
    conn.close()
    return {
        "archives": listed,
        "archive_size": created.size,
        "response_bytes": len(body),
        "first_call_ms": round(first * 1000, 2),
        "warm": stats_ms(warm),
    }


# ---------------------------------------------------------------------------- 3: websockets


def _watch(
    url: str, token: str, count: int, ready: Any, results: Any, stop: Any, index: int
) -> None:
    """Client process: hold ``count`` sockets; report (seq, latency s) of every bench line."""
    import simple_websocket  # type: ignore[import-untyped]

    headers = {"Authorization": f"Bearer {token}"}
    samples: list[tuple[int, float]] = []
    lock = threading.Lock()
    clients = []
    try:
        for _ in range(count):
            clients.append(simple_websocket.Client.connect(url, headers=headers))
    except Exception as exc:
        ready.put((index, len(clients), repr(exc)))
        results.put((index, []))
        return
    ready.put((index, len(clients), ""))

    def read(client: Any) -> None:
        while not stop.is_set():
            try:
                message = client.receive(timeout=0.5)
            except Exception:
                return
            if message is None:
                continue
            now = time.monotonic_ns()
            frame = json.loads(message)
            if frame.get("type") == "ping":
                client.send('{"type":"pong"}')
            elif frame.get("type") == "status" and frame["data"].startswith("bench "):
                _, seq, sent = frame["data"].split()
                with lock:
                    samples.append((int(seq), (now - int(sent)) / 1e9))

    readers = [threading.Thread(target=read, args=(c,), daemon=True) for c in clients]
    for reader in readers:
        reader.start()
    stop.wait()
    for reader in readers:
        reader.join(timeout=2)
    for client in clients:
        with contextlib.suppress(Exception):
            client.close()
    results.put((index, samples))


def _watch_async(
    url: str, token: str, count: int, ready: Any, results: Any, stop: Any, index: int
) -> None:
    """Client process, like ``_watch`` but with ``websockets`` on one asyncio loop (a browser's
    model: one event loop, no thread per socket)."""
    import asyncio

    from websockets.asyncio.client import connect

    samples: list[tuple[int, float]] = []

    async def read(conn: Any) -> None:
        async for message in conn:
            now = time.monotonic_ns()
            frame = json.loads(message)
            if frame.get("type") == "ping":
                await conn.send('{"type":"pong"}')
            elif frame.get("type") == "status" and frame["data"].startswith("bench "):
                _, seq, sent = frame["data"].split()
                samples.append((int(seq), (now - int(sent)) / 1e9))

    async def run() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        conns = []
        try:
            for _ in range(count):
                conns.append(await connect(url, additional_headers=headers, ping_interval=None))
        except Exception as exc:
            ready.put((index, len(conns), repr(exc)))
            return
        ready.put((index, len(conns), ""))
        tasks = [asyncio.create_task(read(conn)) for conn in conns]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()

    asyncio.run(run())
    results.put((index, samples))


def _poll(
    service: Service, path: str, period: float, stop: threading.Event, seen: list[float]
) -> None:
    conn = service.connection()
    while not stop.is_set():
        status, _, seconds = service.request("GET", path, conn=conn)
        if status == 200:
            seen.append(seconds)
        time.sleep(period)
    conn.close()


def bench_ws(service: Service, args: argparse.Namespace) -> dict[str, Any]:
    runid = "bench-ws"
    make_run(service, runid, 1, 50)
    job_id = service.archive(runid)
    service.wait_job(job_id)
    publisher = redis.Redis.from_url(service.redis_url)
    channel = f"{runid}:archive"
    url = f"ws://127.0.0.1:{service.port}/status/{runid}:archive"
    rounds: dict[str, Any] = {}
    for watchers in (0, *args.watchers):
        load_before = load()
        ctx = multiprocessing.get_context("fork")
        ready, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        sizes = [PER_PROCESS] * (watchers // PER_PROCESS)
        if watchers % PER_PROCESS:
            sizes.append(watchers % PER_PROCESS)
        target = _watch_async if args.client == "asyncio" else _watch
        procs = [
            ctx.Process(target=target, args=(url, service.token, n, ready, results, stop, i))
            for i, n in enumerate(sizes)
        ]
        for proc in procs:
            proc.start()
        connected, errors = 0, []
        for _ in procs:
            _, n, error = ready.get(timeout=120)
            connected += n
            if error:
                errors.append(error)
        time.sleep(2)  # let the relay subscribe and every session start its live loop
        web_pid = service.web_worker_pid()
        server_cpu = sum(map(_cpu_seconds, service.web_worker_pids()))
        clients_cpu = sum(_cpu_seconds(p.pid) for p in procs if p.pid)
        spy = None
        if args.profile_ws and watchers == max(args.watchers):
            raw = args.out / f"profile-ws-{watchers}.txt"
            spy = _spy(web_pid, args.messages / args.rate, raw)
        window = time.monotonic()
        polled: list[float] = []
        halt = threading.Event()
        poller = threading.Thread(
            target=_poll,
            args=(service, f"/rq/api/jobstatus/{job_id}", 0.02, halt, polled),
        )
        poller.start()
        published = 0
        for seq in range(args.messages):
            publisher.publish(channel, f"bench {seq} {time.monotonic_ns()}")
            published += 1
            time.sleep(1 / args.rate)
        time.sleep(1)
        window = time.monotonic() - window
        server_cpu = sum(map(_cpu_seconds, service.web_worker_pids())) - server_cpu
        clients_cpu = sum(_cpu_seconds(p.pid) for p in procs if p.pid) - clients_cpu
        halt.set()
        poller.join()
        stop.set()
        samples: list[tuple[int, float]] = []
        for _ in procs:
            samples.extend(results.get(timeout=60)[1])
        for proc in procs:
            proc.join(timeout=30)
        kept = [lat for seq, lat in samples if seq >= args.skip]
        expected = connected * (published - args.skip)
        rounds[str(watchers)] = {
            "watchers_asked": watchers,
            "connected": connected,
            "errors": errors[:3],
            "messages": published,
            "delivered": len(kept),
            "expected": expected,
            "latency": stats_ms(kept),
            "jobstatus_while_open": stats_ms(polled),
            "cpu_share_server": round(server_cpu / window, 2),
            "cpu_share_clients": round(clients_cpu / window, 2),
            "load_before": load_before,
            "load_after": load(),
        }
        if spy is not None:
            spy.wait(timeout=120)
            rounds[str(watchers)]["profile"] = summarize_profile(raw)
        print(f"  ws {watchers}: {rounds[str(watchers)]}", flush=True)
    publisher.close()
    return {
        "client": args.client,
        "rate_per_s": args.rate,
        "skip_first": args.skip,
        "rounds": rounds,
    }


# ---------------------------------------------------------------------------- 4: throughput


class Listener:
    """PSUBSCRIBE to a pattern in a thread; keep every (channel, line, monotonic time)."""

    def __init__(self, url: str, pattern: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.psubscribe(pattern)
        self.lines: list[tuple[str, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "pmessage":
                self.lines.append((message["channel"], message["data"], time.monotonic()))

    def triggers(self) -> list[tuple[str, str, float]]:
        found = []
        for _, line, at in list(self.lines):
            match = TRIGGER.match(line)
            if match:
                found.append((match["id"], match["trigger"], at))
        return found

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pubsub.close()
        self.client.close()


def bench_throughput(service: Service, args: argparse.Namespace) -> dict[str, Any]:
    runids = [f"bench-tp-{i:02d}" for i in range(args.runs)]
    for i, runid in enumerate(runids):
        make_run(service, runid, args.run_mib, args.run_files, seed=i)
    service.add_worker()
    listener = Listener(service.redis_url, "*")
    time.sleep(0.5)
    load_before = load()
    started = time.monotonic()
    jobs = {service.archive(runid): runid for runid in runids}
    enqueued = time.monotonic() - started
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if {job for job, _, _ in listener.triggers()} >= set(jobs):
            break
        time.sleep(0.1)
    last = max((at for job, _, at in listener.triggers() if job in jobs), default=time.monotonic())
    time.sleep(3)  # a late duplicate would show up here
    listener.close()
    per_job = Counter(job for job, _, _ in listener.triggers() if job in jobs)
    kinds = Counter(trigger for job, trigger, _ in listener.triggers() if job in jobs)
    polled = Counter(str(service.job(job).get("trigger")) for job in jobs)
    elapsed = last - started
    return {
        "runs": len(runids),
        "run_mib": args.run_mib,
        "run_files": args.run_files,
        "workers": 2,
        "enqueue_all_s": round(enqueued, 3),
        "elapsed_s": round(elapsed, 2),
        "jobs_per_min": round(len(jobs) / elapsed * 60, 1),
        "triggers_per_job": dict(Counter(per_job[job] for job in jobs)),
        "exactly_one_each": all(per_job[job] == 1 for job in jobs),
        "trigger_kinds": dict(kinds),
        "jobstatus_triggers": dict(polled),
        "load_before": load_before,
        "load_after": load(),
    }


# ---------------------------------------------------------------------------- 5: volume


def bench_volume(service: Service, args: argparse.Namespace) -> dict[str, Any]:
    runid = "bench-volume"
    run = make_run(service, runid, args.volume_mib, args.volume_files)
    files = sum(1 for p in run.rglob("*") if p.is_file() and not p.is_symlink())
    listener = Listener(service.redis_url, f"{runid}:archive")
    time.sleep(0.5)
    load_before = load()
    job_id = service.archive(runid)
    info = service.wait_job(job_id, timeout=1800)
    time.sleep(1)
    listener.close()
    kinds = Counter(
        line.split()[1] if line.startswith("rq:") else line.split()[0].rstrip(":")
        for _, line, _ in listener.lines
    )
    span = listener.lines[-1][2] - listener.lines[0][2] if listener.lines else 0.0
    return {
        "run_files": files,
        "run_mib": args.volume_mib,
        "messages": len(listener.lines),
        "by_kind": dict(kinds),
        "first_to_last_line_s": round(span, 2),
        "messages_per_s": round(len(listener.lines) / span, 1) if span else None,
        "trigger": info.get("trigger"),
        "load_before": load_before,
        "load_after": load(),
    }


# ---------------------------------------------------------------------------- 6: load


def _wrk(service: Service, path: str, seconds: int, connections: int) -> dict[str, Any]:
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {service.token}",
            f"http://127.0.0.1:{service.port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    out = done.stdout

    def find(pattern: str) -> str:
        match = re.search(pattern, out)
        return match.group(1) if match else ""

    return {
        "path": path,
        "requests_per_s": float(find(r"Requests/sec:\s+([\d.]+)") or 0),
        "p50": find(r"\n\s+50%\s+(\S+)"),
        "p99": find(r"\n\s+99%\s+(\S+)"),
        "non_2xx": int(find(r"Non-2xx or 3xx responses: (\d+)") or 0),
        "errors": find(r"(Socket errors:.*)"),
        "requests": int(find(r"(\d+) requests in") or 0),
    }


def _keep_archiving(service: Service, runid: str, stop: threading.Event, jobs: list[str]) -> None:
    while not stop.is_set():
        job_id = service.archive(runid)
        jobs.append(job_id)
        while not stop.is_set() and not service.job(job_id).get("trigger"):
            time.sleep(0.5)
    if jobs:
        service.wait_job(jobs[-1])


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spy(pid: int, seconds: float, raw: Path) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` (raw collapsed stacks, 200 Hz) on ``pid``."""
    pyspy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(pyspy),
            "record",
            "--nonblocking",
            "-r",
            "200",
            "-d",
            str(math.ceil(seconds)),
            "-f",
            "raw",
            "-o",
            str(raw),
            "-p",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _profile(service: Service, path: str, seconds: int, out: Path) -> dict[str, Any]:
    raw = out / "profile-load.txt"
    spy = _spy(service.web_worker_pid(), seconds + 2, raw)
    time.sleep(1)
    under = _wrk(service, path, seconds, 8)
    spy.wait(timeout=120)
    return {"wrk": under, "raw": str(raw), **summarize_profile(raw)}


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Return the busiest frames of a py-spy raw (collapsed) profile, self and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f.strip()]
        # Idle gunicorn threads wait in select/poll/lock: they are not request work.
        if frames and IDLE.search(frames[-1]):
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return {
        "busy_samples": total,
        "self_top": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
        "inclusive_top": [
            (f, round(100 * n / total, 1))
            for f, n in inclusive.most_common(top * 4)
            if "runarchive" in f or "werkzeug" in f or "flask" in f or "redis" in f or "rq/" in f
        ][:top],
    }


def bench_load(service: Service, args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install -y wrk)"}
    list_run = service.runs_root / "bench-list"
    if not list_run.exists():
        bench_list(service, args)
    name = sorted((list_run / "archives").glob("*.zip"))[0].name
    busy = "bench-load"
    make_run(service, busy, args.load_run_mib, args.load_run_files, seed=7)
    job_id = service.archive(busy)
    service.wait_job(job_id)
    routes = {
        "list (500 archives)": "/runs/bench-list/archive/list",
        "jobstatus": f"/rq/api/jobstatus/{job_id}",
        f"download ({(list_run / 'archives' / name).stat().st_size / 2**20:.1f} MiB)": (
            f"/runs/bench-list/archive/download/{name}"
        ),
    }
    results: dict[str, Any] = {}
    stop = threading.Event()
    jobs: list[str] = []
    archiver = threading.Thread(target=_keep_archiving, args=(service, busy, stop, jobs))
    archiver.start()
    try:
        time.sleep(1)
        for label, path in routes.items():
            before = load()
            results[label] = {
                **_wrk(service, path, args.seconds, args.connections),
                "load_before": before,
                "load_after": load(),
            }
            print(f"  load {label}: {results[label]}", flush=True)
        worst = max(routes, key=lambda label: _ms(results[label]["p99"]))
        results["profile"] = {"route": worst, **_profile(service, routes[worst], 10, args.out)}
    finally:
        stop.set()
        archiver.join()
    results["archive_jobs_during_load"] = len(jobs)
    return results


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return math.inf
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]
    return float(match[1]) * scale


# ---------------------------------------------------------------------------- main

BENCHES: dict[str, Callable[[Service, argparse.Namespace], dict[str, Any]]] = {
    "list": bench_list,
    "ws": bench_ws,
    "throughput": bench_throughput,
    "volume": bench_volume,
    "load": bench_load,
}


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run the selected items against one service, write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__)
    parser.add_argument("--only", default=",".join(ITEMS), help="comma-separated items")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="report folder")
    parser.add_argument("--archives", type=int, default=500)
    parser.add_argument("--list-calls", type=int, default=200)
    parser.add_argument(
        "--watchers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 50, 200]
    )
    parser.add_argument("--messages", type=int, default=100, help="lines published per round")
    parser.add_argument("--rate", type=float, default=20, help="lines a second")
    parser.add_argument("--skip", type=int, default=5, help="first lines not counted")
    parser.add_argument(
        "--client",
        choices=("asyncio", "threads"),
        default="asyncio" if importlib.util.find_spec("websockets") else "threads",
        help="websocket watchers: websockets on asyncio (default when installed) or "
        "simple_websocket with a thread per socket",
    )
    parser.add_argument(
        "--profile-ws", action="store_true", help="py-spy the server in the largest ws round"
    )
    parser.add_argument(
        "--web-workers", type=int, default=1, help="gunicorn processes (default 1: one process)"
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--run-mib", type=float, default=20)
    parser.add_argument("--run-files", type=int, default=500)
    parser.add_argument("--volume-mib", type=float, default=300)
    parser.add_argument("--volume-files", type=int, default=30000)
    parser.add_argument("--load-run-mib", type=float, default=200)
    parser.add_argument("--load-run-files", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per route")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    args = parser.parse_args(argv)
    selected = [item.strip() for item in args.only.split(",") if item.strip()]
    unknown = set(selected) - set(ITEMS)
    if unknown:
        parser.error(f"unknown items: {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()
    report: dict[str, Any] = {"items": {}}
    with (
        tempfile.TemporaryDirectory(prefix="runarchive-svc-") as tmp,
        running_service(Path(tmp), args.web_workers) as service,
    ):
        report["machine"] = machine(Path(tmp))
        report["settings"] = {
            "web_workers": args.web_workers,
            "web_threads": WEB_THREADS,
            "ws_max_sockets": WS_MAX_SOCKETS,
            "args": {k: str(v) for k, v in vars(args).items()},
        }
        for item in selected:
            print(f"{item} ... (load {load()})", flush=True)
            started = time.monotonic()
            report["items"][item] = {
                "load_before": load(),
                **BENCHES[item](service, args),
                "load_after": load(),
                "wall_s": round(time.monotonic() - started, 1),
            }
            print(json.dumps(report["items"][item], indent=1), flush=True)
            stem = "service" if len(selected) == len(ITEMS) else "service-" + "-".join(selected)
            (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {args.out / (stem + '.json')}")


if __name__ == "__main__":
    main()
