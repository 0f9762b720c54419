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
``a/x`` an entry), and anything under ``.runarchive/`` (our manifest, or runarchive's state
archived by another tool; restore skips it too). Folders the archive does not record (other
zip tools often leave them out) are shown as folders with no mode and no mtime.

Facts of an entry: its type and size come from the central directory (they describe the bytes
that are served); mode, mtime and sha256 from the manifest when the archive has one and its
entry agrees with the zip on type and size, else mode and mtime from the central directory
(mtime from the UT or NTFS extra, else the DOS fields: ``zipformat``) and no sha256. A link's
target is the manifest's, else the entry's data (read only for rows asked for, at most 4 KiB).

Memory is bounded by the reader's limits: the central directory is refused before parsing
when it claims more entries than ``Limits.max_entries`` allows, and the tree is a dict of the
entries it parsed. Folder totals (files and bytes of each subtree) are summed in one pass over
the sorted paths, deepest first.

Reading one file (``open_member``) streams its bytes from the archive's descriptor, one bounded
piece at a time: stored data by ``pread`` at the range's start, deflated data inflated from the
entry's start and discarded up to the range's start. Header lies are caught as in
``reader.ArchiveReader.stream``: never more bytes than declared, never beyond the ratio limit,
the CRC checked whenever the bytes read cover the entry to its end from its first byte. A
damage found after bytes were handed out raises ``DamagedArchive`` from the read that finds it.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from isal import isal_zlib

from .errors import (
    DamagedArchive,
    EntryNotFound,
    InvalidArchive,
    InvalidInput,
    LimitExceeded,
    UnsafeArchive,
)
from .limits import Limits
from .manifest import DIR, FILE, MANIFEST_NAME, SYMLINK, Manifest, ManifestEntry
from .names import LEGACY_WORK_DIR
from .paging import Key, check_limit, decode_cursor, encode_cursor
from .reader import READ_BLOCK, ArchiveReader, open_archive_fd
from .rundir import RunDir
from .safety import entry_path
from .zipformat import DEFLATED, STORED, CentralEntry, Directory

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

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


def iso_utc(mtime_ns: int | None) -> str | None:
    """Return ``mtime_ns`` as ISO 8601 UTC with microseconds when not whole, else None."""
    if mtime_ns is None:
        return None
    seconds, rest = divmod(mtime_ns, 1_000_000_000)
    try:
        when = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest // 1000)
    except (OverflowError, OSError, ValueError):
        return None  # a hostile manifest's mtime no calendar holds
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{when.microsecond:06d}Z" if when.microsecond else f"{text}Z"


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
            "mtime": iso_utc(self.mtime_ns),
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
    """The archive's paths in pre-order with folder totals; never changed once built."""

    __slots__ = ("_keys", "_listings", "bytes", "children", "files", "hidden", "nodes", "order")

    def __init__(self, order: list[Node], hidden: int) -> None:
        self.order = order  # pre-order: each folder before its content
        self.nodes = {node.path: node for node in order}
        self.hidden = hidden
        self.children: dict[str, list[str]] = {}
        self.files = self.bytes = 0
        self._keys: list[str] | None = None
        self._listings: dict[str, tuple[list[Key], list[str]]] = {}
        nodes = self.nodes
        for node in reversed(order):  # content before its folder: totals in one pass
            parent = node.path.rpartition("/")[0]
            self.children.setdefault(parent, []).append(node.path)
            files, size = (1, node.size) if node.type == FILE else (node.files, node.bytes)
            above = nodes.get(parent) if parent else None
            if above is None:
                self.files += files
                self.bytes += size
            else:
                above.files += files
                above.bytes += size

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
        self.children = tree.children
        self.hidden = tree.hidden

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
    for path in seen_twice:
        del found[path]
        hidden += 1
    placed: dict[str, Node] = {}
    order: list[Node] = []
    for path in sorted(found, key=tree_key):  # each folder before its content
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
) -> Listing:
    """Return one page of the direct children of folder ``prefix`` (``""``: the top).

    Folders come first, then everything else, each by name; folder rows carry the files and
    bytes of their subtree. ``recursive`` lists the whole subtree instead, in pre-order
    (each folder before its content). ``limit`` is 1 to 1000 (default 200); ``next`` is the
    cursor of the following page, None on the last one.
    """
    size = check_limit(limit)
    folder = check_path(prefix, folder=True)
    if folder:
        contents.find(folder, DIR)
    scope = f"entries\x00{contents.name}\x00{folder}\x00{int(recursive)}"
    after = decode_cursor(cursor, scope, ranks=2)
    tree = contents.tree
    if recursive:  # pre-order keys: a page is a bisect and a slice of the tree's order
        start, stop = tree.span(folder)
        first = start if after is None else bisect.bisect_right(tree.keys, after[1], start, stop)
        end = min(first + size, stop)
        page = [node.path for node in tree.order[first:end]]
        last: Key | None = (0, tree.keys[end - 1]) if end < stop else None
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


