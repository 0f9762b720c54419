"""Archive quotas: what a run's archives use, what the next archive will take, and the refusal.

Why a quota needs an estimate: an archive's size is known only once it is written, but a
quota must refuse *before any work* (issue 15). So the next archive's size is estimated from
the run's bytes now and the compression the run's newest archive achieved:

    estimate = run_bytes × ratio + 64 KiB
    ratio    = newest readable archive's size ÷ the bytes of its entries (0.01 … 1.05)

    with no readable archive yet: run_bytes + 256 B per file + 64 KiB

(an archive's size already holds its headers and manifest, so its ratio carries them; without
one, every byte counts as stored and 256 B a file covers the two headers and the manifest
line; 64 KiB is slack for the central directory's fixed part and a grown run). Measured on
the benchmark runs the ratio is 0.31-0.43 (docs/benchmarks.md), so a first archive's
estimate is 2-3 times its real size, the next ones within a few per cent. A refusal is raised
when ``used + estimate`` would pass a limit, or when one more archive would pass a count limit.

The estimate is a guess, so it is not the guarantee: the archive is given a byte *budget*
(``budget_for``: what the limit leaves) and ``create_archive`` aborts, removing its temp file,
as soon as its written bytes would pass it. A quota never leaves a partial file and never
ends over its limit, whatever the estimate said.

``run_bytes`` (the run's files outside ``archives/``) comes from the handle-based walk
(``tree.scan_run``), which costs about 170 ms on a quiet machine on a 30,000-file run (0.85 s
under load). ``measure_usage`` keeps it per run folder; a figure older than
``RUN_BYTES_TTL`` seconds is still answered while one background thread walks the run again
(stale-while-revalidate), so a list waits for a walk only the first time a process lists a
run; an archive request asks for a fresh walk.

Limits: per run, from the site's settings (``RUNARCHIVE_QUOTA_RUN_BYTES``/``…_COUNT``, read
here for the local CLI and by the jobs settings); per owner (every run a user owns, summed),
``RUNARCHIVE_QUOTA_OWNER_BYTES``/``…_COUNT`` with a per-user override in the accounts
database. Sizes are written ``10G``, ``500M``, ``1.5T`` or in bytes (binary units: G = GiB).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .catalog import ArchiveInfo, list_archives
from .errors import InvalidArchive, InvalidInput, QuotaExceeded, RunArchiveError
from .fsutil import human_bytes
from .limits import Limits
from .manifest import MANIFEST_NAME
from .rundir import RunDir, RunRef, open_run
from .tree import scan_run
from .zipformat import read_directory

log = logging.getLogger(__name__)

# The site's quota settings and their environment variables (the jobs settings list them in
# their ENV map, as they do the retention defaults).
QUOTA_ENV: dict[str, str] = {
    "quota_run_bytes": "RUNARCHIVE_QUOTA_RUN_BYTES",
    "quota_run_count": "RUNARCHIVE_QUOTA_RUN_COUNT",
    "quota_owner_bytes": "RUNARCHIVE_QUOTA_OWNER_BYTES",
    "quota_owner_count": "RUNARCHIVE_QUOTA_OWNER_COUNT",
}
RUN_BYTES_TTL = 60.0
PER_FILE_OVERHEAD = 256
FIXED_OVERHEAD = 64 << 10
MIN_RATIO, MAX_RATIO = 0.01, 1.05
MAX_SIZE = 1 << 62  # bounds what a setting or an override may say
WHAT_TO_DO = "delete or prune archives, or ask an admin"

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """Return the bytes ``text`` names (``10G``, ``500M``, ``1.5T``, ``123``), None for ``none``.

    Binary units (``G`` is GiB; ``GB``/``GiB`` spell the same); InvalidInput for anything else.
    """
    raw = text.strip()
    if raw.lower() == "none":
        return None
    match = _SIZE_RE.fullmatch(raw)
    if match is None:
        raise InvalidInput(f"Invalid size {text!r}: use bytes or a unit, as 10G or 500M (or none).")
    value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if not 0 <= value <= MAX_SIZE:
        raise InvalidInput(f"Size {text!r} is out of range.")
    return math.floor(value)


def parse_count(text: str) -> int | None:
    """Return the archive count ``text`` names, None for ``none``; InvalidInput otherwise."""
    raw = text.strip()
    if raw.lower() == "none":
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise InvalidInput(f"Invalid archive count {text!r}: use a whole number (or none).")
    return int(raw)


@dataclass(frozen=True, slots=True)
class Limit:
    """A quota: at most ``bytes`` of archives and ``count`` archives (None: no limit)."""

    bytes: int | None = None
    count: int | None = None

    @property
    def unlimited(self) -> bool:
        """Tell whether neither bytes nor count is limited."""
        return self.bytes is None and self.count is None

    def __post_init__(self) -> None:
        for name in ("bytes", "count"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 0 <= value <= MAX_SIZE):
                raise InvalidInput(f"A quota's {name} must be a whole number of at least 0.")


def run_limit_from_env(environ: Mapping[str, str] | None = None) -> Limit:
    """Return the site's per-run limit from ``RUNARCHIVE_QUOTA_RUN_*`` (the local CLI's)."""
    env = os.environ if environ is None else environ
    return Limit(
        _env_value(env, QUOTA_ENV["quota_run_bytes"], parse_size),
        _env_value(env, QUOTA_ENV["quota_run_count"], parse_count),
    )


def _env_value(env: Mapping[str, str], var: str, parse: object) -> int | None:
    raw = env.get(var, "").strip()
    if not raw:
        return None
    assert callable(parse)
    try:
        value: int | None = parse(raw)
    except InvalidInput:
        raise InvalidInput(f"Invalid value {raw!r} for {var}.") from None
    return value


@dataclass(frozen=True, slots=True)
class Usage:
    """What a run holds: its archives (bytes, count), its own files, the disk's free bytes."""

    archives_bytes: int
    archives_count: int
    run_bytes: int
    disk_free_bytes: int
    run_files: int = 0
    ratio: float | None = None  # the newest archive's size over its entries' bytes

    @property
    def estimate(self) -> int:
        """The next archive's likely size (see the module's notes)."""
        if self.ratio is None:
            return self.run_bytes + PER_FILE_OVERHEAD * self.run_files + FIXED_OVERHEAD
        return math.ceil(self.run_bytes * self.ratio) + FIXED_OVERHEAD

    def as_json(self, limit: Limit) -> dict[str, int | None]:
        """The list's ``usage`` block, with the run's own limit."""
        return {
            "archives_bytes": self.archives_bytes,
            "archives_count": self.archives_count,
            "run_bytes": self.run_bytes,
            "quota_bytes": limit.bytes,
            "quota_count": limit.count,
            "disk_free_bytes": self.disk_free_bytes,
        }


