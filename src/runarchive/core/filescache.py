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
* laid out as our writer lays it out (the manifest's entries in its order, then the manifest),
  no name twice, and no two entries whose spans (local header, name, compressed data) could
  overlap: otherwise nothing is reused;
* per reused file (``ReusedEntry.copy``, in a pool thread): the central entry is a plain file
  entry of our writer (stored or deflated, no encryption, no data descriptor) with the
  manifest's size; its local header has the signature, the method and exactly the name; its
  data ends before the next entry's header (or the central directory); the bytes read are
  inflated (isal), must end the deflate stream exactly, give exactly the size, and match the
  central CRC, and their sha256 must be the manifest's (which binds the manifest's facts to
  these bytes: entries renamed or swapped in the zip fail here).

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

import hashlib
import os
import re
import stat
import struct
from dataclasses import dataclass

from isal import isal_zlib

from .catalog import scan_archives
from .errors import InvalidArchive
from .limits import Limits
from .manifest import DIR, FILE, MANIFEST_NAME, ManifestEntry
from .reader import ArchiveReader
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
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Flags our writer never sets: encryption, a data descriptor, or anything but UTF-8 names.
_OUR_FLAGS = FLAG_UTF8


def cacheable(entry: TreeEntry, started_ns: int) -> bool:
    """Tell whether the manifest may record ``entry``'s ctime and inode for the next archive."""
    return entry.source is None and entry.ino != 0 and entry.ctime_ns < started_ns - RACY_NS


@dataclass(frozen=True, slots=True)
class ReusedEntry:
    """One file of the old archive that a new archive may copy, with its data's upper bound."""

    central: CentralEntry
    sha256: str
    limit: int  # the next entry's header offset, or the central directory's

    def copy(self, fd: int) -> bytes | None:
        """Return the entry's compressed bytes read from ``fd``, proven; None on any mismatch."""
        c = self.central
        name = c.raw_name
        try:
            head = os.pread(fd, _LOCAL.size + len(name), c.header_offset)
            if len(head) != _LOCAL.size + len(name):
                return None
            sig, _, flags, method, _, _, _, _, _, nlen, xlen = _LOCAL.unpack_from(head)
            if sig != LOCAL_SIG or method != c.method or flags & ~_OUR_FLAGS or nlen != len(name):
                return None
            if head[_LOCAL.size :] != name:
                return None
            start = c.header_offset + _LOCAL.size + nlen + xlen
            if start + c.csize > self.limit:
                return None
            data = os.pread(fd, c.csize, start)
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
        if hashlib.sha256(raw).hexdigest() != self.sha256:
            return None
        return data


class FilesCache:
    """The files of the newest archive that are candidates for reuse, by path.

    Owns the archive's descriptor (``close``); ``match`` and ``ReusedEntry.copy`` are safe
    from any thread (reads only, by ``pread``).
    """

    def __init__(self, fd: int, name: str, entries: dict[str, tuple[ManifestEntry, ReusedEntry]]):
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
        m, reused = found
        if (m.size, m.mtime_ns, m.ctime_ns, m.ino) != (
            entry.size, entry.mtime_ns, entry.ctime_ns, entry.ino
        ):  # fmt: skip
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
        # The reader parses the directory and owns ``fd`` until it is handed to the cache.
        reader = ArchiveReader(os.dup(fd), name, limits)
        with reader:
            manifest = reader.manifest()
            entries = reader.entries
        if manifest is None or manifest.run_id != runid:
            raise InvalidArchive("not one of this run's archives")
        candidates = _candidates(entries, manifest.entries, reader.directory.cd_offset)
    except (InvalidArchive, OSError, MemoryError):
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
    central: list[CentralEntry], manifest: list[ManifestEntry], cd_offset: int
) -> dict[str, tuple[ManifestEntry, ReusedEntry]]:
    """Pair the manifest's files that carry their facts with their central entries.

    Raises InvalidArchive (no cache at all) for repeated names or possibly overlapping
    entries; leaves out, one by one, files whose entry is not a plain entry of our writer.
    """
    # Our writer's layout: the manifest's entries in its order, then the manifest itself.
    if len(central) != len(manifest) + 1 or central[-1].name != MANIFEST_NAME:
        raise InvalidArchive("not laid out as our writer lays out an archive")
    for written, m in zip(central, manifest, strict=False):
        if written.name != (m.path + "/" if m.type == DIR else m.path):
            raise InvalidArchive("central directory and manifest disagree")
    by_name: dict[str, CentralEntry] = {}
    spans: list[tuple[int, int]] = []
    for entry in central:
        if entry.name in by_name:
            raise InvalidArchive(f"{entry.name!r} is in the archive twice")
        by_name[entry.name] = entry
        spans.append(
            (
                entry.header_offset,
                entry.header_offset + _LOCAL.size + len(entry.raw_name) + entry.csize,
            )
        )
    spans.sort()
    nexts: dict[int, int] = {}
    for (start, least_end), following in zip(spans, [*spans[1:], (cd_offset, cd_offset)],
                                             strict=True):  # fmt: skip
        if least_end > following[0]:
            raise InvalidArchive("entries overlap")
        nexts[start] = following[0]
    paths: set[str] = set()
    out: dict[str, tuple[ManifestEntry, ReusedEntry]] = {}
    for m in manifest:
        if m.path in paths:
            raise InvalidArchive(f"{m.path!r} is in the manifest twice")
        paths.add(m.path)
        if m.type != FILE or m.ctime_ns is None or m.ino is None or m.followed_link is not None:
            continue
        c = by_name.get(m.path)
        if c is None or not _plain_file(c, m):
            continue
        assert m.sha256 is not None  # _plain_file checked it
        out[m.path] = (m, ReusedEntry(c, m.sha256, nexts[c.header_offset]))
    return out


def _plain_file(c: CentralEntry, m: ManifestEntry) -> bool:
    """Tell whether ``c`` is a file entry as our writer makes them, of ``m``'s size."""
    return not (
        c.name == MANIFEST_NAME
        or c.kind != "file"
        or c.method not in (STORED, DEFLATED)
        or c.flags & ~_OUR_FLAGS
        or c.usize != m.size
        or (c.method == STORED and c.csize != c.usize)
        or m.sha256 is None
        or _SHA256_RE.fullmatch(m.sha256) is None
    )
