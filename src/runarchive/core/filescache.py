"""The files cache: a new archive copies unchanged files' compressed bytes from the newest one.

Why: a run archived daily mostly holds the files it held yesterday, and deflating them again
is most of an archive's cost (borg and restic skip unchanged files the same way). A file is
taken as unchanged when its size, mtime_ns, ctime_ns and inode (what the scan's lstat saw) all
equal what the run's newest archive recorded for that path in its manifest. The ctime cannot
be set by a writer, so an edit that restores size and mtime is still seen.

Where the facts come from: the archive itself (its manifest), never a state file in the run
that could point elsewhere. The archive is hostile input all the same, so it is used only
after the checks an upload gets, and each file's bytes are proven again when copied:

* the newest archive by the catalog's order (``catalog.scan_archives``), opened by handle
  beneath ``archives/`` with ``O_NOFOLLOW``, a regular file; its end records and central
  directory parsed with every bound of ``zipformat.read_directory``; its manifest present,
  within its size limit, its CRC holding, parsed strictly, and naming this run;
* laid out as our writer lays it out: the manifest's entries in its order, each named as its
  central entry, at strictly increasing offsets that leave room for each one's header, name
  and data, no path twice, then the manifest: otherwise nothing is reused;
* a file is offered only when its central entry is a plain file entry of our writer (stored
  or deflated, no encryption, no data descriptor) with the manifest's size and the
  manifest's ``crc32`` (which binds the manifest's facts to the bytes the zip holds for that
  name: entries renamed or swapped in the zip are not offered), and a sha256 to carry over;
* per reused file (``ReusedEntry.copy``, in a pool thread): its local header has the
  signature, the method and exactly the name; its data ends before the next entry's header
  (or the central directory); the bytes read are inflated (isal), must end the deflate
  stream exactly, give exactly the size and match the CRC. The sha256 is the manifest's,
  whose own CRC held, so a damaged byte anywhere is caught without hashing again.

Any failure of a file's copy returns None and the file is read and compressed as if there
were no cache; any failure of the archive as a whole means no cache. So a damaged or planted
archive never reaches a new one's bytes: the new archive is standalone (its entries are full
copies), and equals the run. What no check can catch is a forger who rewrites the archive,
its CRCs and its manifest consistently with the live file's current facts: whoever can do
that can already rewrite the file itself, or have that archive restored.

Racing writes: a file whose ctime lies within ``RACY_NS`` of the archive's start is recorded
without ctime_ns and inode (``cacheable``), so an edit landing in the same clock tick as the
scan that read it can never look unchanged to the next archive (git's "racy clean" rule).
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass
from typing import Any, cast

from isal import isal_zlib

from .catalog import scan_archives
from .errors import InvalidArchive
from .limits import Limits
from .manifest import DIR, FILE, FORMAT, MANIFEST_NAME
from .reader import MAX_MANIFEST_BYTES, ArchiveReader
from .rundir import Folder
from .tree import TreeEntry
from .zipformat import DEFLATED, FLAG_UTF8, LOCAL_SIG, STORED, CentralEntry

# Files bigger than this are read again: a reused entry is held whole in memory while it is
# proven, and one task's worth of bytes must stay small next to the pipeline's other chunks.
REUSE_MAX = 8 << 20
# A file changed this close to the archive's start may have been changed again within the
# same clock tick after it was read (coarse timestamps): its facts are not recorded.
RACY_NS = 1_000_000_000
_LOCAL = struct.Struct("<IHHHHHIIIHH")
# The UT and NTFS time extras our writer puts in every local header (zipformat._time_extras).
_OUR_EXTRA = 45
_HEX = frozenset("0123456789abcdef")
# Flags our writer never sets: encryption, a data descriptor, or anything but UTF-8 names.
_OUR_FLAGS = FLAG_UTF8


def cacheable(entry: TreeEntry, started_ns: int) -> bool:
    """Tell whether the manifest may record ``entry``'s ctime and inode for the next archive."""
    return entry.source is None and entry.ino != 0 and entry.ctime_ns < started_ns - RACY_NS


# Not frozen: one is made per file of a 30,000-file run, and a frozen dataclass's __init__
# costs twice as much. Nothing assigns to one after it is made.
@dataclass(slots=True)
class ReusedEntry:
    """One file of the old archive that a new archive may copy, with its data's upper bound."""

    central: CentralEntry
    sha256: str
    limit: int  # the next entry's header offset, or the central directory's

    def copy(self, fd: int) -> bytes | None:
        """Return the entry's compressed bytes read from ``fd``, proven; None on any mismatch."""
        c = self.central
        name = c.raw_name
        head_size = _LOCAL.size + len(name)
        try:
            # One read for the header, our writer's time extras and the data (the common
            # case); a longer extra costs a second read of the data.
            block = os.pread(fd, head_size + _OUR_EXTRA + c.csize, c.header_offset)
            if len(block) < head_size:
                return None
            sig, _, flags, method, _, _, _, _, _, nlen, xlen = _LOCAL.unpack_from(block)
            if sig != LOCAL_SIG or method != c.method or flags & ~_OUR_FLAGS or nlen != len(name):
                return None
            if block[_LOCAL.size : head_size] != name:
                return None
            start = c.header_offset + head_size + xlen
            if start + c.csize > self.limit:
                return None
            ours = xlen == _OUR_EXTRA
            data = block[head_size + xlen :] if ours else os.pread(fd, c.csize, start)
        except OSError:
            return None
        if len(data) != c.csize:
            return None
        if method == STORED:
            raw = data
        else:
            inflater = isal_zlib.decompressobj(-15)
            try:
                raw = inflater.decompress(data, c.usize + 1)
            except (isal_zlib.error, ValueError):  # type: ignore[misc]
                return None
            if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
                return None
        if len(raw) != c.usize or isal_zlib.crc32(raw) != c.crc:
            return None
        return data