def stat_entry(contents: Contents, path: str) -> Entry:
    """Return the row of the entry at ``path`` (EntryNotFound when the tree does not hold it)."""
    return contents.entry(contents.find(path))


def open_member(
    contents: Contents,
    path: str,
    *,
    start: int = 0,
    stop: int | None = None,
    owns_reader: bool = False,
) -> MemberStream:
    """Open the file at ``path`` for reading its bytes ``start`` to ``stop`` (default: the end).

    Everything that can be checked before a byte is handed out is checked here: the path, that
    it is a file of the tree, encryption, method, the local header, that the data lies before
    the central directory, the range. ``owns_reader`` closes the reader with the stream (for a
    caller, such as a streamed HTTP response, that outlives the code that opened the archive).
    """
    node = contents.find(path, FILE)
    entry = node.central
    assert entry is not None  # files are always recorded
    end = entry.usize if stop is None else stop
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start <= end:
        raise InvalidInput(f"Invalid range {start}-{end} of {node.path!r}.")
    if end > entry.usize:
        raise InvalidInput(f"Range {start}-{end} ends past {node.path!r} ({entry.usize} bytes).")
    reader = contents.reader
    if entry.flags & 0x1:
        raise InvalidArchive(f"Entry {entry.name!r} is encrypted; not supported.")
    if entry.method not in (STORED, DEFLATED):
        raise InvalidArchive(
            f"Entry {entry.name!r} uses unsupported compression method {entry.method}."
        )
    data_start = reader.data_offset(entry)
    if data_start + entry.csize > reader.directory.cd_offset:
        raise InvalidArchive(f"Entry {entry.name!r} runs into the central directory.")
    if entry.method == STORED and entry.csize != entry.usize:
        raise DamagedArchive(f"Entry {entry.name!r} is stored but its sizes differ.")
    return MemberStream(reader, entry, data_start, start, end, owns_reader)


