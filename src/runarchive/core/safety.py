"""Deciding whether an archive may be restored, before anything is touched.

Every check here runs on the central directory, the local headers and the manifest only;
content checks (CRC, sha256, real inflated bytes) happen while extracting into the stage,
which is still before the run is touched. Each refusal says which entry and why.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field

from .errors import LimitExceeded, UnsafeArchive
from .limits import Limits
from .manifest import DIR, FILE, SYMLINK, ManifestEntry
from .names import (
    ARCHIVES_DIR,
    LEGACY_WORK_DIR,
    TRANSIENT_RE,
    has_control_characters,
    is_dot_component,
)
from .reader import ArchiveReader
from .tree import link_leaves_run
from .zipformat import DEFLATED, STORED, CentralEntry

_DRIVE = re.compile(r"^[A-Za-z]:")
# One regex search each instead of a Python-level loop over characters: checking 30,000 names
# went from ~0.1 s to ~10 ms, which a listing or a diff pays on every request.
_SURROGATE = re.compile(r"[\udc80-\udcff]")
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")
# Names every rule below passes at a glance (the common case, checked in one match): ASCII
# components not starting with a dot, at most 255 characters each, an optional final slash.
_PLAIN = re.compile(r"(?:[\w+-][\w.+-]{0,254}/)*[\w+-][\w.+-]{0,254}/?", re.ASCII)
_MAX_LINK_BYTES = 4096


@dataclass(slots=True)
class PlanItem:
    """One entry to restore, with the facts the extractor applies."""

    entry: CentralEntry
    path: str
    type: str
    mode: int
    mtime_ns: int
    sha256: str | None = None
    target: str | None = None


@dataclass(slots=True)
class RestorePlan:
    """A fully checked list of entries, parents before children."""

    items: list[PlanItem]
    total_bytes: int
    had_manifest: bool
    warnings: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(1 for i in self.items if i.type == FILE)


def check_entry_name(name: str) -> str:
    """Return the entry's relative path without a trailing slash, or raise UnsafeArchive."""
    if has_control_characters(name):
        raise UnsafeArchive(f"Entry {name!r} has control characters in its name.")
    if "\\" in name:
        raise UnsafeArchive(f"Entry {name!r} contains a backslash.")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchive(f"Entry {name!r} has an absolute path.")
    path = name[:-1] if name.endswith("/") else name
    parts = path.split("/")
    if not path or any(not p or is_dot_component(p) for p in parts):
        raise UnsafeArchive(f"Entry {name!r} has an empty, '.' or '..' path component.")
    # A component over 255 bytes needs a path over 63 characters (4 bytes at most each).
    if len(path) > 63 and any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise UnsafeArchive(f"Entry {name[:80]!r}… has a name component longer than 255 bytes.")
    if parts[0] == ARCHIVES_DIR or TRANSIENT_RE.fullmatch(parts[0]):
        raise UnsafeArchive(f"Entry {name!r} would write into the reserved {parts[0]}/ folder.")
    return path


def _check_encoding(entry: CentralEntry) -> None:
    if _SURROGATE.search(entry.name):
        raise UnsafeArchive(f"Entry {entry.name!r} has a name that is not valid UTF-8.")
    if not entry.utf8 and _HIGH_BYTE.search(entry.raw_name):
        raise UnsafeArchive(f"Entry {entry.raw_name!r} has a non-UTF-8 (legacy code page) name.")


def entry_path(entry: CentralEntry) -> str:
    """Return the run path an entry would restore to, or raise UnsafeArchive.

    The one rule for which names are paths of the run: restore refuses an archive holding any
    other, and browsing (``inside``) leaves such entries out, so both see the same tree.
    """
    name = entry.name
    if _PLAIN.fullmatch(name) and name.split("/", 1)[0] != ARCHIVES_DIR:
        return name[:-1] if name.endswith("/") else name  # ASCII: no encoding to check
    _check_encoding(entry)
    return check_entry_name(name)


