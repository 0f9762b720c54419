"""The settings and Redis clients of one deployment, bundled for the functions of this package.

A process has one *current* context: the worker installs its own before it forks work horses
(which inherit it); a job run by a plain ``rq worker`` builds one from the environment on first
use. Callers with several deployments (tests) pass contexts explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import TracebackType

from rq import Queue

from .audit import Recorder, installed_recorder
from .connection import RedisClients, resolve_url
from .keys import Keys
from .settings import Settings
from .stream import StatusStream


@dataclass
class JobsContext:
    """Settings plus lazily opened Redis clients, and where audit events go.

    ``recorder`` None: the process's installed recorder (``audit.install_recorder``).
    """

    settings: Settings
    clients: RedisClients
    recorder: Recorder | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> JobsContext:
        """Open (lazily) the clients of ``settings``; find the embedded server when no URL."""
        url = resolve_url(settings)
        clients = RedisClients(
            url,
            max_connections=settings.max_connections,
            lock_db=settings.lock_db,
            cache_db=settings.nodb_cache_db,
        )
        return cls(replace(settings, redis_url=url), clients)

    @property
    def keys(self) -> Keys:
        """Key names under this deployment's prefix."""
        return self.settings.keys

    def queue(self) -> Queue:
        """Return the RQ queue jobs go to."""
        return Queue(
            self.settings.queue,
            connection=self.clients.rq,
            default_timeout=self.settings.job_timeout,
        )

    def scrub_queue(self) -> Queue:
        """Return the scrub's low-priority RQ queue (workers listen to it after ``queue``)."""
        return Queue(
            self.settings.scrub_queue,
            connection=self.clients.rq,
            default_timeout=self.settings.job_timeout,
        )

    def stream(self, runid: str) -> StatusStream:
        """Return the status stream of run ``runid``."""
        return StatusStream(
            self.clients.data,
            self.keys,
            runid,
            keep=self.settings.status_keep,
            ttl=self.settings.status_ttl,
        )

    def audit(self) -> Recorder:
        """Return the recorder of this deployment's audit events."""
        return self.recorder if self.recorder is not None else installed_recorder()

    def with_prefix(self, prefix: str | None) -> JobsContext:
        """Return a context sharing these clients but using key prefix ``prefix``."""
        if not prefix or prefix == self.settings.key_prefix:
            return self
        return JobsContext(replace(self.settings, key_prefix=prefix), self.clients, self.recorder)

    def close(self) -> None:
        """Close the Redis clients."""
        self.clients.close()

    def __enter__(self) -> JobsContext:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_current: JobsContext | None = None


def install(ctx: JobsContext | None) -> None:
    """Make ``ctx`` the process's current context (None forgets it)."""
    global _current
    _current = ctx


def current() -> JobsContext:
    """Return the current context, building it from the environment on first use."""
    global _current
    if _current is None:
        _current = JobsContext.from_settings(Settings.from_env())
    return _current
