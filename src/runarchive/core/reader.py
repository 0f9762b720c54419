"""Reading archives: open, stream entries with every check, verify against the manifest.

Streaming counts the bytes it really inflates: an entry that yields more than its declared
size, or inflates beyond the ratio limit, is stopped at once, so header lies cannot make us do
more work than the limits allow.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .errors import DamagedArchive, InvalidArchive, LimitExceeded, NotFound, UnsafeArchive
from .limits import Limits
from .manifest import FILE, MANIFEST_NAME, SYMLINK, Manifest, ManifestEntry, parse_manifest
from .names import ArchiveRef, archive_ref
from .progress import Phase, ProgressCallback, ProgressEvent, ignore_progress
from .rundir import RunDir, open_run
from .zipformat import (
    DEFLATED,
    STORED,
    CentralEntry,
    Directory,
    data_offset,
    data_offsets,
    descriptor_size,
    read_directory,
)

if TYPE_CHECKING:
    import hashlib

# The deflate library and hashlib are imported where entries are read (``stream``,
# ``verify_archive``): ``list`` parses central directories only and loads neither.

READ_BLOCK = 1 << 20
MAX_MANIFEST_BYTES = 1 << 30


def open_archive_fd(run: RunDir, name: str | ArchiveRef) -> tuple[int, os.stat_result]:
    """Open archive ``name`` of the run by handle; return the descriptor and its fstat.

    The name is validated, ``archives/`` must be the run's real folder, the archive is opened
    with ``O_NOFOLLOW`` and the *opened* file must be a regular file: what was checked is
    what the caller reads or sends.
    """
    name = archive_ref(name).name
    archives = run.archives()
    if archives is None:
        raise NotFound(f"Archive not found: {name}")
    with archives:
        try:
            fd = archives.open_file(name)
        except FileNotFoundError:
            raise NotFound(f"Archive not found: {name}") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                raise NotFound(f"Archive not found: {name} (not a regular file)") from None
            raise InvalidArchive(f"Cannot open archive {name}: {exc.strerror}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotFound(f"Archive not found: {name} (not a regular file)")
    return fd, st


def open_archive(
    run: RunDir, name: str | ArchiveRef, limits: Limits | None = None
) -> ArchiveReader:
    """Open archive ``name`` of the run for reading (see ``open_archive_fd``)."""
    fd, _ = open_archive_fd(run, name)
    return ArchiveReader(fd, str(name), limits)


class ArchiveReader:
    """An open archive: its central directory, manifest, and entry streams.

    It owns ``fd`` (closed with the reader) and never reopens the archive by name.
    """

    def __init__(
        self,
        fd: int,
        name: str,
        limits: Limits | None = None,
        parsed: tuple[Directory, Manifest | None] | None = None,
    ) -> None:
        """Parse the central directory of ``fd``, or take ``parsed``: the directory and
        manifest read before from this very file (the caller proves it by its fstat identity:
        ``inside`` caches them for archives, which never change once published).
        """
        self.fd = fd
        self.name = name
        self.limits = limits or Limits.from_env()
        # Told the size of every block read from the file for entry data (the scrub's rate
        # bound); None reads at full speed.
        self.on_read: Callable[[int], None] | None = None
        self._manifest: Manifest | None = None
        self._manifest_read = False
        self._data_offsets: dict[int, int] = {}
        if parsed is not None:
            self.directory: Directory = parsed[0]
            self._manifest, self._manifest_read = parsed[1], True
            return
        try:
            size = os.fstat(fd).st_size
            self.directory = read_directory(fd, size, self.limits.max_entries)
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def entries(self) -> list[CentralEntry]:
        return self.directory.entries

    def data_offset(self, entry: CentralEntry) -> int:
        """Return where an entry's data starts; the local header is read once per entry."""
        found = self._data_offsets.get(entry.header_offset)
        if found is None:
            found = self._data_offsets[entry.header_offset] = data_offset(self.fd, entry)
        return found

    def check_layout(self) -> None:
        """Refuse an archive whose entries do not tile the file from its first byte to the
        central directory: prepended bytes, gaps or overlaps mean other tools may see other
        content than we do, so nothing is restored from it.
        """
        firsts: dict[int, CentralEntry] = {}  # entries sharing a header share its offset
        for e in self.entries:
            if e.header_offset not in self._data_offsets:
                firsts.setdefault(e.header_offset, e)
        heads = list(firsts.values())
        for e, found in zip(heads, data_offsets(self.fd, heads), strict=True):
            self._data_offsets[e.header_offset] = found
        spans = sorted(
            ((e.header_offset, self.data_offset(e) + e.csize, e) for e in self.entries),
            key=lambda span: span[0],
        )
        expected, previous = 0, None
        for start, end, entry in spans:
            if start < expected:
                raise UnsafeArchive(f"Entry {previous!r} overlaps another entry.")
            if start > expected:
                where = "before the first entry" if previous is None else f"after {previous!r}"
                raise UnsafeArchive(
                    f"Archive structure is ambiguous: {start - expected} unexplained bytes "
                    f"{where} (prepended data or a hidden entry)."
                )
            expected, previous = end + descriptor_size(self.fd, entry, end), entry.name
        if expected > self.directory.cd_offset:
            raise UnsafeArchive(f"Entry {previous!r} overlaps the central directory.")
        if expected < self.directory.cd_offset:
            raise UnsafeArchive(
                "Archive structure is ambiguous: unexplained bytes between the last entry and "
                "the central directory."
            )

    def content_entries(self) -> list[CentralEntry]:
        """Return every entry except the manifest."""
        return [e for e in self.entries if e.name != MANIFEST_NAME]

    @property
    def comment(self) -> str:
        return self.directory.comment.decode("utf-8", errors="replace")

    def manifest(self) -> Manifest | None:
        """Return the parsed manifest, or None for archives made by other tools."""
        if not self._manifest_read:
            self._manifest_read = True
            found = [e for e in self.entries if e.name == MANIFEST_NAME]
            if len(found) > 1:
                raise InvalidArchive("Archive holds more than one manifest.")
            if found:
                entry = found[0]
                if entry.usize > MAX_MANIFEST_BYTES:
                    raise LimitExceeded("Manifest is larger than 1 GiB.")
                data = b"".join(self.stream(entry))
                self._manifest = parse_manifest(data)
        return self._manifest

    def read_span(self, start: int, size: int) -> bytes:
        """Read ``size`` bytes of entry data at ``start`` in one call (fewer at the end)."""
        block = os.pread(self.fd, size, start)
        if self.on_read is not None:
            self.on_read(len(block))
        return block

    def stream(
        self, entry: CentralEntry, data: bytes | memoryview | None = None
    ) -> Iterator[bytes]:
        """Yield an entry's bytes, checking size, ratio and CRC; raise on any mismatch.

        ``data``: the entry's compressed bytes, already read by the caller (``read_span`` of
        several small entries at once); checked exactly as if read here.
        """
        from isal import isal_zlib

        if entry.flags & 0x1:
            raise InvalidArchive(f"Entry {entry.name!r} is encrypted; not supported.")
        if entry.method not in (STORED, DEFLATED):
            raise InvalidArchive(
                f"Entry {entry.name!r} uses unsupported compression method {entry.method}."
            )
        start = self.data_offset(entry)
        if start + entry.csize > self.directory.cd_offset:
            raise InvalidArchive(f"Entry {entry.name!r} runs into the central directory.")
        if data is not None and len(data) != entry.csize:
            raise ValueError("data is not the entry's compressed bytes")
        crc = 0
        produced = 0
        for piece, used in self._pieces(entry, start, data):
            produced += len(piece)
            if produced > entry.usize:
                raise DamagedArchive(
                    f"Entry {entry.name!r} holds more data than its declared "
                    f"{entry.usize} bytes (possible zip bomb)."
                )
            limit = self.limits
            if produced > limit.ratio_min_bytes and produced > used * limit.max_ratio:
                raise LimitExceeded(
                    f"Entry {entry.name!r} inflates more than {limit.max_ratio:.0f}:1 "
                    "(possible zip bomb); raise RUNARCHIVE_MAX_RATIO if it is genuine."
                )
            crc = isal_zlib.crc32(piece, crc)
            yield piece
        if produced != entry.usize:
            raise DamagedArchive(
                f"Entry {entry.name!r} has {produced} bytes, its header says {entry.usize}."
            )
        if crc != entry.crc:
            raise DamagedArchive(f"CRC mismatch in {entry.name!r}: the archive is damaged.")

    def _pieces(
        self, entry: CentralEntry, start: int, preread: bytes | memoryview | None
    ) -> Iterator[tuple[bytes, int]]:
        """Yield (output piece, compressed bytes used so far), one bounded piece at a time.

        Every inflate call is capped at READ_BLOCK bytes and checked by the caller before the
        next one, so a bomb is stopped with at most one such piece in memory.
        """
        from isal import isal_zlib

        inflater = isal_zlib.decompressobj(-15) if entry.method == DEFLATED else None
        read = 0
        while read < entry.csize:
            size = min(READ_BLOCK, entry.csize - read)
            if preread is not None:
                block = bytes(preread[read : read + size])
            else:
                block = os.pread(self.fd, size, start + read)
                if self.on_read is not None:
                    self.on_read(len(block))
            if not block:
                raise InvalidArchive(f"Archive is truncated inside {entry.name!r}.")
            read += len(block)
            if inflater is None:
                yield block, read
                continue
            data = block
            while data and not inflater.eof:
                room = max(1, min(READ_BLOCK, entry.usize + 1))
                try:
                    piece = inflater.decompress(data, room)
                except (isal_zlib.error, ValueError) as exc:  # type: ignore[misc]
                    raise DamagedArchive(
                        f"Entry {entry.name!r} is not valid deflate data: {exc}"
                    ) from exc
                data = inflater.unconsumed_tail
                if piece:
                    yield piece, read - len(data)
            if inflater.eof:
                break
        if inflater is not None and not inflater.eof:
            raise DamagedArchive(f"Entry {entry.name!r} ends before its compressed stream does.")


