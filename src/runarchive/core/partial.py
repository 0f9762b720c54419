"""Partial restore: which paths of an archive to put back, and what the swap moves for them.

The paths come from outside (``"paths": ["dir/", "file"]``, ``--path``): ``parse_restore_paths``
normalises them once at the edge into a ``RestorePaths`` that is handed down. Each is checked
with the archive entry name rule (``safety.check_entry_name``: no ``..``, absolute path,
backslash, control character or NUL), may not name our own top-level folders
(``archives/``, ``.runarchive*``), and a trailing ``/`` says it must be a folder; a path
beneath another one asked for collapses into it.

``select_paths`` then decides, against the checked plan and the run, before anything is
written: every path must be in the archive (``InvalidInput`` naming it otherwise); a folder
is restored whole, so it becomes exactly the archive's folder (files under it the archive
lacks are removed); everything else in the run stays as it is. The swap moves *units*: each
path itself, or — when a folder on the way is missing from the run — the topmost missing
folder, staged with only what was asked beneath it. A folder on the way that is not a folder
in the run (a file, a link) is refused, as is one its owner cannot write.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from .errors import InvalidInput, UnsafeArchive
from .manifest import DIR, FILE
from .names import ArchiveRef, is_reserved_top
from .reader import open_archive
from .rundir import Folder, RunDir
from .safety import PlanItem, RestorePlan, check_entry_name, entry_path

MAX_PATHS = 10_000


@dataclass(frozen=True, slots=True)
class RestorePaths:
    """The paths of a partial restore, normalised once: sorted, none beneath another."""

    paths: tuple[str, ...]
    folders: frozenset[str] = frozenset()  # those asked with a trailing "/"
    roots: frozenset[str] = field(init=False, repr=False, compare=False)  # ``paths`` as a set

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots", frozenset(self.paths))

    def as_list(self) -> list[str]:
        """The paths as the API and the queue spell them (a folder with its ``/``)."""
        return [p + "/" if p in self.folders else p for p in self.paths]

    def covers(self, path: str) -> bool:
        """Tell whether a restore of these paths replaces ``path`` (one of them, or beneath)."""
        return _within(path, self.roots)


def parse_restore_paths(raw: Iterable[object] | RestorePaths | None) -> RestorePaths | None:
    """Return the paths as a ``RestorePaths`` (None: the whole archive); InvalidInput if bad."""
    if raw is None or isinstance(raw, RestorePaths):
        return raw
    if isinstance(raw, str | bytes) or not isinstance(raw, Iterable):
        raise InvalidInput("Paths must be a list of paths of the run.")
    given = list(raw)
    if not given:
        raise InvalidInput("Paths must name at least one file or folder (omit it for all).")
    if len(given) > MAX_PATHS:
        raise InvalidInput(f"Paths names {len(given)} entries; at most {MAX_PATHS} are accepted.")
    found: dict[str, bool] = {}
    for value in given:
        if not isinstance(value, str):
            raise InvalidInput("Each path must be a string.")
        try:
            path = check_entry_name(value)
        except UnsafeArchive as exc:
            # The archive rule's words, about a path given rather than an entry read.
            reason = str(exc).replace(f"Entry {value!r}", "it")
            raise InvalidInput(f"Invalid path {value[:200]!r}: {reason}") from None
        top = path.split("/", 1)[0]
        if is_reserved_top(top):
            raise InvalidInput(f"Invalid path {value!r}: {top}/ is runarchive's own.")
        found[path] = found.get(path, False) or value.endswith("/")
    kept: list[str] = []
    for path in sorted(found):  # a parent sorts right before the paths beneath it
        # "a" < "a-b" < "a/b": check every kept path, not only the last one.
        if any(path.startswith(k + "/") for k in kept):
            continue
        kept.append(path)
    return RestorePaths(tuple(kept), frozenset(p for p in kept if found[p]))


@dataclass(frozen=True, slots=True)
class Selection:
    """What a partial restore stages (``plan``) and swaps (``units``)."""

    plan: RestorePlan
    units: tuple[str, ...]


def select_paths(plan: RestorePlan, paths: RestorePaths, run: RunDir, archive: str) -> Selection:
    """Check ``paths`` against the archive and the run; return what to stage and swap."""
    kinds = {i.path: i.type for i in plan.items}
    below = {p for p in paths.paths if p not in kinds}
    for item in plan.items:  # folders only implied by what lies beneath them
        for p in [p for p in below if item.path.startswith(p + "/")]:
            kinds[p] = DIR
            below.discard(p)
    for path in paths.paths:
        kind = kinds.get(path)
        if kind is None:
            raise InvalidInput(f"{path!r} is not in archive {archive}; nothing was changed.")
        if path in paths.folders and kind != DIR:
            raise InvalidInput(f"{path + '/'!r} is a {kind} in archive {archive}, not a folder.")
    units = sorted({_unit(run, p) for p in paths.paths})
    wanted = set(paths.paths)
    items: list[PlanItem] = []
    for item in plan.items:
        if _within(item.path, wanted) or (
            item.type == DIR
            and any(_within(item.path, {u}) for u in units)
            and any(p.startswith(item.path + "/") for p in wanted)
        ):
            items.append(item)
    total = sum(i.entry.usize for i in items if i.type == FILE)
    return Selection(RestorePlan(items, total, plan.had_manifest, plan.warnings), tuple(units))


def _within(path: str, roots: AbstractSet[str]) -> bool:
    """Tell whether ``path`` is one of ``roots`` or beneath one."""
    if path in roots:
        return True
    parent = path.rpartition("/")[0]
    while parent:
        if parent in roots:
            return True
        parent = parent.rpartition("/")[0]
    return False


def _unit(run: RunDir, path: str) -> str:
    """Return what the swap moves for ``path``: itself, or its topmost folder the run lacks."""
    parts = path.split("/")
    folder: Folder = run
    opened: list[Folder] = []
    try:
        for i, part in enumerate(parts[:-1]):
            here = "/".join(parts[: i + 1])
            try:
                st = folder.lstat(part)
            except FileNotFoundError:
                return here
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidInput(
                    f"{here!r} is not a folder in the run, so {path!r} cannot be restored "
                    f"beneath it; restore {here!r} itself. Nothing was changed."
                )
            folder = folder.open(part)
            opened.append(folder)
        if opened and not os.fstat(folder.fd).st_mode & stat.S_IWUSR:
            raise InvalidInput(
                f"Folder {folder.label!r} of the run is read-only, so {path!r} cannot be "
                "replaced in it; nothing was changed."
            )
        return path
    finally:
        for f in opened:
            f.close()


def check_restore_paths(run: RunDir, archive: str | ArchiveRef, paths: RestorePaths) -> None:
    """Refuse (InvalidInput) a path the archive lacks, reading its central directory only.

    What an enqueue answers at once, before a job is queued; the job's own plan checks the
    same and everything else (``select_paths``). Entries restore would refuse are left out
    here: the job refuses the archive with its own message.
    """
    kinds: dict[str, str] = {}
    with open_archive(run, archive) as reader:
        for entry in reader.content_entries():
            try:
                path = entry_path(entry)
            except UnsafeArchive:
                continue
            kinds[path] = DIR if entry.name.endswith("/") else FILE
            parent = path.rpartition("/")[0]
            while parent and parent not in kinds:
                kinds[parent] = DIR
                parent = parent.rpartition("/")[0]
    for path in paths.paths:
        kind = kinds.get(path)
        if kind is None:
            raise InvalidInput(f"{path!r} is not in archive {archive}; nothing was changed.")
        if path in paths.folders and kind != DIR:
            raise InvalidInput(f"{path + '/'!r} is not a folder in archive {archive}.")