def plan_restore(
    reader: ArchiveReader, limits: Limits, allow_external_links: bool = False
) -> RestorePlan:
    """Check the whole archive's structure and return what to extract, or raise."""
    content = reader.content_entries()
    if len(content) > limits.max_entries:
        raise LimitExceeded(
            f"Archive has {len(content)} entries; the limit is "
            f"{limits.max_entries} (RUNARCHIVE_MAX_ENTRIES)."
        )
    total = sum(e.usize for e in content)
    if total > limits.max_total_bytes:
        raise LimitExceeded(
            f"Archive would restore {total} bytes; the limit is "
            f"{limits.max_total_bytes} (RUNARCHIVE_MAX_TOTAL_BYTES)."
        )
    reader.check_layout()
    manifest = reader.manifest()
    by_path = manifest.by_path() if manifest else {}
    kinds: dict[str, str] = {}
    items: list[PlanItem] = []
    skipped: list[str] = []
    for entry in content:
        path = entry_path(entry)
        if path.split("/", 1)[0] == LEGACY_WORK_DIR:
            # Another tool archived runarchive's state folder (WEPPcloud takes all but
            # archives/): our state is never restored from an archive, so it is left out.
            skipped.append(path)
            continue
        if len(path) > limits.max_path_chars:
            raise UnsafeArchive(
                f"Entry {path[:80]!r}… has a path longer than {limits.max_path_chars} characters."
            )
        if path in kinds:
            raise UnsafeArchive(f"Entry {path!r} appears more than once.")
        if entry.flags & 0x1 or entry.method not in (STORED, DEFLATED):
            raise UnsafeArchive(f"Entry {path!r} is encrypted or uses an unsupported method.")
        if entry.usize > limits.max_entry_bytes:
            raise LimitExceeded(
                f"Entry {path!r} is {entry.usize} bytes; the per-entry limit "
                f"is {limits.max_entry_bytes}."
            )
        if entry.usize > limits.ratio_min_bytes and entry.usize > entry.csize * limits.max_ratio:
            raise LimitExceeded(
                f"Entry {path!r} inflates more than {limits.max_ratio:.0f}:1 "
                "(possible zip bomb); raise RUNARCHIVE_MAX_RATIO if it is genuine."
            )
        kind = entry.kind
        if kind == "special":
            raise UnsafeArchive(f"Entry {path!r} is a device, fifo or socket.")
        items.append(_item(entry, path, kind, by_path.get(path), manifest is not None))
        kinds[path] = kind
    archive_bytes = reader.directory.file_size
    if total > limits.ratio_min_bytes and total > archive_bytes * limits.max_ratio:
        raise LimitExceeded(
            f"Archive would inflate {archive_bytes} bytes to {total} "
            f"(more than {limits.max_ratio:.0f}:1 over the whole archive; possible zip bomb). "
            "Raise RUNARCHIVE_MAX_RATIO if it is genuine."
        )
    _check_parents(kinds)
    _read_links(reader, items)
    _check_links(items, allow_external_links)
    if manifest is not None:
        missing = sorted(set(by_path) - set(kinds))
        if missing:
            raise UnsafeArchive(f"Manifest lists {missing[0]!r}, which the archive lacks.")
    warnings = (
        []
        if manifest
        else [
            "Archive has no runarchive manifest (made by another tool): restored after the same "
            "structural and CRC checks, without sha256 verification. Empty folders it does not "
            "record (zip tools often leave them out) are not restored."
        ]
    )
    if skipped:
        shown = ", ".join(skipped[:3]) + (" …" if len(skipped) > 3 else "")
        warnings.append(
            f"Skipped {len(skipped)} entries under {LEGACY_WORK_DIR}/ ({shown}): runarchive's "
            "own state folder, archived by another tool, is never restored."
        )
    return RestorePlan(items, total, manifest is not None, warnings)


def _item(
    entry: CentralEntry, path: str, kind: str, m: ManifestEntry | None, has_manifest: bool
) -> PlanItem:
    if has_manifest:
        if m is None:
            raise UnsafeArchive(f"Entry {path!r} is not in the archive's manifest.")
        if m.type != kind:
            raise UnsafeArchive(f"Entry {path!r} is a {kind} but the manifest says {m.type}.")
        if kind == FILE and m.size != entry.usize:
            raise UnsafeArchive(f"Entry {path!r} size differs from the manifest.")
        return PlanItem(entry, path, kind, m.mode & 0o777, m.mtime_ns, m.sha256, m.target)
    mode = stat.S_IMODE(entry.mode) & 0o777 or (0o755 if kind == DIR else 0o644)
    # Without our manifest the entry's own fields are all there is: UT, NTFS or local DOS time.
    return PlanItem(entry, path, kind, mode, entry.mtime_ns or 0)


def _check_parents(kinds: dict[str, str]) -> None:
    for path in kinds:
        parent = path.rpartition("/")[0]
        while parent:
            kind = kinds.get(parent)
            if kind is not None and kind != DIR:
                raise UnsafeArchive(f"Entry {path!r} lies beneath {parent!r}, which is a {kind}.")
            parent = parent.rpartition("/")[0]


def _read_links(reader: ArchiveReader, items: list[PlanItem]) -> None:
    """Read every link target from the archive body; it must agree with the manifest."""
    for item in items:
        if item.type != SYMLINK:
            continue
        if item.entry.usize > _MAX_LINK_BYTES or item.entry.usize == 0:
            raise UnsafeArchive(f"Link {item.path!r} has an empty or oversized target.")
        raw = b"".join(reader.stream(item.entry))
        try:
            target = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeArchive(f"Link {item.path!r} target is not valid UTF-8.") from None
        if item.target is not None and item.target != target:
            raise UnsafeArchive(f"Link {item.path!r} target differs from the manifest.")
        item.target = target


def _check_links(items: list[PlanItem], allow_external: bool) -> None:
    links = {i.path: i.target or "" for i in items if i.type == SYMLINK}
    for path, target in links.items():
        if "\x00" in target:
            raise UnsafeArchive(f"Link {path!r} target contains NUL.")
        if not allow_external and link_leaves_run(path, links):
            raise UnsafeArchive(
                f"Link {path!r} points outside the run ({target}); restore refuses it unless "
                "external links are explicitly allowed."
            )
