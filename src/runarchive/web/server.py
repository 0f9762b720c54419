"""``runarchive serve``: gunicorn (gthread) running the app, plus, when needed, a local worker.

Process layout::

    runarchive serve                 gunicorn master (this process)
      ├─ gunicorn worker × N         one app each (built after the fork), one status relay each
      └─ runarchive worker           only without REDIS_URL (or with --worker); own session
           └─ valkey-server          the embedded Redis, started and stopped by the worker

Without a Redis URL the worker subprocess is started first; it starts (or joins) the embedded
valkey in the data dir, whose URL it writes to ``<data dir>/valkey.url``; ``serve`` waits for
that URL to answer, then starts gunicorn with it. The embedded server lives in the worker
rather than in this process because gunicorn's workers are forks of this process: a forked
copy of the embedded server's handle would stop the server when any gunicorn worker exits.

The web processes run ``httpworker.HeadFirstWorker`` (gthread that reads each request head
in its event loop, so clients sending headers slowly hold no thread). The data dir is made
0700 (tightened if it exists); the files in it are the owner's only (SQLite: ``db.py``; the
embedded valkey's: ``jobs/connection.py``; the demo secret key: ``settings.py``).

Stopping (SIGTERM or SIGINT to ``serve``): gunicorn stops its workers (their websockets are
closed first with 1001, "going away", so clients reconnect: ``gunicorn_hooks.py``), then
``serve`` sends SIGTERM to the worker (RQ's warm shutdown: an idle worker exits at once, a busy
one finishes its job), waits ``RUNARCHIVE_STOP_TIMEOUT`` seconds, then asks again (RQ's cold
shutdown: the job is stopped and ends as failed; restores are crash-safe), and finally kills
the worker's whole process group. The worker's own exit stops the embedded valkey. The worker
runs in its own session so a terminal's Ctrl-C reaches only ``serve``, which then stops things
in that order.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from runarchive.jobs import QueueUnavailable, Settings, embedded_url

from . import gunicorn_hooks
from .app import create_app, shutdown
from .settings import WebSettings, secret_key_for

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT = 60.0
GRACEFUL_TIMEOUT = 10
WORKER_CONNECTIONS = 1000  # per web process, slow ones included (gunicorn's default)
DATA_DIR_MODE = 0o700


class WebServer(BaseApplication):  # type: ignore[misc]
    """gunicorn running ``factory()``, which is called in each worker after the fork."""

    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Apply our options (gunicorn's own command line and files are not read)."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        """Build this worker's app."""
        return self.factory()


def gunicorn_options(web: WebSettings, host: str, port: int) -> dict[str, Any]:
    """Return the gunicorn settings of ``serve``."""
    return {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": web.web_workers,
        # gthread that reads request heads in its event loop, so slow clients hold no thread
        "worker_class": "runarchive.web.httpworker.HeadFirstWorker",
        "threads": web.web_threads,
        "worker_connections": WORKER_CONNECTIONS,
        "timeout": 60,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "proc_name": "runarchive",
        "control_socket_disable": True,
        # websockets hung up with 1001 at SIGTERM, connections closed at exit (one owner for
        # serve and for hosts that run gunicorn themselves)
        "post_worker_init": gunicorn_hooks.post_worker_init,
        "worker_int": gunicorn_hooks.worker_int,
        "worker_exit": gunicorn_hooks.worker_exit,
    }


def worker_command(settings: Settings) -> list[str]:
    """Return the command line of the local ``runarchive worker``."""
    cmd = [sys.executable, "-m", "runarchive.jobs", "worker", "--data-dir", str(settings.data_dir)]
    if settings.redis_url:
        cmd += ["--redis-url", settings.redis_url]
    if settings.runs_root is not None:
        cmd += ["--runs-root", str(settings.runs_root)]
    cmd += ["--queue", settings.queue, "--key-prefix", settings.key_prefix]
    return cmd


class LocalWorker:
    """The ``runarchive worker`` subprocess of ``serve``, in its own session."""

    def __init__(self, settings: Settings, stop_timeout: float) -> None:
        self.settings = settings
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker."""
        log.info("starting the local worker")
        self.proc = subprocess.Popen(worker_command(self.settings), start_new_session=True)

    def wait_for_embedded(self, timeout: float = WORKER_START_TIMEOUT) -> str:
        """Wait until the worker's embedded Redis answers; return its URL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            url = embedded_url(self.settings.data_dir)
            if url is not None:
                return url
            if self.proc is not None and self.proc.poll() is not None:
                raise QueueUnavailable(
                    f"The local worker exited ({self.proc.returncode}) before its embedded "
                    "Redis answered; see its log above."
                )
            time.sleep(0.1)
        raise QueueUnavailable(f"The embedded Redis did not answer within {timeout:.0f} s.")

    def stop(self) -> None:
        """Stop the worker: warm, then cold shutdown, then kill its process group."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for attempt, wait in enumerate((self.stop_timeout, 5.0)):
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            if attempt == 0:
                log.info("stopping the local worker (up to %.0f s for a running job)", wait)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
        log.warning("local worker did not stop; killing it")
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def serve(
    web: WebSettings,
    jobs_settings: Settings,
    *,
    host: str,
    port: int,
    worker: bool | None = None,
) -> None:
    """Run the service until SIGTERM/SIGINT; start and stop a local worker when needed."""
    owner = os.getpid()
    secret_key_for(web, jobs_settings.data_dir, testing=False)  # refuse early, before starting
    if worker is False and not jobs_settings.redis_url:
        raise QueueUnavailable(
            "Without a Redis URL `serve` needs its local worker (it runs the embedded Redis)."
        )
    local: LocalWorker | None = None
    if worker or not jobs_settings.redis_url:
        local = LocalWorker(jobs_settings, web.stop_timeout)
    try:
        if local is not None:
            local.start()
            if not jobs_settings.redis_url:
                jobs_settings = replace(jobs_settings, redis_url=local.wait_for_embedded())

        def factory() -> Flask:
            return create_app({"JOBS_SETTINGS": jobs_settings, "WEB_SETTINGS": web})

        shutdown(factory())  # fail here, before binding, on bad settings or database
        log.info("serving on http://%s:%d", host, port)
        WebServer(factory, gunicorn_options(web, host, port)).run()
    finally:
        # gunicorn's workers are forks of this process and unwind through here: only the
        # process that started the worker may stop it.
        if os.getpid() == owner and local is not None:
            local.stop()


def _ensure_dirs(settings: Settings) -> None:
    """Create the data dir for the owner only (0700), and tighten an existing one."""
    path = Path(settings.data_dir)
    path.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(DATA_DIR_MODE)


def run_serve(
    web: WebSettings, jobs_settings: Settings, host: str, port: int, worker: bool | None
) -> None:
    """``serve`` for the CLI: make the data dir (owner only), then serve until stopped."""
    _ensure_dirs(jobs_settings)
    serve(web, jobs_settings, host=host, port=port, worker=worker)