# run folder (device, inode) -> (measured at, files, bytes); the keys being walked again
_run_sizes: dict[tuple[int, int], tuple[float, int, int]] = {}
_refreshing: set[tuple[int, int]] = set()
_run_sizes_lock = threading.Lock()
_RUN_SIZES_MAX = 10_000


def _walk(run: RunDir, key: tuple[int, int]) -> tuple[int, int]:
    try:
        tree = scan_run(run)  # by handle, no link followed; archives/ is not part of the tree
    except OSError as exc:
        raise RunArchiveError(
            f"Cannot read {exc.filename}: {exc.strerror}. Fix its permissions and retry."
        ) from exc
    files, size = tree.file_count, tree.file_bytes
    with _run_sizes_lock:
        if len(_run_sizes) >= _RUN_SIZES_MAX:
            _run_sizes.clear()
        _run_sizes[key] = (time.monotonic(), files, size)
    return files, size


def _refresh(fd: int, path: Path, runid: str, key: tuple[int, int]) -> None:
    """Walk the run again from a duplicate of the caller's handle (the same folder, not its
    path looked up again); a run that went meanwhile keeps its old figure until evicted."""
    try:
        with RunDir(fd, path, runid) as run:
            _walk(run, key)
    except (OSError, RunArchiveError) as exc:
        log.warning("run %s: run_bytes not refreshed: %s", runid, exc)
    finally:
        with _run_sizes_lock:
            _refreshing.discard(key)


