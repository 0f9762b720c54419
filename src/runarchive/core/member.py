"""One file of an archive: its bytes streamed by range, or extracted elsewhere.

Reading one file (``open_member``) streams its bytes from the archive's descriptor, one bounded
piece at a time: stored data by ``pread`` at the range's start, deflated data inflated from the
entry's start and discarded up to the range's start. Header lies are caught as in
``reader.ArchiveReader.stream``: never more bytes than declared, never beyond the ratio limit,
the CRC checked whenever the bytes read cover the entry to its end from its first byte. A
damage found after bytes were handed out raises ``DamagedArchive`` from the read that finds it.

Extracting (``extract_files``) writes chosen files below a destination folder by handle: no
link in the destination is ever followed, each file is written to a temporary name and only
linked to its own once its CRC held, and the run itself is refused as a destination unless
the caller says so.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from isal import isal_zlib

from .errors import DamagedArchive, EntryNotFound, InvalidArchive, InvalidInput, LimitExceeded
from .inside import Contents, Node
from .manifest import DIR, FILE
from .reader import READ_BLOCK, ArchiveReader
from .zipformat import DEFLATED, STORED, CentralEntry

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


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
