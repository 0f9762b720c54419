"""NoDb-compatible run locks (the protocol of WEPPcloud's ``NoDbBase.lock()``).

A ``.nodb`` file of run ``R`` at relative path ``P`` is locked while the key
``nodb-lock:R:P`` exists. Its value is JSON ``{"token", "owner": "host:pid", "acquired_at",
"expires_at", "ttl"}`` (we add ``"job_id"`` when a job holds it). Locks are taken with
``SET key value NX EX ttl`` and released or renewed only by the holder of the token (a Lua
compare-and-delete / compare-and-set), so a stale holder can never drop someone else's lock.

Archive, restore and delete are refused while any ``.nodb`` lock of the run is held
(``ensure_unlocked``); the job additionally *takes* every ``.nodb`` lock of the run for the length
of the snapshot or of the restore (``RunLocks``), renewing them with its heartbeat, so no writer
can change state mid-snapshot; should the job die, its locks expire after ``lock_ttl`` seconds
and the reconcile deletes them at once (``release_job_locks``).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from runarchive.core import (
    ArchiveReader,
    InvalidInput,
    Locked,
    has_control_characters,
    is_dot_component,
)

from .keys import Keys

# Delete KEYS[1] if field ARGV[1] of its JSON value equals ARGV[2] (the token, or a job id).
_RELEASE_IF_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, d = pcall(cjson.decode, v)
if ok and type(d) == 'table' and d[ARGV[1]] == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Replace KEYS[1] with ARGV[2] for ARGV[3] seconds if its JSON value carries token ARGV[1].
_REFRESH_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, d = pcall(cjson.decode, v)
if ok and type(d) == 'table' and d['token'] == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""


def default_owner() -> str:
    """Return this process's lock owner label, ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_relpath(relpath: str) -> str:
    """Return ``relpath`` if it is a clean relative posix path, else raise InvalidInput."""
    parts = relpath.split("/")
    if (
        not relpath
        or relpath.startswith("/")
        or "\\" in relpath
        or any(not part or is_dot_component(part) for part in parts)
        or has_control_characters(relpath)
    ):
        raise InvalidInput(f"Invalid lock path {relpath!r}: need a relative posix path.")
    return relpath


def archive_nodb_files(reader: ArchiveReader) -> list[str]:
    """Return the ``.nodb`` paths an open archive would restore, from its central directory.

    Names that are no clean relative path are left out: the core refuses them with its own,
    better message.
    """
    found = []
    for entry in reader.content_entries():
        if entry.name.endswith(".nodb") and not entry.name.startswith("archives/"):
            try:
                found.append(check_relpath(entry.name))
            except InvalidInput:
                continue
    return found


