"""Inside an archive: its tree of entries, one folder's listing, and one file's bytes.

``read_contents`` parses an open archive once (central directory, and the manifest when the
archive has one) into ``Contents``, the tree that browsing, single-file reads and diffs share;
a caller holding an ``ArchiveReader`` builds it once and asks it as many questions as it likes.

Which entries are shown. The archive is hostile input, and what we show must be what a restore
would write, so the tree holds exactly the entries whose names are run paths by restore's own
rule (``safety.entry_path``: UTF-8, relative, no ``.``/``..``/empty components, no control
characters or backslashes, nothing under ``archives/`` or a transient folder). Every other
entry is left out and counted in ``hidden``, and so are: a path that appears more than once
(which of two should be served?), entries beneath a non-folder (``a`` a link or a file and
``a/x`` an entry) or beneath such an ambiguous path, and anything under ``.runarchive/``
(our manifest, or runarchive's state archived by another tool; restore skips it too). Folders
the archive does not record (other zip tools often leave them out) are shown as folders with
no mode and no mtime.

Facts of an entry: its type and size come from the central directory (they describe the bytes
that are served); mode, mtime and sha256 from the manifest when the archive has one and its
entry agrees with the zip on type and size, else mode and mtime from the central directory
(mtime from the UT or NTFS extra, else the DOS fields: ``zipformat``) and no sha256. A link's
target is the manifest's, else the entry's data (read only for rows asked for, at most 4 KiB).

Memory is bounded by the reader's limits: the central directory is refused before parsing
when it claims more entries than ``Limits.max_entries`` allows, and the tree is a dict of the
entries it parsed. Folder totals (files and bytes of each subtree) are summed in one pass over
the sorted paths, deepest first.

Reading or extracting one file is ``member``'s.
"""

from __future__ import annotations

import bisect
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from .errors import (
    EntryNotFound,
    InvalidArchive,
    InvalidInput,
    UnsafeArchive,
)
from .isotime import iso_from_ns
from .limits import Limits
from .manifest import DIR, FILE, MANIFEST_NAME, SYMLINK, Manifest, ManifestEntry
from .names import LEGACY_WORK_DIR, has_control_characters
from .paging import Key, check_limit, decode_cursor, encode_cursor
from .reader import ArchiveReader, open_archive_fd
from .rundir import RunDir
from .safety import entry_path
from .zipformat import CentralEntry, Directory

if TYPE_CHECKING:
    pass

MAX_LINK_BYTES = 4096
# Paths from outside longer than this cannot name an entry (restore refuses longer ones).
MAX_PATH_CHARS = Limits().max_path_chars


def check_path(path: str, *, folder: bool = False) -> str:
    """Return a path from outside (a URL, a command line) naming something inside an archive.

    The result has no trailing slash; ``folder=True`` accepts one, and ``""`` for the top.
    ``..``, ``.``, empty components, absolute paths, backslashes, NUL and other control
    characters are refused (``InvalidInput``): no path climbs, whatever the archive holds.
    """
    if not isinstance(path, str):
        raise InvalidInput("Invalid path: expected text.")
    if folder and path in ("", "/"):
        return ""
    rel = path[:-1] if folder and path.endswith("/") else path
    if len(rel) > MAX_PATH_CHARS:
        raise InvalidInput(f"Invalid path: longer than {MAX_PATH_CHARS} characters.")
    if any(ord(c) < 32 or ord(c) == 127 for c in rel) or "\\" in rel:
        raise InvalidInput("Invalid path: control characters and backslashes are not allowed.")
    if rel.startswith("/"):
        raise InvalidInput(f"Invalid path {rel!r}: it must be relative to the run.")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise InvalidInput(f"Invalid path {rel!r}: empty, '.' and '..' components are refused.")
    return rel


