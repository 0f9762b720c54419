"""The two back-ends the WEPPcloud-like console is tested against, each in a process of its own.

* ``serve`` — ``runarchive serve`` (gunicorn, its websocket relay) on the tests' valkey, logged
  in with runarchive's own accounts; the console page is served by Playwright on the service's
  origin (``runarchive serve`` has no host pages), with the session's CSRF token.
* ``host`` — a host Flask app mounting runarchive with ``init_app`` under ``/archive-svc``
  (``tests/web/wepp_host.py``: the documented example plus a console page and a policy taking
  ``config``), served by gunicorn with runarchive's hooks as its docs say, logged in with the
  host's own login; the console page is the host's, with the host's CSRF token.

Both run on an external Redis with no worker of their own: the tests start ``runarchive
worker`` processes (``tests.support.workers.Workers``) when they want jobs to run, so a job can
wait, queued, across a restart of the back-end.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import BrowserContext, Page

from runarchive.jobs import Settings
from runarchive.jobs.locks import acquire_lock, release_lock
from runarchive.synthetic_run import generate_run
from tests.support.processes import free_port, stop_session
from tests.support.serve import runarchive_command
from tests.support.workers import worker_env
from tests.web.wepp_host import CLIENT, PREFIX

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
CONFIG = "disturbed9002"
HOST_USER = "ana"
HOST_RUNS = 16  # run ids the host's user owns, declared when the host starts
# A console page opened by ``open_console(page, run)`` once the context is logged in.
Opener = Callable[[Page, Path], None]


@dataclass
class Backend:
    """A back-end process the test can stop and start again, and the deployment it serves."""

    name: str
    url: str
    settings: Settings
    redis_url: str
    command: list[str]
    env: dict[str, str]
    log: Path
    health_path: str
    prefix: str = ""  # where runarchive's URLs are: the mount prefix
    proc: subprocess.Popen[bytes] | None = None

    @property
    def runs_root(self) -> Path:
        assert self.settings.runs_root is not None
        return self.settings.runs_root

    def start(self, timeout: float = 90) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(self.url + self.health_path, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.25)
        pytest.fail(f"{self.name} did not become healthy:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_session(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @contextlib.contextmanager
    def nodb_lock(self, runid: str, relpath: str) -> Iterator[None]:
        """Hold a NoDb lock of the run, as the host application does."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            token = acquire_lock(client, runid, relpath, ttl=300, owner="host-app:1")
            assert token is not None
            yield
            release_lock(client, runid, relpath, token)
        finally:
            client.close()

    def new_run(self) -> Path:
        """Make a run the logged-in user may change."""
        path = self.runs_root / self.next_runid()
        generate_run(path, seed=3, target_bytes=256 * 1024, files=40)
        return path

    def next_runid(self) -> str:
        return f"wepp-{uuid.uuid4().hex[:10]}"

    def log_in(self, context: BrowserContext) -> Opener:
        """Log the browser context in; return how to open the console of a run in it."""
        raise NotImplementedError


@dataclass
class Serve(Backend):
    """``runarchive serve``; the admin of its own accounts uses the console."""

    def log_in(self, context: BrowserContext) -> Opener:
        page = context.new_page()
        page.goto("/login")
        page.fill("#username", "admin")
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("form[action='/login'] button[type=submit]")
        page.goto("/")
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        assert csrf
        page.close()
        script = (CLIENT / "console.js").read_text()

        def open_console(fresh: Page, run: Path) -> None:
            html = (CLIENT / "console.html").read_text()
            for key, value in {
                "csrf": csrf,
                "script": "/__wepp/console.js",
                "prefix": "",
                "runid": run.name,
                "config": CONFIG,
            }.items():
                html = html.replace("{{" + key + "}}", value)

            def serve(route: Any) -> None:
                if route.request.url.endswith("/console.js"):
                    route.fulfill(body=script, content_type="text/javascript")
                else:
                    route.fulfill(body=html, content_type="text/html")

            fresh.route("**/__wepp/**", serve)
            fresh.goto(f"/__wepp/console/{run.name}")

        return open_console