@dataclass(frozen=True, slots=True)
class LockInfo:
    """The decoded value of a NoDb lock key."""

    relpath: str
    token: str
    owner: str
    acquired_at: float
    expires_at: float
    ttl: int
    job_id: str | None = None

    def payload(self) -> str:
        """Return the JSON stored in the lock key."""
        data: dict[str, Any] = {
            "token": self.token,
            "owner": self.owner,
            "acquired_at": self.acquired_at,
            "expires_at": self.expires_at,
            "ttl": self.ttl,
        }
        if self.job_id is not None:
            data["job_id"] = self.job_id
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def parse(cls, relpath: str, raw: str) -> LockInfo:
        """Decode a lock value; values that are not our JSON yield an anonymous lock."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            data = {}
        return cls(
            relpath=relpath,
            token=str(data.get("token", "")),
            owner=str(data.get("owner", "")),
            acquired_at=float(data.get("acquired_at", 0) or 0),
            expires_at=float(data.get("expires_at", 0) or 0),
            ttl=int(data.get("ttl", 0) or 0),
            job_id=data.get("job_id"),
        )


def _new_info(relpath: str, ttl: int, owner: str | None, job_id: str | None) -> LockInfo:
    now = time.time()
    return LockInfo(
        relpath=relpath,
        token=uuid.uuid4().hex,
        owner=owner or default_owner(),
        acquired_at=now,
        expires_at=now + ttl,
        ttl=ttl,
        job_id=job_id,
    )


def acquire_lock(
    client: Any,
    runid: str,
    relpath: str,
    *,
    ttl: int,
    owner: str | None = None,
    job_id: str | None = None,
) -> str | None:
    """Take the lock of ``relpath`` (SET NX EX); return its token, or None if it is held."""
    info = _new_info(check_relpath(relpath), ttl, owner, job_id)
    if client.set(Keys.nodb_lock(runid, relpath), info.payload(), nx=True, ex=ttl):
        return info.token
    return None


def release_lock(client: Any, runid: str, relpath: str, token: str) -> bool:
    """Release the lock if ``token`` still owns it; return whether it was released."""
    script = client.register_script(_RELEASE_IF_LUA)
    return bool(script(keys=[Keys.nodb_lock(runid, relpath)], args=["token", token]))


def refresh_lock(
    client: Any,
    runid: str,
    relpath: str,
    token: str,
    *,
    ttl: int,
    owner: str | None = None,
    job_id: str | None = None,
) -> bool:
    """Extend the lock by ``ttl`` seconds if ``token`` still owns it."""
    now = time.time()
    info = LockInfo(relpath, token, owner or default_owner(), now, now + ttl, ttl, job_id)
    script = client.register_script(_REFRESH_LUA)
    return bool(script(keys=[Keys.nodb_lock(runid, relpath)], args=[token, info.payload(), ttl]))


def lock_infos(client: Any, runid: str) -> dict[str, LockInfo]:
    """Return every lock of the run (SCAN), by relative path."""
    result: dict[str, LockInfo] = {}
    for key in client.scan_iter(match=Keys.nodb_lock_pattern(runid), count=500):
        raw = client.get(key)
        if raw is None:
            continue
        relpath = Keys.relpath_of_nodb_lock(runid, key)
        result[relpath] = LockInfo.parse(relpath, raw)
    return result


def lock_statuses(client: Any, runid: str) -> dict[str, bool]:
    """Return ``{relpath: True}`` for every lock of the run (WEPPcloud's ``lock_statuses``)."""
    return {
        Keys.relpath_of_nodb_lock(runid, key): True
        for key in client.scan_iter(match=Keys.nodb_lock_pattern(runid), count=500)
    }


def locked_nodb_files(client: Any, runid: str) -> list[str]:
    """Return the sorted relative paths of the run's locked ``.nodb`` files."""
    return sorted(path for path in lock_statuses(client, runid) if path.endswith(".nodb"))


def ensure_unlocked(client: Any, runid: str, verb: str) -> None:
    """Raise Locked (``Cannot <verb> while files are locked: a.nodb, b.nodb``) if any is held."""
    locked = locked_nodb_files(client, runid)
    if locked:
        raise Locked(verb, locked)


def release_job_locks(client: Any, runid: str, job_id: str) -> int:
    """Delete the run's locks held by job ``job_id`` (after it died); return how many."""
    script = client.register_script(_RELEASE_IF_LUA)
    released = 0
    for key in client.scan_iter(match=Keys.nodb_lock_pattern(runid), count=500):
        released += int(script(keys=[key], args=["job_id", job_id]))
    return released


class RunLocks:
    """All-or-nothing hold of a set of a run's ``.nodb`` locks on behalf of a job.

    ``acquire()`` takes the locks in sorted order; if any is held by someone else it releases
    what it took and raises Locked naming the held files. ``refresh()`` is called by the job's
    heartbeat; ``release()`` (or leaving the ``with`` block) gives them back.
    """

    def __init__(
        self,
        client: Any,
        runid: str,
        relpaths: Iterable[str],
        *,
        verb: str,
        ttl: int,
        job_id: str | None = None,
    ) -> None:
        self.client = client
        self.runid = runid
        self.relpaths = sorted(set(relpaths))
        self.verb = verb
        self.ttl = ttl
        self.job_id = job_id
        self.owner = default_owner()
        self.tokens: dict[str, str] = {}

    def acquire(self) -> RunLocks:
        """Take every lock or none; raise Locked when one is held elsewhere."""
        held: list[str] = []
        for relpath in self.relpaths:
            token = acquire_lock(
                self.client, self.runid, relpath, ttl=self.ttl, owner=self.owner, job_id=self.job_id
            )
            if token is None:
                held.append(relpath)
            else:
                self.tokens[relpath] = token
        if held:
            self.release()
            raise Locked(self.verb, held)
        return self

    def refresh(self) -> None:
        """Renew every held lock for another ``ttl`` seconds."""
        for relpath, token in list(self.tokens.items()):
            refresh_lock(
                self.client,
                self.runid,
                relpath,
                token,
                ttl=self.ttl,
                owner=self.owner,
                job_id=self.job_id,
            )

    def release(self) -> None:
        """Release every lock still held (by token)."""
        for relpath, token in list(self.tokens.items()):
            release_lock(self.client, self.runid, relpath, token)
            del self.tokens[relpath]

    def __enter__(self) -> RunLocks:
        return self.acquire()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
