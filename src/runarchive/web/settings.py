"""Settings of the web service, read from the environment once, in one place.

Every web setting is a row of ``SETTINGS`` (environment variable, default, meaning); the jobs
layer's own settings (``runarchive.jobs.SETTINGS_ENV``: ``REDIS_URL``, ``RUNARCHIVE_RUNS_ROOT``,
``RUNARCHIVE_DATA_DIR`` …) are read by ``runarchive.jobs.Settings`` and apply to the web service
unchanged. ``docs/configuration.md`` documents both tables; a test fails when a name is missing
there. ``runarchive serve`` options override the environment.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from runarchive.core import InvalidInput


@dataclass(frozen=True, slots=True)
class Setting:
    """One documented setting: its environment variable, default (as text) and meaning."""

    env: str
    default: str
    doc: str


# attribute of WebSettings -> its row
SETTINGS: dict[str, Setting] = {
    "database_url": Setting(
        "RUNARCHIVE_DATABASE_URL",
        "sqlite:///<data dir>/runarchive.sqlite3",
        "SQLAlchemy URL of the accounts database (users, run access, API tokens).",
    ),
    "secret_key": Setting(
        "SECRET_KEY",
        "none: required (generated and kept in the data dir in demo mode)",
        "Signs session cookies and CSRF tokens. `RUNARCHIVE_SECRET_KEY` is read too.",
    ),
    "demo": Setting(
        "RUNARCHIVE_DEMO",
        "0",
        "1: a local trial; a missing SECRET_KEY is generated and kept in the data dir.",
    ),
    "host": Setting("RUNARCHIVE_HOST", "127.0.0.1", "Address `serve` listens on."),
    "port": Setting("RUNARCHIVE_PORT", "8000", "Port `serve` listens on."),
    "web_workers": Setting(
        "RUNARCHIVE_WEB_WORKERS", "2", "gunicorn worker processes (each has its own relay)."
    ),
    "web_threads": Setting(
        "RUNARCHIVE_WEB_THREADS",
        "32",
        "Threads per worker process (gthread); an open websocket holds one.",
    ),
    "ws_max_sockets": Setting(
        "RUNARCHIVE_WS_MAX_SOCKETS",
        "half of RUNARCHIVE_WEB_THREADS",
        "Websockets per process; beyond it the upgrade is refused (503) and pages poll.",
    ),
    "ws_max_sockets_per_user": Setting(
        "RUNARCHIVE_WS_MAX_SOCKETS_PER_USER",
        "8",
        "Websockets one user (or one anonymous client address) may hold in one process.",
    ),
    "ws_ping_interval": Setting(
        "RUNARCHIVE_WS_PING_INTERVAL",
        "20",
        'Seconds between `{"type":"ping"}` frames; a peer silent for 3 intervals is dropped.',
    ),
    "ws_backlog_bytes": Setting(
        "RUNARCHIVE_WS_BACKLOG_BYTES",
        "1048576",
        "Bytes a websocket may fall behind (a peer not reading) before it is hung up.",
    ),
    "secure_cookies": Setting(
        "RUNARCHIVE_SECURE_COOKIES",
        "0",
        "1: session cookie only over HTTPS (set it behind TLS).",
    ),
    "proxy_hops": Setting(
        "RUNARCHIVE_PROXY_HOPS",
        "0",
        "Reverse proxies in front of the service whose X-Forwarded-* headers are trusted.",
    ),
    "login_max_failures": Setting(
        "RUNARCHIVE_LOGIN_MAX_FAILURES",
        "5",
        "Failed logins per user name (x4 per client address) before logins are refused (429).",
    ),
    "login_window": Setting(
        "RUNARCHIVE_LOGIN_WINDOW",
        "300",
        "Seconds over which failed logins are counted, and how long the refusal lasts.",
    ),
    "audit_wait": Setting(
        "RUNARCHIVE_AUDIT_WAIT",
        "5",
        "Seconds an audit row waits for a locked database before it is spooled (replayed later).",
    ),
    "stop_timeout": Setting(
        "RUNARCHIVE_STOP_TIMEOUT",
        "20",
        "Seconds `serve` waits for its worker to finish a job on stop before stopping it hard.",
    ),
}

DATABASE_FILE = "runarchive.sqlite3"
SECRET_FILE = "secret_key"


def _flag(raw: str) -> bool:
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class WebSettings:
    """Everything the web layer reads from the environment (besides the jobs settings)."""

    database_url: str | None = None
    secret_key: str | None = None
    demo: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = 2
    web_threads: int = 32
    ws_max_sockets: int | None = None
    ws_max_sockets_per_user: int = 8
    ws_ping_interval: float = 20.0
    ws_backlog_bytes: int = 1 << 20
    secure_cookies: bool = False
    proxy_hops: int = 0
    login_max_failures: int = 5
    login_window: float = 300.0
    stop_timeout: float = 20.0
    audit_wait: float = 5.0

    def __post_init__(self) -> None:
        for name in ("port", "web_workers", "web_threads", "login_max_failures",
                     "ws_max_sockets_per_user", "ws_backlog_bytes"):  # fmt: skip
            if getattr(self, name) < 1:
                raise InvalidInput(f"{SETTINGS[name].env} must be at least 1.")
        if self.ws_max_sockets is not None and self.ws_max_sockets < 0:
            raise InvalidInput(f"{SETTINGS['ws_max_sockets'].env} must not be negative.")
        if self.audit_wait < 0:
            raise InvalidInput(f"{SETTINGS['audit_wait'].env} must not be negative.")
        if self.ws_ping_interval <= 0 or self.login_window <= 0 or self.stop_timeout <= 0:
            raise InvalidInput("Intervals and timeouts must be positive.")

    @property
    def max_sockets(self) -> int:
        """Websockets one process accepts: explicit, else half its threads (at least 1)."""
        if self.ws_max_sockets is not None:
            return self.ws_max_sockets
        return max(1, self.web_threads // 2)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> WebSettings:
        """Read every setting from ``environ`` (default: the process's); overrides win."""
        env = os.environ if environ is None else environ
        types = {f.name: str(f.type) for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, setting in SETTINGS.items():
            raw = env.get(setting.env)
            if name == "secret_key" and not raw:
                raw = env.get("RUNARCHIVE_SECRET_KEY")
            if raw is None or raw == "":
                continue
            values[name] = _parse(setting.env, types[name], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(env: str, type_name: str, raw: str) -> Any:
    try:
        if type_name.startswith("bool"):
            return _flag(raw)
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
    except ValueError:
        raise InvalidInput(f"Invalid value {raw!r} for {env}.") from None
    return raw


def default_database_url(data_dir: Path) -> str:
    """Return the SQLite URL of the accounts database in ``data_dir``."""
    return f"sqlite:///{Path(data_dir).resolve() / DATABASE_FILE}"


def secret_key_for(web: WebSettings, data_dir: Path, testing: bool) -> str:
    """Return the secret key: configured, random for tests, or kept in the data dir (demo)."""
    if web.secret_key:
        return web.secret_key
    if testing:
        return secrets.token_hex(32)
    if not web.demo:
        raise InvalidInput(
            "SECRET_KEY is not set: set it to a long random string (or RUNARCHIVE_DEMO=1 for "
            "a local trial, which keeps a generated key in the data dir)."
        )
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path.read_text(encoding="utf-8").strip()