@dataclass(frozen=True, slots=True)
class Entry:
    """One path inside an archive, as a listing row (folders carry their subtree's totals)."""

    path: str
    type: str  # file, dir, symlink, special (fifo, device, socket: shown, never served)
    size: int
    mode: int | None  # permission bits; None when the archive records none
    mtime_ns: int | None
    sha256: str | None = None
    target: str | None = None
    files: int | None = None  # folders: files in the subtree
    bytes: int | None = None  # folders: bytes of those files

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    def as_json(self) -> dict[str, object]:
        """Return the row as the API and ``--json`` give it (mtime as ISO 8601 UTC)."""
        row: dict[str, object] = {
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "mode": self.mode,
            "mtime": iso_from_ns(self.mtime_ns),
            "sha256": self.sha256,
            "target": self.target,
        }
        if self.type == DIR:
            row["files"], row["bytes"] = self.files, self.bytes
        return row


class Node:
    """One path of the tree, its facts settled once (read-only once the tree is built)."""

    __slots__ = ("bytes", "central", "files", "meta", "mode", "mtime_ns", "path", "sha256",
                 "size", "type")  # fmt: skip

    def __init__(
        self, path: str, kind: str, central: CentralEntry | None, meta: ManifestEntry | None
    ) -> None:
        self.path, self.type = path, kind
        self.central = central  # None: a folder the archive does not record
        self.meta = meta  # the manifest's entry, when there is one that agrees with the zip
        self.files = self.bytes = 0  # folders: their subtree's totals
        self.size = 0 if central is None or kind == DIR else central.usize
        self.sha256 = meta.sha256 if meta is not None and kind == FILE else None
        self.mode: int | None
        self.mtime_ns: int | None
        if meta is not None:
            self.mode, self.mtime_ns = meta.mode & 0o7777, meta.mtime_ns
        elif central is not None:
            self.mode = stat.S_IMODE(central.mode) if central.mode else None
            self.mtime_ns = central.mtime_ns
        else:
            self.mode = self.mtime_ns = None

    def __repr__(self) -> str:
        return f"Node({self.path!r}, {self.type!r})"


def tree_key(path: str) -> str:
    # "/" sorts after "-" and "."; as \x01 (no entry path holds a control character) every
    # folder's subtree is contiguous and follows the folder: a pre-order walk of the tree.
    return path.replace("/", "\x01")


class Tree:
    """The archive's paths in pre-order with folder totals; never changed once built.

    The folder index (``children`` and every folder's totals) is built on first use, once,
    under the tree's lock: a diff needs only ``nodes``, a listing needs the index too, and a
    cached tree is shared by the threads serving requests.
    """

    __slots__ = ("_bytes", "_children", "_files", "_index_lock", "_keys", "_listings", "hidden",
                 "nodes", "order")  # fmt: skip

    def __init__(self, order: list[Node], hidden: int) -> None:
        self.order = order  # pre-order: each folder before its content
        self.nodes = {node.path: node for node in order}
        self.hidden = hidden
        self._children: dict[str, list[str]] | None = None
        self._files = self._bytes = 0
        self._index_lock = threading.Lock()
        self._keys: list[str] | None = None
        self._listings: dict[str, tuple[list[Key], list[str]]] = {}

    @property
    def children(self) -> dict[str, list[str]]:
        """Each folder's direct children (``""``: the top), content order."""
        return self._children if self._children is not None else self.index()

    @property
    def files(self) -> int:
        self.index()
        return self._files

    @property
    def bytes(self) -> int:
        self.index()
        return self._bytes

    def index(self) -> dict[str, list[str]]:
        """Build the folder index once (children, folder totals); return ``children``."""
        if self._children is not None:
            return self._children
        with self._index_lock:
            if self._children is not None:  # another thread built it meanwhile
                return self._children
            children: dict[str, list[str]] = {}
            nodes = self.nodes
            top_files = top_bytes = 0
            for node in reversed(self.order):  # content before its folder: one pass
                path = node.path
                parent = path.rpartition("/")[0]
                siblings = children.get(parent)
                if siblings is None:
                    children[parent] = [path]
                else:
                    siblings.append(path)
                files, size = (1, node.size) if node.type == FILE else (node.files, node.bytes)
                above = nodes.get(parent) if parent else None
                if above is None:
                    top_files += files
                    top_bytes += size
                else:
                    above.files += files
                    above.bytes += size
            self._files, self._bytes = top_files, top_bytes
            self._children = children  # last: its presence says the totals are complete
            return children

    @property
    def keys(self) -> list[str]:
        """Return the sort keys of ``order`` (built on first use: only subtree walks need it)."""
        if self._keys is None:
            self._keys = [tree_key(node.path) for node in self.order]
        return self._keys

    def span(self, folder: str) -> tuple[int, int]:
        """Return where ``folder``'s subtree (``""``: everything) lies in ``order``."""
        if not folder:
            return 0, len(self.order)
        keys = self.keys
        start = bisect.bisect_left(keys, tree_key(folder) + "\x01")
        return start, bisect.bisect_left(keys, tree_key(folder) + "\x02", lo=start)

    def listing(self, folder: str) -> tuple[list[Key], list[str]]:
        """Return a folder's children in listing order with their keys, sorted once and kept.

        The tree never changes, so a page of a big folder is a bisect and a slice: the sort of
        10,000 names is paid by the folder's first page only. Racing threads may both sort;
        both results are the same.
        """
        found = self._listings.get(folder)
        if found is None:
            nodes = self.nodes
            rows = sorted(
                ((0 if nodes[p].type == DIR else 1, p.rpartition("/")[2]), p)
                for p in self.children.get(folder, [])
            )
            found = self._listings[folder] = ([k for k, _ in rows], [p for _, p in rows])
        return found


