"""Settings of the jobs layer, read from the environment once and passed around as a value.

Every setting has an environment variable (listed in ``ENV``) and a default suited to a
production WEPPcloud-like deployment; the CLI options override the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from runarchive.core import (
    POLICY_ENV,
    QUOTA_ENV,
    Limit,
    LinkMode,
    Policy,
    parse_count,
    parse_link_mode,
    parse_policy,
    parse_size,
)
from runarchive.core.errors import InvalidInput

from .keys import DEFAULT_PREFIX, Keys

DEFAULT_QUEUE = "runarchive"
RUN_LAYOUTS = ("auto", "flat", "sharded")
DEFAULT_HOOKS = ("runarchive.jobs.hooks:clear_nodb_cache",)

# setting name -> environment variable
ENV: dict[str, str] = {
    "redis_url": "REDIS_URL",
    "runs_root": "RUNARCHIVE_RUNS_ROOT",
    "run_layout": "RUNARCHIVE_RUN_LAYOUT",
    "queue": "RUNARCHIVE_QUEUE",
    "job_timeout": "RUNARCHIVE_JOB_TIMEOUT",
    "key_prefix": "RUNARCHIVE_KEY_PREFIX",
    "lock_db": "RUNARCHIVE_LOCK_DB",
    "lock_ttl": "RUNARCHIVE_LOCK_TTL",
    "nodb_cache_db": "RUNARCHIVE_NODB_CACHE_DB",
    "heartbeat_ttl": "RUNARCHIVE_HEARTBEAT_TTL",
    "slot_grace": "RUNARCHIVE_SLOT_GRACE",
    "status_keep": "RUNARCHIVE_STATUS_KEEP",
    "status_ttl": "RUNARCHIVE_STATUS_TTL",
    "status_rate": "RUNARCHIVE_STATUS_RATE",
    "result_ttl": "RUNARCHIVE_RESULT_TTL",
    "max_connections": "RUNARCHIVE_MAX_CONNECTIONS",
    "post_restore_hooks": "RUNARCHIVE_POST_RESTORE_HOOKS",
    "data_dir": "RUNARCHIVE_DATA_DIR",
    "links": "RUNARCHIVE_LINKS",
    "scrub_interval": "RUNARCHIVE_SCRUB_INTERVAL",
    "scrub_rate": "RUNARCHIVE_SCRUB_RATE",
    # The site's default retention policy (a run's own policy wins; none set: keep all).
    **POLICY_ENV,
    # The site's archive quotas: per run, and per owner (a user's override in the accounts
    # database wins over the owner pair).
    **QUOTA_ENV,
}


def default_data_dir() -> Path:
    """Return where the embedded Redis keeps its files when nothing else is configured."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "runarchive"


@dataclass(frozen=True)
class Settings:
    """Everything the jobs layer needs to know about its deployment.

    ``redis_url`` None means: use the embedded server in ``data_dir``. Durations are seconds.
    """

    redis_url: str | None = None
    runs_root: Path | None = None
    run_layout: str = "auto"
    queue: str = DEFAULT_QUEUE
    job_timeout: int = 6 * 3600
    key_prefix: str = DEFAULT_PREFIX
    lock_db: int | None = None
    lock_ttl: int = 60
    nodb_cache_db: int = 13
    heartbeat_ttl: float = 30.0
    slot_grace: float = 60.0
    status_keep: int = 200
    status_ttl: int = 24 * 3600
    status_rate: float = 10.0
    result_ttl: int = 7 * 24 * 3600
    max_connections: int = 50
    post_restore_hooks: tuple[str, ...] = DEFAULT_HOOKS
    data_dir: Path = field(default_factory=default_data_dir)
    # How an archive job holds the run's symlinks when its request does not say (store|follow).
    links: str = LinkMode.STORE.value
    # The scrub: a pass over every archive this often (seconds; 0: never), reading at most
    # this many bytes per second (0: unbounded), on its own low-priority queue.
    scrub_interval: int = 7 * 24 * 3600
    scrub_rate: int = 50 * 1024 * 1024
    # The site's default retention policy, per rule (all 0: none, every archive is kept).
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    # The site's archive quotas (bytes, count; None: no limit), see ``core.quota``.
    quota_run_bytes: int | None = None
    quota_run_count: int | None = None
    quota_owner_bytes: int | None = None
    quota_owner_count: int | None = None

    def __post_init__(self) -> None:
        if self.run_layout not in RUN_LAYOUTS:
            raise InvalidInput(
                f"Invalid run layout {self.run_layout!r}: use one of {', '.join(RUN_LAYOUTS)}."
            )
        if not self.queue or any(ch.isspace() for ch in self.queue):
            raise InvalidInput(f"Invalid queue name {self.queue!r}.")
        for name in ("job_timeout", "lock_ttl", "status_keep", "max_connections"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"Setting {name} must be at least 1.")
        if self.scrub_interval < 0 or self.scrub_rate < 0:
            raise InvalidInput("scrub_interval and scrub_rate must be 0 or more.")
        if self.heartbeat_ttl <= 0 or self.status_rate <= 0:
            raise InvalidInput("heartbeat_ttl and status_rate must be positive.")
        Keys(self.key_prefix)  # validates the prefix
        parse_link_mode(self.links)
        parse_policy({rule: getattr(self, rule) for rule in POLICY_ENV})
        _ = (self.run_limit, self.owner_limit)  # a Limit validates its numbers
        # Absolute from here on: a relative path would mean something else to every process
        # and library that later resolves it against its own working directory.
        for name in ("runs_root", "data_dir"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_absolute():
                object.__setattr__(self, name, Path(value).absolute())

    @property
    def keys(self) -> Keys:
        """Key and channel names under this deployment's prefix."""
        return Keys(self.key_prefix)

    @property
    def scrub_queue(self) -> str:
        """The scrub's RQ queue: workers take from it only when the main queue is empty."""
        return f"{self.queue}-scrub"

    @property
    def site_policy(self) -> Policy | None:
        """The site's default retention policy, or None (keep everything)."""
        policy = parse_policy({rule: getattr(self, rule) for rule in POLICY_ENV})
        return None if policy.empty else policy

    @property
    def run_limit(self) -> Limit:
        """The site's quota on each run's archives."""
        return Limit(self.quota_run_bytes, self.quota_run_count)

    @property
    def owner_limit(self) -> Limit:
        """The site's quota on all the archives of one owner's runs (a user may override it)."""
        return Limit(self.quota_owner_bytes, self.quota_owner_count)

    @property
    def heartbeat_interval(self) -> float:
        """How often a running job renews its liveness lease and its NoDb locks."""
        return max(0.2, min(self.heartbeat_ttl, float(self.lock_ttl)) / 5)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from environment variables; ``overrides`` that are not None win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, var in ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _parse(name, str(types[name]), raw)
        if "redis_url" not in values and env.get("RUNARCHIVE_REDIS_URL"):
            values["redis_url"] = env["RUNARCHIVE_REDIS_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the given settings replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _parse(name: str, type_name: str, raw: str) -> Any:
    try:
        if name in QUOTA_ENV:
            return (parse_size if name.endswith("bytes") else parse_count)(raw)
        if "tuple" in type_name:
            if raw.strip().lower() == "none":
                return ()
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        if "Path" in type_name:
            return Path(raw).expanduser()
        if "int" in type_name:
            return int(raw)
        if "float" in type_name:
            return float(raw)
    except (ValueError, InvalidInput):
        raise InvalidInput(f"Invalid value {raw!r} for {ENV[name]}.") from None
    return raw
