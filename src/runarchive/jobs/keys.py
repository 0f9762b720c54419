"""Every Redis key and pub/sub channel name the jobs layer uses, built in one place.

Two families:

* **Our own keys** start with a configurable prefix (default ``runarchive``), so several
  deployments, or the tests, can share one Redis without seeing each other.
* **Compatibility names** are an interface with the host application (WEPPcloud-style): the NoDb
  run locks ``nodb-lock:<runid>:<relpath>``, the status channel ``<runid>:archive`` and the NoDb
  cache keys (the absolute path of a ``.nodb`` file). They take **no prefix**: a prefixed lock
  would not be seen by the host application, and a prefixed channel would not reach its viewers.
  Tests isolate these by using unique run ids.

RQ's own keys (``rq:queue:<name>``, ``rq:job:<id>`` …) are owned by RQ; we isolate those with the
queue name. Nothing else in the package spells a key; ``tests/jobs/test_keys.py`` pins them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runarchive.core.errors import InvalidInput

DEFAULT_PREFIX = "runarchive"
NODB_LOCK_PREFIX = "nodb-lock"
STATUS_CHANNEL_SUFFIX = "archive"

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # fullmatch: "$" would accept a final "\n"
_OWNER_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # the accounts' user names
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """Escape ``text`` for a Redis MATCH pattern, so it matches only itself."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


@dataclass(frozen=True, slots=True)
class Keys:
    """Names of our keys under ``prefix``, and of the host application's compatibility keys."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise InvalidInput(
                f"Invalid key prefix {self.prefix!r}: use 1-64 letters, digits and _ . : - only."
            )

    # --- our own keys -------------------------------------------------------------------------

    def slot(self, runid: str) -> str:
        """Hash holding the one job allowed per run: job_id, kind, claimed_at, host."""
        return f"{self.prefix}:slot:{runid}"

    def slot_pattern(self) -> str:
        """MATCH pattern of every slot key."""
        return f"{glob_escape(self.prefix)}:slot:*"

    def runid_of_slot(self, key: str) -> str:
        """Return the run id a slot key belongs to."""
        return key[len(f"{self.prefix}:slot:") :]

    def job_alive(self, job_id: str) -> str:
        """Liveness lease the running job refreshes; gone means its process is dead."""
        return f"{self.prefix}:job:{job_id}:alive"

    def job_final(self, job_id: str) -> str:
        """Set once, by whoever publishes the job's final TRIGGER line (SET NX)."""
        return f"{self.prefix}:job:{job_id}:final"

    def job_cancel(self, job_id: str) -> str:
        """Who canceled the job, or the job's claim that its swap began (``jobs.cancel``)."""
        return f"{self.prefix}:job:{job_id}:cancel"

    def status_log(self, runid: str) -> str:
        """Capped list of the channel's recent lines, replayed to late viewers."""
        return f"{self.prefix}:status:{runid}:{STATUS_CHANNEL_SUFFIX}"

    def status_seq(self, runid: str) -> str:
        """Counter numbering the channel's lines (``seq``), kept and expiring with the log."""
        return f"{self.prefix}:status-seq:{runid}:{STATUS_CHANNEL_SUFFIX}"

    def status_feed(self, runid: str) -> str:
        """Pub/sub channel of the same lines as ``<seq> <line>``, for our own relay."""
        return f"{self.prefix}:feed:{runid}:{STATUS_CHANNEL_SUFFIX}"

    def pending_recovery(self) -> str:
        """Set of run ids whose restore job died; a worker that can see the run recovers it."""
        return f"{self.prefix}:recover"

    def undo_expiry(self) -> str:
        """Sorted set of run ids keeping a restore's undo, scored by when it expires (seconds);
        the worker's maintenance drops the expired ones."""
        return f"{self.prefix}:undo-expiry"

    def quota_owner(self, owner: str) -> str:
        """Hash of an owner's archive reservations (``r:<job id>`` = ``<bytes> <deadline>``)
        and ``gen``, counted up whenever one ends (``jobs.reservation``)."""
        if not _OWNER_RE.fullmatch(owner):
            raise InvalidInput(f"Invalid owner name {owner!r} for a quota.")
        return f"{self.prefix}:quota:{owner}"

    def job_quota(self, job_id: str) -> str:
        """Set of the ``quota_owner`` keys a job holds a reservation in, released at its end."""
        return f"{self.prefix}:job:{job_id}:quota"

    def health(self, runid: str) -> str:
        """Hash of the scrub's results for the run's archives: archive name -> JSON record
        bound to the archive file's identity (``jobs.health``); kept outside the run, whose
        tree anyone who can write the run could rewrite."""
        return f"{self.prefix}:health:{runid}"

    def scrub_pass(self) -> str:
        """The current scrub pass (``<pass id> <started, Unix seconds>``): claimed once per
        interval deployment-wide (compare-and-set), expiring with the interval (``jobs.scrub``)."""
        return f"{self.prefix}:scrub:pass"

    # --- compatibility names (no prefix) ------------------------------------------------------

    @staticmethod
    def status_channel(runid: str) -> str:
        """Pub/sub channel shared by archive and restore jobs of a run."""
        return f"{runid}:{STATUS_CHANNEL_SUFFIX}"

    @staticmethod
    def nodb_lock(runid: str, relpath: str) -> str:
        """NoDb lock of the ``.nodb`` file at ``relpath`` (posix, relative to the run)."""
        return f"{NODB_LOCK_PREFIX}:{runid}:{relpath}"

    @staticmethod
    def nodb_lock_pattern(runid: str) -> str:
        """MATCH pattern of every NoDb lock of the run."""
        return f"{NODB_LOCK_PREFIX}:{glob_escape(runid)}:*"

    @staticmethod
    def relpath_of_nodb_lock(runid: str, key: str) -> str:
        """Return the relative path a NoDb lock key names."""
        return key[len(f"{NODB_LOCK_PREFIX}:{runid}:") :]

    @staticmethod
    def nodb_cache(nodb_file: Path) -> str:
        """WEPPcloud's NoDb cache key: the absolute path of the ``.nodb`` file."""
        return str(nodb_file)

    @staticmethod
    def nodb_cache_pattern(run_dir: Path) -> str:
        """MATCH pattern of every NoDb cache key under the run directory."""
        return f"{glob_escape(str(run_dir))}/*"