class Contents:
    """An archive's tree as browsing and diffs see it, with the reader it came from."""

    def __init__(self, reader: ArchiveReader, tree: Tree) -> None:
        self.reader = reader
        self.tree = tree
        self.nodes = tree.nodes
        self.hidden = tree.hidden

    @property
    def children(self) -> dict[str, list[str]]:
        return self.tree.children

    def __enter__(self) -> Contents:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.reader.close()

    @property
    def name(self) -> str:
        return self.reader.name

    @property
    def has_manifest(self) -> bool:
        return self.reader.manifest() is not None

    def find(self, path: str, kind: str | None = None) -> Node:
        """Return the node at ``path`` (validated); EntryNotFound if absent or not ``kind``."""
        rel = check_path(path, folder=kind != FILE)
        node = self.nodes.get(rel)
        if node is None:
            raise EntryNotFound(f"The archive {self.name} holds nothing at {rel!r}.")
        if kind is not None and node.type != kind:
            raise EntryNotFound(
                f"{rel!r} in the archive {self.name} is a {node.type}, not a {kind}."
            )
        return node

    def entry(self, node: Node) -> Entry:
        """Return the listing row of ``node`` (a link's target read if the manifest lacks it)."""
        target = None
        if node.type == SYMLINK:
            target = node.meta.target if node.meta is not None else self._link_target(node)
        folder = node.type == DIR
        if folder:
            self.tree.index()  # folder totals
        return Entry(
            node.path, node.type, node.size, node.mode, node.mtime_ns, node.sha256, target,
            node.files if folder else None, node.bytes if folder else None,
        )  # fmt: skip

    def _link_target(self, node: Node) -> str | None:
        entry = node.central
        if entry is None or not 0 < entry.usize <= MAX_LINK_BYTES:
            return None
        try:
            return b"".join(self.reader.stream(entry)).decode("utf-8")
        except (InvalidArchive, UnicodeDecodeError, OSError):
            return None  # shown without a target; restore would refuse the archive

    def under(self, prefix: str) -> list[str]:
        """Return every path below folder ``prefix`` (``""``: all), in pre-order."""
        start, stop = self.tree.span(prefix)
        return [node.path for node in self.tree.order[start:stop]]


# Parsed archives, by the identity of the file they were parsed from. Published archives never
# change (a name matching the pattern is always a complete archive, written once and linked),
# and the key holds the inode, size, mtime and ctime: any write to the file, or a new file
# under the name, changes the ctime, which no user can set back. So a cached tree is the tree
# of the file now open. Bounded in entries, least recently used first out.
_Key = tuple[int, int, int, int, int, int]
_Parsed = tuple[Directory, Manifest | None, Tree]
_cache: OrderedDict[_Key, _Parsed] = OrderedDict()
_cache_lock = threading.Lock()
CACHE_MAX_ENTRIES = 250_000