def _run_size(run: RunDir, fresh: bool) -> tuple[int, int]:
    """Return the run's file count and bytes outside ``archives/`` (see the module's notes).

    Stale-while-revalidate: a figure older than ``RUN_BYTES_TTL`` is returned as it is while
    one background thread walks the run again, so no list waits for a walk but the first of
    a run in this process; ``fresh`` (an archive request) always walks now.
    """
    st = os.fstat(run.fd)
    key = (st.st_dev, st.st_ino)
    with _run_sizes_lock:
        known = _run_sizes.get(key)
        stale = known is not None and time.monotonic() - known[0] >= RUN_BYTES_TTL
        start = stale and not fresh and key not in _refreshing
        if start:
            _refreshing.add(key)
    if fresh:
        return _walk(run, key)
    if known is None:
        try:
            return _walk(run, key)
        except RunArchiveError as exc:  # the list still answers; an archive would say why
            log.warning("run %s: run_bytes unknown: %s", run.runid, exc)
            return 0, 0
    if start:
        fd = os.dup(run.fd)
        worker = threading.Thread(
            target=_refresh, args=(fd, run.path, run.runid, key), daemon=True,
            name="runarchive-run-bytes",
        )  # fmt: skip
        worker.start()
    return known[1], known[2]


def _ratio(run: RunDir, rows: Sequence[ArchiveInfo], limits: Limits) -> float | None:
    """The compression of the newest readable archive (its central directory, by handle;
    bounded like the list's read), None without one."""
    newest = next((row for row in rows if row.readable), None)
    archives = run.archives() if newest is not None else None
    if newest is None or archives is None:
        return None
    with archives:
        try:
            fd = archives.open_file(newest.name)
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            directory = read_directory(fd, size, limits.max_entries)
        except (InvalidArchive, OSError):
            return None
        finally:
            os.close(fd)
    content = sum(e.usize for e in directory.entries if e.name != MANIFEST_NAME)
    if content <= 0:
        return None
    return min(MAX_RATIO, max(MIN_RATIO, size / content))


def measure_usage(
    run_dir: Path | RunRef,
    rows: Sequence[ArchiveInfo] | None = None,
    *,
    fresh: bool = False,
    limits: Limits | None = None,
) -> Usage:
    """Measure a run: its archives (``rows`` from ``list_archives`` when the caller has them),
    its own bytes, the free bytes of its archives' disk (statvfs of the folder's handle; the
    run's when it has no ``archives/`` yet). ``fresh``: walk the run now rather than trust the
    cache, and read the newest archive's ratio (what ``estimate`` needs)."""
    lim = limits or Limits.from_env()
    listed = list_archives(Path(run_dir), lim) if rows is None else rows
    with open_run(run_dir) as run:
        files, size = _run_size(run, fresh)
        archives = run.archives()
        if archives is None:
            vfs = os.fstatvfs(run.fd)
        else:
            with archives:
                vfs = os.fstatvfs(archives.fd)
        ratio = _ratio(run, listed, lim) if fresh else None
    return Usage(
        archives_bytes=sum(row.size for row in listed),
        archives_count=len(listed),
        run_bytes=size,
        disk_free_bytes=vfs.f_bavail * vfs.f_frsize,
        run_files=files,
        ratio=ratio,
    )


def check_quota(
    subject: str,
    used_bytes: int,
    used_count: int,
    estimate: int,
    limit: Limit,
    *,
    plural: bool = False,
) -> None:
    """Refuse (QuotaExceeded) an archive of about ``estimate`` bytes that would pass ``limit``.

    ``subject`` names whose archives these are as the message's sentence starts: ``Run r1``,
    or with ``plural`` ``Your runs`` (``use``/``have``).
    """
    if limit.count is not None and used_count + 1 > limit.count:
        have = "have" if plural else "has"
        raise QuotaExceeded(
            f"{subject} {have} {used_count} of {limit.count} archives; {WHAT_TO_DO}."
        )
    if limit.bytes is not None and used_bytes + estimate > limit.bytes:
        use = "use" if plural else "uses"
        raise QuotaExceeded(
            f"{subject} {use} {human_bytes(used_bytes)} of {human_bytes(limit.bytes)} for "
            f"archives (the next one needs about {human_bytes(estimate)}); {WHAT_TO_DO}."
        )


def budget_for(used_bytes: int, limit: Limit) -> int | None:
    """Return the bytes a new archive may write under ``limit`` (None: no byte limit)."""
    if limit.bytes is None:
        return None
    return max(0, limit.bytes - used_bytes)