# What the old manifest recorded of one file, compared with the scan's lstat as it is.
_Facts = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


class FilesCache:
    """The files of the newest archive that are candidates for reuse, by path.

    Owns the archive's descriptor (``close``); ``match`` and ``ReusedEntry.copy`` are safe
    from any thread (reads only, by ``pread``).
    """

    def __init__(self, fd: int, name: str, entries: dict[str, tuple[_Facts, ReusedEntry]]):
        self.fd, self.name, self._entries = fd, name, entries

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, entry: TreeEntry) -> ReusedEntry | None:
        """Return what may be copied for ``entry``, if the old archive recorded it unchanged."""
        if entry.type != FILE or entry.source is not None or entry.size > REUSE_MAX:
            return None
        found = self._entries.get(entry.path)
        if found is None:
            return None
        facts, reused = found
        if facts != (entry.size, entry.mtime_ns, entry.ctime_ns, entry.ino):
            return None
        return reused

    def close(self) -> None:
        """Release the old archive's descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_files_cache(archives: Folder, runid: str, limits: Limits) -> FilesCache | None:
    """Open the run's newest archive as a files cache; None when there is none to trust.

    Nothing here raises for a bad archive: a cache that cannot be proven is no cache.
    """
    found = scan_archives(archives)
    if not found:
        return None
    name, listed = found[0]
    if not stat.S_ISREG(listed.st_mode):
        return None
    try:
        fd = archives.open_file(name)
    except OSError:
        return None
    try:
        if not os.path.samestat(os.fstat(fd), listed):
            raise InvalidArchive("changed while opened")
        # The reader parses the directory and owns its own descriptor (a duplicate).
        with ArchiveReader(os.dup(fd), name, limits) as reader:
            central = reader.entries
            cd_offset = reader.directory.cd_offset
            if not central or central[-1].name != MANIFEST_NAME:
                raise InvalidArchive("no manifest last")
            if central[-1].usize > MAX_MANIFEST_BYTES:
                raise InvalidArchive("manifest too large")
            doc = json.loads(b"".join(reader.stream(central[-1])))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("run_id") != runid:
            raise InvalidArchive("not one of this run's archives")
        entries = doc.get("entries")
        if not isinstance(entries, list):
            raise InvalidArchive("manifest without entries")
        candidates = _candidates(central, entries, cd_offset)
    except (InvalidArchive, OSError, MemoryError, ValueError, RecursionError):
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    if not candidates:
        os.close(fd)
        return None
    return FilesCache(fd, name, candidates)


def _candidates(
    central: list[CentralEntry], manifest: list[Any], cd_offset: int
) -> dict[str, tuple[_Facts, ReusedEntry]]:
    """Pair the manifest's files that carry their facts with their central entries, in one
    pass over both (the manifest as JSON decoded it: every field is checked here).

    Raises InvalidArchive (no cache at all) unless the archive is laid out as our writer
    lays it out: the manifest's entries in its order, each named as its central entry, at
    strictly increasing offsets that leave room for each entry's header, name and data, no
    path twice, then the manifest itself. Leaves out, one by one, files whose entry is not a
    plain file entry of our writer or whose facts are not recorded.
    """
    if len(central) != len(manifest) + 1:
        raise InvalidArchive("not laid out as our writer lays out an archive")
    local_size = _LOCAL.size
    seen: set[str] = set()
    out: dict[str, tuple[_Facts, ReusedEntry]] = {}
    for i, m in enumerate(manifest):
        if not isinstance(m, dict):
            raise InvalidArchive("manifest entry is not an object")
        path, kind = m.get("path"), m.get("type")
        if type(path) is not str or path in seen or path == MANIFEST_NAME:
            raise InvalidArchive("manifest path repeated or not a string")
        seen.add(path)
        c, following = central[i], central[i + 1].header_offset
        if c.name != (path + "/" if kind == DIR else path):
            raise InvalidArchive("central directory and manifest disagree")
        if c.header_offset + local_size + len(c.raw_name) + c.csize > following:
            raise InvalidArchive("entries overlap or are out of order")
        if kind != FILE or m.get("followed_link") is not None:
            continue
        facts = (m.get("size"), m.get("mtime_ns"), m.get("ctime_ns"), m.get("ino"))
        sha, crc = m.get("sha256"), m.get("crc32")
        # Exact ints (not bools): anything else could never equal an lstat's facts anyway.
        # The sha256 is carried into the new manifest: it must be one (lowercase hex).
        if any(type(x) is not int for x in facts) or type(sha) is not str or len(sha) != 64:
            continue
        if not _HEX.issuperset(sha):
            continue
        if (
            not stat.S_ISREG(c.mode)
            or c.method not in (STORED, DEFLATED)
            or c.flags & ~_OUR_FLAGS
            or c.usize != facts[0]
            or c.crc != crc  # the manifest's entry and the zip's hold the same bytes
            or (c.method == STORED and c.csize != c.usize)
        ):
            continue
        out[path] = (cast(_Facts, facts), ReusedEntry(c, sha, following))
    last = central[-1]
    if last.header_offset + local_size + len(last.raw_name) + last.csize > cd_offset:
        raise InvalidArchive("the manifest overlaps the central directory")
    return out
