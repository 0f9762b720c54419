"""Pins: archives a person chose to keep. Never pruned; not deleted until unpinned.

Kept with the run, in ``archives/.runarchive/pins.json`` (so the CLI works without the
service): ``{"pinned":[<names>],"version":1}``, the names sorted, unique, each a listable
archive name (``names.is_archive_name``), at most ``MAX_PINS`` of them, read back strictly
(``statefile``). A pin names an archive, not a file: a pinned name whose archive is gone
stays pinned until unpinned (harmless: nothing of that name can be pruned or deleted).

Pin and unpin hold the run lock (``Busy`` while an archive, restore, delete or prune runs),
refuse a read-only run, and write the file atomically; the delete and prune paths read the
pins under the same lock, so no pin can be lost to a race with them.
"""

from __future__ import annotations

import os

from .errors import InvalidInput, UnsafeRun
from .journal import recover_locked
from .names import ArchiveRef, archive_ref, is_archive_name
from .rundir import RunDir, open_run
from .runlock import run_lock
from .statefile import read_state, write_state

PINS_FILE = "pins.json"
MAX_PINS = 10_000
_VERSION = 1


def parse_pins(value: object) -> frozenset[str]:
    """Return the pinned names of a parsed pins file, or raise UnsafeRun."""
    if not isinstance(value, dict) or set(value) != {"pinned", "version"}:
        raise UnsafeRun(f"{PINS_FILE}: expected exactly the keys pinned and version.")
    names = value["pinned"]
    if value["version"] != _VERSION or not isinstance(names, list) or len(names) > MAX_PINS:
        raise UnsafeRun(f"{PINS_FILE}: wrong version or too many pins.")
    if not all(isinstance(n, str) and is_archive_name(n) for n in names):
        raise UnsafeRun(f"{PINS_FILE}: a pinned name is not an archive name.")
    if names != sorted(set(names)):
        raise UnsafeRun(f"{PINS_FILE}: names must be sorted and unique.")
    return frozenset(names)


def read_pins(run: RunDir) -> frozenset[str]:
    """Return the run's pinned archive names (empty when it has none)."""
    work = run.work()
    if work is None:
        return frozenset()
    with work:
        value = read_state(work, PINS_FILE)
    return frozenset() if value is None else parse_pins(value)


def pinned_names(run_dir: os.PathLike[str] | str) -> frozenset[str]:
    """Return the pinned archive names of the run at ``run_dir``."""
    with open_run(run_dir) as run:
        return read_pins(run)


def set_pinned(run_dir: os.PathLike[str] | str, name: str | ArchiveRef, pinned: bool) -> bool:
    """Pin (or unpin) archive ``name``; return whether it is pinned now.

    Pinning needs the archive to exist (NotFound); unpinning a name that is not pinned is a
    no-op (so an archive removed by hand can still be unpinned).
    """
    ref = archive_ref(name)
    with open_run(run_dir) as run, run_lock(run) as work:
        run.require_writable()
        recover_locked(run, work)
        if pinned:
            from .reader import open_archive_fd  # here: a list reads the pins, never an archive

            os.close(open_archive_fd(run, ref)[0])  # NotFound when it is not there
        current = parse_pins(read_state(work, PINS_FILE) or {"pinned": [], "version": _VERSION})
        wanted = current | {ref.name} if pinned else current - {ref.name}
        if wanted != current:
            if len(wanted) > MAX_PINS:
                raise InvalidInput(f"Run {run.runid} has {MAX_PINS} pins; unpin some first.")
            write_state(work, PINS_FILE, {"pinned": sorted(wanted), "version": _VERSION})
        return pinned