@dataclass
class Host(Backend):
    """The host app with runarchive mounted by ``init_app``; its user ``ana`` uses the console."""

    runids: list[str] = field(default_factory=list)
    policy_log: Path = Path()

    def next_runid(self) -> str:
        return self.runids.pop()  # the host knows its runs; ana owns these

    def log_in(self, context: BrowserContext) -> Opener:
        page = context.new_page()
        page.goto("/login")
        assert page.title() == "Host login"  # the host's own form, not runarchive's
        page.fill("input[name=username]", HOST_USER)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("button")
        assert page.locator("h1").inner_text() == "Your runs at the host"
        page.close()

        def open_console(fresh: Page, run: Path) -> None:
            fresh.goto(f"/runs/{run.name}/{CONFIG}/archive-console")

        return open_console

    def policy_calls(self, runid: str) -> list[str | None]:
        """Return the config of each call the host's policy got for ``runid``, in order."""
        lines = self.policy_log.read_text().splitlines() if self.policy_log.exists() else []
        calls = [json.loads(line) for line in lines]
        return [call["config"] for call in calls if call["runid"] == runid]


def _settings(base: Path, redis_url: str, name: str) -> Settings:
    runs_root = base / "runs"
    runs_root.mkdir()
    tag = uuid.uuid4().hex[:8]
    return Settings(
        redis_url=redis_url,
        runs_root=runs_root,
        queue=f"wepp-{name}-{tag}",
        key_prefix=f"ra-wepp-{name}-{tag}",
        data_dir=base / "data",
    )


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in worker_env(settings).items() if k != "RUNARCHIVE_DATABASE_URL"}
    env["RUNARCHIVE_WS_PING_INTERVAL"] = "1"  # seconds between the server's pings
    return env


def start_serve(base: Path, redis_url: str) -> Serve:
    """Start ``runarchive serve`` with an admin account."""
    settings = _settings(base, redis_url, "serve")
    env = _env(settings) | {"SECRET_KEY": uuid.uuid4().hex * 2}
    port = free_port()
    data = ["--data-dir", str(settings.data_dir)]
    command = [*runarchive_command(), "serve", "--host", "127.0.0.1", "--port", str(port), *data,
               "--runs-root", str(settings.runs_root)]  # fmt: skip
    found = Serve("runarchive serve", f"http://127.0.0.1:{port}", settings, redis_url, command,
                  env, base / "serve.log", "/healthz")  # fmt: skip
    found.start()
    add = [*runarchive_command(), "users", "add", "admin", "--admin", "--password-stdin", *data]
    done = subprocess.run(add, input=PASSWORD, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return found


def start_host(base: Path, redis_url: str) -> Host:
    """Start the host app under gunicorn, as ``docs/examples/host_app.py`` says to serve it."""
    settings = _settings(base, redis_url, "host")
    runids = [f"wepp-host-{uuid.uuid4().hex[:10]}" for _ in range(HOST_RUNS)]
    policy_log = base / "policy.jsonl"
    env = _env(settings) | {
        "HOST_SECRET_KEY": uuid.uuid4().hex * 2,
        "HOST_USER": HOST_USER,
        "HOST_PASSWORD": PASSWORD,
        "HOST_RUNS": ",".join(runids),
        "HOST_POLICY_LOG": str(policy_log),
        "RUNARCHIVE_WEB_THREADS": "8",  # gunicorn's --threads: websockets take at most half
    }
    port = free_port()
    # As the example's docs say: runarchive's gunicorn hooks as the config, gthread threads for
    # the websockets. No control socket: its default path is per user, shared by every host.
    command = [sys.executable, "-m", "gunicorn", "-c", "python:runarchive.web.gunicorn_hooks",
               "--worker-class", "gthread", "--threads", "8", "--workers", "1",
               "--no-control-socket", "--bind", f"127.0.0.1:{port}",
               "tests.web.wepp_host:create_host()"]  # fmt: skip
    found = Host(
        "the host app",
        f"http://127.0.0.1:{port}",
        settings,
        redis_url,
        command,
        env,
        base / "host.log",
        f"{PREFIX}/healthz",
        PREFIX,
        runids=runids,
        policy_log=policy_log,
    )
    found.start()
    return found


STARTERS: dict[str, Callable[[Path, str], Backend]] = {"serve": start_serve, "host": start_host}
