"""Scrub: read every byte of an archive while nobody looks, at a bounded rate, and say which
file the answer is about.

An archive is checked exactly as ``verify`` checks it (layout, every entry's CRC and size, the
manifest's sha256 of every file), through one descriptor opened by handle beneath the run's real
``archives/`` folder (``reader.open_archive_fd``: no link followed, a regular file). The result
is bound to that file's **identity** (device, inode, size, mtime and ctime in nanoseconds) and
is only returned when the name still denotes the very same, unchanged file once the check is
done: an archive deleted, replaced or rewritten in place while it was read is skipped (None),
never reported with a verdict about other bytes. Whoever keeps the result compares the identity
again when they use it, so a replaced archive reads "unchecked" until it is checked itself.

Reads are paced by ``Throttle`` (bytes per second over the whole check, sleeping between 1 MiB
blocks), so a scrub on a busy server takes its share of the disk and no more.

The core keeps no health anywhere: the run tree may be written by an attacker, who could plant
"ok" for a damaged archive. The jobs layer keeps results outside the run (Redis); the CLI prints
them (and records them the same way when Redis is configured).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .catalog import scan_archives
from .errors import InvalidArchive, InvalidInput, NotFound, UnsafeRun
from .isotime import iso_utc
from .limits import Limits
from .names import is_dot_component, validate_runid
from .reader import ArchiveReader, open_archive_fd, verify_reader
from .rundir import RunDir, open_run

OK = "ok"
DAMAGED = "damaged"
UNCHECKED = "unchecked"
HEALTH_STATES = (OK, DAMAGED, UNCHECKED)


@dataclass(frozen=True, slots=True)
class ArchiveIdentity:
    """Which file a result is about: equal only for the same inode with the same size, mtime
    and ctime (a rewrite in place changes ctime even when mtime is set back)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> ArchiveIdentity:
        """Return the identity of the file ``st`` describes."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def as_list(self) -> list[int]:
        """Return the identity as five integers (how the jobs layer stores it)."""
        return [self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one archive's check, about the file ``identity`` names."""

    name: str
    identity: ArchiveIdentity
    ok: bool
    problems: tuple[str, ...]
    checked_at: datetime
    bytes_read: int

    @property
    def health(self) -> str:
        """``ok`` or ``damaged``."""
        return OK if self.ok else DAMAGED

    @property
    def damage(self) -> str | None:
        """What is damaged, in one line naming the entry (None when the archive is ok)."""
        if self.ok or not self.problems:
            return None
        first = self.problems[0]
        more = len(self.problems) - 1
        return f"{first} (and {more} more problem{'s' * (more != 1)})" if more else first

    def as_json(self) -> dict[str, object]:
        """The CLI's JSON row of this result."""
        return {
            "name": self.name,
            "health": self.health,
            "damage": self.damage,
            "problems": list(self.problems),
            "checked_at": iso_utc(self.checked_at),
            "bytes": self.bytes_read,
        }


class Throttle:
    """Pace reads to ``rate`` bytes per second over the whole check (None or 0: unbounded).

    Called with each block's size after it is read; sleeps until the bytes so far are due.
    ``tick`` is called once per block too (the job renews its lease there).
    """

    def __init__(
        self,
        rate: float | None,
        *,
        tick: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.tick = tick
        self.clock = clock
        self.sleep = sleep
        self.start = clock()
        self.done = 0

    def __call__(self, size: int) -> None:
        self.done += size
        if self.tick is not None:
            self.tick()
        if self.rate is None:
            return
        wait = self.start + self.done / self.rate - self.clock()
        if wait > 0:
            self.sleep(wait)


def check_archive(
    run: RunDir,
    name: str,
    *,
    rate: float | None = None,
    tick: Callable[[], None] | None = None,
    limits: Limits | None = None,
) -> CheckResult | None:
    """Verify archive ``name`` of the open run at ``rate`` bytes/s; None when it vanished, is
    not a regular file, or was replaced or changed while it was checked."""
    try:
        fd, st = open_archive_fd(run, name)
    except NotFound:
        return None
    identity = ArchiveIdentity.of(st)
    throttle = Throttle(rate, tick=tick)
    try:
        reader = ArchiveReader(fd, name, limits)  # closes fd itself when it raises
    except InvalidArchive as exc:
        problems: tuple[str, ...] = (str(exc),)
        ok = False
    else:
        with reader:
            reader.on_read = throttle
            try:
                report = verify_reader(reader)
            except InvalidArchive as exc:  # e.g. a manifest over its limit
                problems, ok = (str(exc),), False
            except OSError as exc:  # the disk failed to read it back: that is damage too
                problems, ok = (f"Cannot read archive {name}: {exc.strerror}",), False
            else:
                problems, ok = tuple(report.problems), report.ok
    if not _still_same(run, name, identity):
        return None
    return CheckResult(name, identity, ok, problems, datetime.now(UTC), throttle.done)


def _still_same(run: RunDir, name: str, identity: ArchiveIdentity) -> bool:
    """Tell whether ``name`` still denotes the unchanged file that was checked."""
    try:
        archives = run.archives()
    except UnsafeRun:
        return False
    if archives is None:
        return False
    with archives:
        try:
            return ArchiveIdentity.of(archives.lstat(name)) == identity
        except FileNotFoundError:
            return False


def archive_names(run: RunDir) -> list[str]:
    """Return the names of the run's listable archives, newest first (none: empty)."""
    archives = run.archives()
    if archives is None:
        return []
    with archives:
        return [name for name, _ in scan_archives(archives)]


def scrub_run(
    run_dir: os.PathLike[str] | str,
    *,
    rate: float | None = None,
    on_result: Callable[[RunDir, CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Check every archive of the run, one at a time; return the results (skipped ones left
    out) and hand each to ``on_result`` as soon as it is known."""
    results = []
    with open_run(run_dir) as run:
        for name in archive_names(run):
            result = check_archive(run, name, rate=rate)
            if result is None:
                continue
            results.append(result)
            if on_result is not None:
                on_result(run, result)
    return results


def runs_under(root: Path, layout: str = "auto") -> Iterator[Path]:
    """Yield the runs below runs root ``root`` that hold an ``archives/`` folder, sorted by id.

    ``flat``: ``<root>/<runid>``; ``sharded``: ``<root>/<shard>/<runid>``; ``auto``: both, a
    folder of one or two characters being a shard (as ``jobs.runs`` looks runs up). Only real
    folders count (``lstat``): a link in the runs root is never taken for a run.
    """
    found: list[tuple[str, Path]] = []
    for entry in _real_dirs(root):
        if layout == "sharded" or (layout == "auto" and len(entry) <= 2):
            found.extend((name, root / entry / name) for name in _real_dirs(root / entry))
        else:
            found.append((entry, root / entry))
    for runid, path in sorted(found):
        if _has_archives(runid, path):
            yield path


def _real_dirs(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(
                e.name
                for e in entries
                if not is_dot_component(e.name) and e.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []


def _has_archives(runid: str, path: Path) -> bool:
    try:
        validate_runid(runid)
    except InvalidInput:
        return False
    return os.path.isdir(path / "archives") and not os.path.islink(path / "archives")