@dataclass(slots=True)
class VerifyReport:
    """The outcome of a full check: ok, and every problem found."""

    ok: bool
    entries: int
    has_manifest: bool
    problems: list[str] = field(default_factory=list)


def verify_archive(
    run_dir: Path, name: str, *, progress: ProgressCallback | None = None
) -> VerifyReport:
    """Read every entry, checking CRCs and the manifest's sizes and sha256 sums."""
    with open_run(run_dir) as run, open_archive(run, name) as reader:
        return verify_reader(reader, progress=progress)


def verify_reader(
    reader: ArchiveReader, *, progress: ProgressCallback | None = None
) -> VerifyReport:
    """Check every entry of an open archive (layout, CRCs, the manifest's sizes and sha256).

    Takes the reader, not a name, so a caller that must know *which file* it checked (the
    scrub binds its result to the opened file's identity) checks the descriptor it opened.
    """
    import hashlib  # here: a list or a --help never loads it

    report = progress or ignore_progress
    problems: list[str] = []
    try:
        reader.check_layout()
    except InvalidArchive as exc:
        problems.append(str(exc))
    try:
        manifest = reader.manifest()
    except InvalidArchive as exc:
        manifest = None
        problems.append(str(exc))
    expected = manifest.by_path() if manifest else {}
    content = reader.content_entries()
    total = sum(e.usize for e in content)
    done_bytes = 0
    seen: set[str] = set()
    for i, entry in enumerate(content, 1):
        path_key = entry.name.rstrip("/")
        seen.add(path_key)
        sha = hashlib.sha256()
        try:
            for piece in reader.stream(entry):
                sha.update(piece)
        except InvalidArchive as exc:
            problems.append(str(exc))
        else:
            problems.extend(_against_manifest(entry, path_key, sha, expected, manifest))
        done_bytes += entry.usize
        report(ProgressEvent("verify", Phase.VERIFY, i, len(content), done_bytes, total, path_key))
    if manifest is not None:
        problems.extend(
            f"{p!r} is in the manifest but not in the archive."
            for p in sorted(set(expected) - seen)
        )
    elif not problems:
        problems.append("Archive has no runarchive manifest: CRCs checked, sha256 not.")
        return VerifyReport(True, len(content), False, problems)
    return VerifyReport(not problems, len(content), manifest is not None, problems)


def _against_manifest(
    entry: CentralEntry,
    path: str,
    sha: hashlib._Hash,
    expected: dict[str, ManifestEntry],
    manifest: Manifest | None,
) -> list[str]:
    if manifest is None:
        return []
    m = expected.get(path)
    if m is None:
        return [f"{path!r} is in the archive but not in the manifest."]
    if m.type != entry.kind:
        return [f"{path!r} is a {entry.kind} in the archive but a {m.type} in the manifest."]
    if m.type == FILE and m.sha256 != sha.hexdigest():
        return [f"sha256 mismatch in {path!r}: the archive is damaged."]
    if m.type == FILE and m.size != entry.usize:
        return [f"Size of {path!r} differs from the manifest."]
    if m.type == SYMLINK and m.size != entry.usize:
        return [f"Link {path!r} differs from the manifest."]
    return []