def _cache_key(st: os.stat_result, limits: Limits) -> _Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, limits.max_entries)


def _cached(key: _Key) -> _Parsed | None:
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
        return found


def _remember(key: _Key, parsed: _Parsed) -> None:
    size = len(parsed[0].entries)
    if size > CACHE_MAX_ENTRIES:
        return
    with _cache_lock:
        _cache[key] = parsed
        total = sum(len(p[0].entries) for p in _cache.values())
        while total > CACHE_MAX_ENTRIES:
            _, dropped = _cache.popitem(last=False)
            total -= len(dropped[0].entries)


def open_contents(run: RunDir, name: str, limits: Limits | None = None) -> Contents:
    """Open archive ``name`` of the run and return its tree (close it, or use ``with``).

    The archive is opened by handle and checked like a download (``open_archive_fd``); an
    archive parsed before (same inode, size, mtime and ctime) is not parsed again.
    """
    lim = limits or Limits.from_env()
    fd, st = open_archive_fd(run, name)
    key = _cache_key(st, lim)
    hit = _cached(key)
    if hit is not None:
        return Contents(ArchiveReader(fd, name, lim, (hit[0], hit[1])), hit[2])
    reader = ArchiveReader(fd, name, lim)
    try:
        tree = _build_tree(reader)
    except BaseException:
        reader.close()
        raise
    _remember(key, (reader.directory, reader.manifest(), tree))
    return Contents(reader, tree)


def read_contents(reader: ArchiveReader) -> Contents:
    """Return the tree of an archive a caller already holds open (parsed once, then cached)."""
    key = _cache_key(os.fstat(reader.fd), reader.limits)
    hit = _cached(key)
    if hit is not None and hit[0].cd_offset == reader.directory.cd_offset:
        return Contents(reader, hit[2])
    tree = _build_tree(reader)
    _remember(key, (reader.directory, reader.manifest(), tree))
    return Contents(reader, tree)


def _build_tree(reader: ArchiveReader) -> Tree:
    """Build the tree from the central directory and the manifest (see the module doc)."""
    manifest = reader.manifest()
    by_path = manifest.by_path() if manifest is not None else {}
    found: dict[str, Node] = {}
    seen_twice: set[str] = set()
    hidden = 0
    for entry in reader.entries:
        if entry.name == MANIFEST_NAME:
            continue
        try:
            path = entry_path(entry)
        except UnsafeArchive:
            hidden += 1
            continue
        if path.split("/", 1)[0] == LEGACY_WORK_DIR or len(path) > MAX_PATH_CHARS:
            hidden += 1
            continue
        if path in found:
            seen_twice.add(path)
            hidden += 1
            continue
        kind = entry.kind
        meta = by_path.get(path)
        if meta is not None and (meta.type != kind or (kind != DIR and meta.size != entry.usize)):
            meta = None  # a manifest that disagrees with its zip vouches for nothing here
        found[path] = Node(path, kind, entry, meta)
    placed: dict[str, Node] = {}
    order: list[Node] = []
    # Each folder before its content: tree_key order, the keys made in one C-level pass
    # (no entry path holds a control character, so the mapping back is exact).
    for key in sorted([p.replace("/", "\x01") for p in found]):
        path = key.replace("\x01", "/")
        if path in seen_twice:  # ambiguous: left out, and so is everything below it
            hidden += 1
            continue
        parent = path.rpartition("/")[0]
        above = placed.get(parent) if parent else None
        # The common case inline: the parent is a folder already placed, or there is none.
        settled = not parent or (above is not None and above.type == DIR)
        if not settled and _beneath_non_folder(path, found, placed, order):
            hidden += 1
            continue
        node = placed[path] = found[path]
        order.append(node)
    return Tree(order, hidden)


