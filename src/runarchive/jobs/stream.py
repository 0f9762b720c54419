"""A run's status stream: numbered lines, retained for replay, published on two channels.

Every line is numbered and, in one server-side script (atomic, so numbers, list and channels
agree whoever publishes): ``seq = INCR <prefix>:status-seq:<runid>:archive``; ``<seq> <line>``
appended to a capped list ``<prefix>:status:<runid>:archive`` (the last ``status_keep`` lines;
list and counter expire ``status_ttl`` seconds after the last line), so a viewer can ask for
what it missed; the plain line PUBLISHed on ``<runid>:archive`` (WEPPcloud's channel, unchanged)
and ``<seq> <line>`` on ``<prefix>:feed:<runid>:archive`` (our relay's, which needs the number
of each live line). Publishing is best effort: a Redis hiccup never fails a job, except for the
final lines, which go out with the job's final marker in one script (``publish_final``, used by
``lifecycle.finish_job``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import redis

from .keys import Keys

log = logging.getLogger(__name__)


# KEYS: log, seq. ARGV: line, keep, ttl, channel, feed. Returns the line's seq.
_PUBLISH_LUA = """
local seq = redis.call('INCR', KEYS[2])
local entry = seq .. ' ' .. ARGV[1]
redis.call('RPUSH', KEYS[1], entry)
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], entry)
return seq
"""
# KEYS: log, seq, final marker. ARGV: marker value, marker ttl, keep, ttl, channel, feed, lines….
# The job's final lines and its final marker in one script: a process killed at any instant either
# won the marker *and* published every line, or did neither (and a reconciler publishes them).
_FINAL_LUA = """
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 0
end
for i = 7, #ARGV do
  local seq = redis.call('INCR', KEYS[2])
  local entry = seq .. ' ' .. ARGV[i]
  redis.call('RPUSH', KEYS[1], entry)
  redis.call('PUBLISH', ARGV[5], ARGV[i])
  redis.call('PUBLISH', ARGV[6], entry)
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""
_ENTRY_RE = re.compile(r"(?P<seq>[0-9]{1,18}) (?P<line>.*)", re.DOTALL)


def parse_entry(entry: str) -> tuple[int, str] | None:
    """Return ``(seq, line)`` of a ``<seq> <line>`` entry or feed message, None if not one."""
    match = _ENTRY_RE.fullmatch(entry)
    return (int(match["seq"]), match["line"]) if match is not None else None


class StatusStream:
    """Publishes a run's status lines, numbered, and keeps the recent ones for replay."""

    def __init__(self, client: Any, keys: Keys, runid: str, *, keep: int, ttl: int) -> None:
        self.client = client
        self.channel = keys.status_channel(runid)
        self.feed = keys.status_feed(runid)
        self.log_key = keys.status_log(runid)
        self.seq_key = keys.status_seq(runid)
        self.keep = keep
        self.ttl = ttl
        self.published = 0

    def add_to(self, pipe: Any, line: str) -> None:
        """Queue the script that numbers, retains and publishes ``line`` on a caller's pipeline."""
        pipe.eval(
            _PUBLISH_LUA,
            2,
            self.log_key,
            self.seq_key,
            line,
            self.keep,
            self.ttl,
            self.channel,
            self.feed,
        )

    def publish(self, line: str) -> bool:
        """Publish ``line`` and retain it; errors are logged, never raised (best effort)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            self.add_to(pipe, line)
            pipe.execute()
        except redis.exceptions.RedisError:
            log.warning("could not publish status line %r", line, exc_info=True)
            return False
        self.published += 1
        return True

    def publish_final(self, marker: str, value: str, marker_ttl: int, lines: list[str]) -> bool:
        """Claim the job's final ``marker`` (SET NX) and publish ``lines`` atomically.

        Return whether this call won; errors are raised (nothing was claimed or published then).
        """
        won = self.client.eval(
            _FINAL_LUA,
            3,
            self.log_key,
            self.seq_key,
            marker,
            value,
            marker_ttl,
            self.keep,
            self.ttl,
            self.channel,
            self.feed,
            *lines,
        )
        if won:
            self.published += len(lines)
        return bool(won)

    def recent(self) -> list[str]:
        """Return the retained lines, oldest first."""
        return [line for _, line in self.numbered()]

    def numbered(self) -> list[tuple[int, str]]:
        """Return the retained lines with their ``seq``, oldest first.

        Entries without a number (retained by a version before numbering) are left out.
        """
        entries = self.client.lrange(self.log_key, 0, -1)
        found = (parse_entry(e.decode() if isinstance(e, bytes) else e) for e in entries)
        return [pair for pair in found if pair is not None]