class MemberStream(io.RawIOBase):
    """A file's bytes ``start`` to ``stop``, read from the archive piece by piece (see module)."""

    def __init__(
        self,
        reader: ArchiveReader,
        entry: CentralEntry,
        data_start: int,
        start: int,
        stop: int,
        owns_reader: bool,
    ) -> None:
        super().__init__()
        self.reader, self.entry = reader, entry
        self.start, self.stop = start, stop
        self._data_start = data_start
        self._owns_reader = owns_reader
        self._limits = reader.limits
        deflated = entry.method == DEFLATED
        self._inflater = isal_zlib.decompressobj(-15) if deflated else None
        self._tail = b""  # compressed bytes read but not yet inflated
        self._read = 0  # compressed bytes read from the archive
        # Stored data is read from the range's start; deflated data from the entry's start.
        self._produced = 0 if deflated else start  # entry bytes produced so far
        self._crc = 0
        self._pending = b""  # produced bytes of the range not yet handed out, from _pos
        self._pos = 0
        self._finished = False
        # Whether the CRC is checked once the range is read: only when every byte from the
        # entry's first to its last passes through us.
        self.checks_crc = stop == entry.usize and (deflated or start == 0)

    @property
    def size(self) -> int:
        """Return how many bytes the stream yields."""
        return self.stop - self.start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill ``buffer`` with the next bytes of the range; 0 at its end."""
        if self.closed:
            raise ValueError("I/O operation on closed stream.")
        out = memoryview(buffer).cast("B")
        while self._pos >= len(self._pending) and self._produced < self.stop:
            self._pending, self._pos = self._next_piece(len(out)), 0
        n = min(len(out), len(self._pending) - self._pos)
        if n > 0:
            out[:n] = memoryview(self._pending)[self._pos : self._pos + n]
            self._pos += n
        if self._pos >= len(self._pending) and self._produced >= self.stop:
            self._finish()
        return n

    def chunks(self, size: int = READ_BLOCK) -> Iterator[bytes]:
        """Yield the range in pieces of at most ``size`` bytes (for a streamed response)."""
        while True:
            piece = self.read(size)
            if not piece:
                return
            yield piece

    def _next_piece(self, want: int) -> bytes:
        """Produce the next bytes of the entry; return the part that lies inside the range."""
        begin = self._produced
        if self._inflater is None:
            n = min(max(want, 1), READ_BLOCK, self.stop - begin)
            piece = os.pread(self.reader.fd, n, self._data_start + begin)
            if len(piece) != n:
                raise InvalidArchive(f"Archive is truncated inside {self.entry.name!r}.")
        else:
            piece = self._inflate(READ_BLOCK)
            if not piece:
                raise DamagedArchive(
                    f"Entry {self.entry.name!r} has {begin} bytes, "
                    f"its header says {self.entry.usize}."
                )
        self._produced = begin + len(piece)
        if self.checks_crc:
            self._crc = isal_zlib.crc32(piece, self._crc)
        lo = max(self.start - begin, 0)
        hi = min(self.stop - begin, len(piece))
        return piece[lo:hi] if lo < hi else b""

    def _inflate(self, room: int) -> bytes:
        """Inflate up to ``room`` more bytes (b"" at the stream's end), within the bounds.

        Never more bytes than the header declares, never beyond the ratio limit: a bomb is
        stopped with at most one bounded piece in memory.
        """
        inflater, entry = self._inflater, self.entry
        assert inflater is not None
        while not inflater.eof:
            if not self._tail:
                if self._read >= entry.csize:
                    raise DamagedArchive(
                        f"Entry {entry.name!r} ends before its compressed stream does."
                    )
                n = min(READ_BLOCK, entry.csize - self._read)
                self._tail = os.pread(self.reader.fd, n, self._data_start + self._read)
                if len(self._tail) != n:
                    raise InvalidArchive(f"Archive is truncated inside {entry.name!r}.")
                self._read += n
            limit = max(1, min(room, entry.usize - self._produced + 1))
            try:
                piece = inflater.decompress(self._tail, limit)
            except (isal_zlib.error, ValueError) as exc:  # type: ignore[misc]
                raise DamagedArchive(
                    f"Entry {entry.name!r} is not valid deflate data: {exc}"
                ) from exc
            self._tail = b"" if inflater.eof else inflater.unconsumed_tail
            if piece:
                self._check_bounds(self._produced + len(piece))
                return bytes(piece)
        return b""

    def _check_bounds(self, produced: int) -> None:
        entry, limit = self.entry, self._limits
        if produced > entry.usize:
            raise DamagedArchive(
                f"Entry {entry.name!r} holds more data than its declared "
                f"{entry.usize} bytes (possible zip bomb)."
            )
        used = self._read - len(self._tail)
        if produced > limit.ratio_min_bytes and produced > used * limit.max_ratio:
            raise LimitExceeded(
                f"Entry {entry.name!r} inflates more than {limit.max_ratio:.0f}:1 "
                "(possible zip bomb); raise RUNARCHIVE_MAX_RATIO if it is genuine."
            )

    def _finish(self) -> None:
        """At the end of a range that reaches the entry's end: the stream ends, the CRC holds."""
        if self._finished or not self.checks_crc:
            return
        self._finished = True
        if self._inflater is not None:
            # The last byte is out: the rest of the stream must end it and yield nothing more
            # (``_inflate`` raises on a byte past the declared size).
            self._inflate(1)
        if self._crc != self.entry.crc:
            raise DamagedArchive(f"CRC mismatch in {self.entry.name!r}: the archive is damaged.")

    def close(self) -> None:
        if not self.closed and self._owns_reader:
            self.reader.close()
        super().close()


@dataclass(frozen=True, slots=True)
class Extracted:
    """What ``extract_files`` wrote: the files (paths relative to the destination), bytes."""

    files: tuple[str, ...]
    bytes: int


def extract_files(
    contents: Contents,
    paths: list[str],
    dest: os.PathLike[str] | str,
    *,
    run_path: os.PathLike[str] | str | None = None,
    into_run: bool = False,
    overwrite: bool = False,
) -> Extracted:
    """Write the files at ``paths`` (a folder: every file below it) into folder ``dest``.

    Each lands at its archive path below ``dest``, reached by handle from ``dest`` with no link
    in any component (a link planted in ``dest`` is refused, never followed), written to a
    temporary name, CRC-checked, then given its mode (no setuid, setgid or sticky bit) and mtime
    and linked to its name: an existing file is refused (``overwrite=False``) or replaced
    whole, never half-written. ``dest`` inside ``run_path`` (the run the archive belongs to) is
    refused unless ``into_run``: a partial restore goes through restore, not here.
    """
    target = Path(dest)
    if run_path is not None and not into_run:
        run_real, dest_real = os.path.realpath(run_path), os.path.realpath(target)
        if dest_real == run_real or dest_real.startswith(run_real.rstrip("/") + "/"):
            raise InvalidInput(
                f"{target} is inside the run; extract into the run only when asked to "
                "(restore replaces the run's files)."
            )
    wanted: list[str] = []
    for path in paths:
        node = contents.find(path)
        if node.type == DIR:
            wanted.extend(p for p in contents.under(node.path) if contents.nodes[p].type == FILE)
        elif node.type == FILE:
            wanted.append(node.path)
        else:
            raise EntryNotFound(f"{node.path!r} is a {node.type}; only files are extracted.")
    try:
        root = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(f"Cannot open {target} as a folder: {exc.strerror}.") from None
    written: list[str] = []
    total = 0
    try:
        for path in dict.fromkeys(wanted):  # once each, in order
            total += _extract_one(contents, contents.nodes[path], root, overwrite)
            written.append(path)
    finally:
        os.close(root)
    return Extracted(tuple(written), total)


def _extract_one(contents: Contents, node: Node, root: int, overwrite: bool) -> int:
    parent, _, leaf = node.path.rpartition("/")
    folder = _make_folders(root, parent)
    tmp = f".{leaf[:200]}.runarchive-{os.urandom(4).hex()}.part"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=folder)  # fmt: skip
        try:
            with open_member(contents, node.path) as stream:
                for piece in stream.chunks():
                    os.write(fd, piece)
            os.fchmod(fd, (node.mode if node.mode is not None else 0o644) & 0o777)
            if node.mtime_ns is not None:
                os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, leaf, src_dir_fd=folder, dst_dir_fd=folder)
        else:
            try:
                os.link(tmp, leaf, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
            except FileExistsError:
                raise InvalidInput(
                    f"{node.path} exists in the destination; nothing of it was changed."
                ) from None
            os.unlink(tmp, dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder)
        raise
    finally:
        if folder != root:
            os.close(folder)
    return node.size


def _make_folders(root: int, rel: str) -> int:
    """Open folder ``rel`` below ``root``, making what is missing; a link on the way refuses."""
    if not rel:
        return root
    current = root
    try:
        for part in rel.split("/"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=current)
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=current)  # fmt: skip
            except OSError as exc:
                raise InvalidInput(
                    f"Cannot extract below {rel!r}: {part!r} in the destination is not a "
                    f"folder ({exc.strerror}); links there are never followed."
                ) from None
            if current != root:
                os.close(current)
            current = nxt
    except BaseException:
        if current != root:
            os.close(current)
        raise
    return current