def _beneath_non_folder(
    path: str, found: dict[str, Node], placed: dict[str, Node], order: list[Node]
) -> bool:
    """Tell whether ``path`` lies beneath a non-folder; place the folders it implies.

    Ancestors are visited only up to the first one already placed, so each folder is created
    and checked once (paths come in pre-order: a recorded ancestor has been placed already,
    and a folder the archive does not record goes just before its first content).
    """
    missing: list[str] = []
    parent = path.rpartition("/")[0]
    while parent:
        known = placed.get(parent)
        if known is not None:
            if known.type != DIR:
                return True
            break
        if parent in found:  # recorded but left out: it lies beneath a non-folder itself
            return True
        missing.append(parent)
        parent = parent.rpartition("/")[0]
    for folder in reversed(missing):
        node = placed[folder] = Node(folder, DIR, None, None)
        order.append(node)
    return False


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of a folder's listing (or of its whole subtree)."""

    prefix: str
    entries: tuple[Entry, ...]
    next: str | None
    total: int
    hidden: int  # entries of the archive left out (see the module doc)

    def as_json(self) -> dict[str, object]:
        """Return the page as the API and ``--json`` give it."""
        return {
            "entries": [e.as_json() for e in self.entries],
            "next": self.next,
            "total": self.total,
            "hidden": self.hidden,
        }


def list_entries(
    contents: Contents,
    prefix: str = "",
    *,
    cursor: str | None = None,
    limit: int | None = None,
    recursive: bool = False,
    search: str | None = None,
) -> Listing:
    """Return one page of the direct children of folder ``prefix`` (``""``: the top).

    Folders come first, then everything else, each by name; folder rows carry the files and
    bytes of their subtree. ``recursive`` lists the whole subtree instead, in pre-order
    (each folder before its content). ``search`` lists, in that same pre-order, only the
    paths of the subtree that contain it (case-insensitive; ``total`` counts the matches).
    ``limit`` is 1 to 1000 (default 200); ``next`` is the cursor of the following page, None
    on the last one.
    """
    size = check_limit(limit)
    folder = check_path(prefix, folder=True)
    needle = check_search(search)
    if folder:
        contents.find(folder, DIR)
    scope = f"entries\x00{contents.name}\x00{folder}\x00{int(recursive)}"
    if needle is not None:  # a search's cursor is good for that search only
        scope += f"\x00search\x00{needle}"
    after = decode_cursor(cursor, scope, ranks=2)
    tree = contents.tree
    if needle is not None:  # one pass over the subtree: a contains-match has no index
        start, stop = tree.span(folder)
        walk, order = tree.keys, tree.order
        first = start if after is None else bisect.bisect_right(walk, after[1], start, stop)
        hits = [i for i in range(start, stop) if needle in order[i].path.casefold()]
        begin = bisect.bisect_left(hits, first)
        chosen = hits[begin : begin + size]
        page = [order[i].path for i in chosen]
        last: Key | None = (0, walk[chosen[-1]]) if begin + size < len(hits) else None
        total = len(hits)
    elif recursive:  # pre-order keys: a page is a bisect and a slice of the tree's order
        start, stop = tree.span(folder)
        first = start if after is None else bisect.bisect_right(tree.keys, after[1], start, stop)
        end = min(first + size, stop)
        page = [node.path for node in tree.order[first:end]]
        last = (0, tree.keys[end - 1]) if end < stop else None
        total = stop - start
    else:
        keys, paths = tree.listing(folder)
        first = 0 if after is None else bisect.bisect_right(keys, after)
        end = min(first + size, len(keys))
        page = paths[first:end]
        last = keys[end - 1] if end < len(keys) else None
        total = len(keys)
    rows = tuple(contents.entry(contents.nodes[p]) for p in page)
    more = None if last is None else encode_cursor(scope, last)
    return Listing(folder, rows, more, total, contents.hidden)


MAX_SEARCH_CHARS = 200


def check_search(text: str | None) -> str | None:
    """Return a search text as matched (case-folded; None or empty: no search); InvalidInput
    for one too long or holding a control character (no path holds one)."""
    if text is None or text == "":
        return None
    if len(text) > MAX_SEARCH_CHARS:
        raise InvalidInput(f"Search text is longer than {MAX_SEARCH_CHARS} characters.")
    if has_control_characters(text):
        raise InvalidInput("Search text holds a control character; no path does.")
    return text.casefold()


def stat_entry(contents: Contents, path: str) -> Entry:
    """Return the row of the entry at ``path`` (EntryNotFound when the tree does not hold it)."""
    return contents.entry(contents.find(path))
