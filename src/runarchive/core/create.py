"""Creating an archive: walk, hash and compress in parallel, write, make durable, publish.

Pipeline: the run is scanned once and its entries grouped, in archive order, into tasks
(``_plan``). Files under one chunk (1 MiB), folders and links travel in batches of up to
``BATCH_FILES`` entries or a chunk of bytes, each built whole by one worker: read (by single
name beneath the folder's handle), CRC, sha256, deflate, local header, central record and
manifest entry, packed straight into the batch's buffers. On a run of many small files that
per-file work is mostly Python holding the interpreter lock, so the batches are built by
forked worker processes (``forkpool``: they use the run's and the files cache's open
handles, and stream each batch back in order through a pipe); on a run of few, by the
thread pool. Bigger files become 1 MiB chunks deflated in the thread pool (isal's deflate
releases the GIL on big buffers), pigz-style (each chunk ends with a sync flush, so the
concatenation is one valid deflate stream). The calling thread is the only writer: it
appends results in archive order, with a bounded number in flight (and full pipes holding
the processes back) so memory stays flat whatever the run's size; it does almost nothing per
entry, which is why everything is built by the workers. Whether a file is stored or deflated
is decided by its extension, then by a probe of its first chunk (a single-chunk file: by
its whole deflated size).

Files cache: when the run's newest archive can be trusted as a source (``filescache``), a
file whose size, mtime_ns, ctime_ns and inode match what that archive recorded is not read:
its pool task copies the old entry's compressed bytes, proven by inflate and CRC, and falls
back to reading the file on any mismatch. Each archive still holds every byte it needs.

Failure semantics: the archive is written to ``archives/.tmp-*.partial``, fsynced, then hard
linked to its final name (which fails rather than overwrite), and the directory fsynced. Just
before the link ``before_publish`` is called, the caller's last chance to stop (a canceled job
raises there). Any error removes the temp file; a kill leaves only the temp file, which
``recover`` removes. So a name matching the archive pattern always denotes a complete archive.
A worker process that dies fails the create the same way (``forkchild.WorkerDied``, a
``WorkerFailed``); the workers die with the process that forked them, and are killed and
reaped on any error.

A ``budget`` (bytes; the quota's hard check, a plain number here) is enforced by the file the
writer appends to: a write that would take the archive past it raises ``QuotaExceeded``
before the bytes land, and the temp file is removed like on any error, so an archive over its
budget is never published and never left half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import struct
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from isal import isal_zlib

from .. import __version__
from .errors import NoSpace, QuotaExceeded, RunArchiveError
from .filescache import FilesCache, ReusedEntry, cacheable, open_files_cache
from .forkpool import ForkPool
from .fsutil import human_bytes, is_no_space, require_space
from .journal import recover_locked
from .limits import Limits
from .linkmode import LinkMode, parse_link_mode
from .links import follow_links
from .manifest import DIR, FILE, MANIFEST_NAME, Manifest, entry_json, file_entry_json
from .names import ARCHIVES_DIR, Comment, new_archive_name, normalize_comment
from .progress import Phase, ProgressCallback, ProgressEvent, ignore_progress
from .rundir import Folder, RunDir, RunRef, is_unsafe_error, open_beneath, open_run
from .runlock import run_lock
from .tree import Tree, TreeEntry, scan_run
from .undo import drop_undo
from .zipformat import DEFLATED, STORED, WrittenEntry, ZipWriter, append_entry

CHUNK = 1 << 20
PROBE = 64 << 10
BATCH_FILES = 64
# Deflate must save at least this share of a file to be worth the inflate on restore.
MIN_SAVING = 0.03
INCOMPRESSIBLE_SUFFIXES = frozenset(
    (
        ".tif .tiff .parquet .gz .tgz .zip .png .jpg .jpeg .gif .webp .nc .nc4 .h5 .hdf5 .zst "
        ".xz .bz2 .7z .rar .feather .arrow .mp4 .mp3 .pdf .jp2 .npz .pbf .kmz .docx .xlsx"
    ).split()
)


@dataclass(frozen=True, slots=True)
class CreateResult:
    """What was written: the archive's name and path, and what went into it."""

    name: str
    path: Path
    size: int
    files: int
    entries: int
    bytes_total: int
    external_links: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    links: str = LinkMode.STORE.value
    followed: int = 0
    warnings: list[str] = field(default_factory=list)
    # Files whose compressed bytes were copied from the newest archive (the files cache).
    reused: int = 0


@dataclass(slots=True)
class _Chunk:
    entry: TreeEntry
    run_fd: int
    index: int
    offset: int
    length: int
    last: bool
    decision: Future[list[_Done]] | None = None


@dataclass(slots=True)
class _Done:
    raw: bytes
    out: bytes
    method: int
    crc: int
    sha256: str | None
    missing: bool = False


@dataclass(slots=True)
class _Open:
    """A multi-chunk entry being written: running checksums and sizes."""

    header: WrittenEntry
    crc: int = 0
    usize: int = 0
    csize: int = 0
    sha: hashlib._Hash = field(default_factory=hashlib.sha256)


def _is_incompressible(path: str) -> bool:
    """Tell whether ``path``'s suffix names a compressed format (``os.path.splitext`` rules).

    Written out because it runs once or twice per file: the generic ``splitext`` was 5 % of
    the writer thread's time on a run of 30,000 small files.
    """
    dot = path.rfind(".")
    start = path.rfind("/") + 1
    if dot <= start or path[dot:].lower() not in INCOMPRESSIBLE_SUFFIXES:
        return False
    return path[start:dot].strip(".") != ""  # ".tif" or "..tif" has no suffix, as splitext says


def _read(chunk: _Chunk) -> bytes:
    """Read one chunk of a run file, reached beneath the run's handle with no link on the way.

    A file replaced by a link, a fifo or a folder since the scan reads as vanished: nothing
    outside the run, and nothing that is not a regular file, is ever read into an archive.
    """
    try:
        fd = open_beneath(chunk.run_fd, chunk.entry.read_path)
    except OSError as exc:
        if is_unsafe_error(exc):
            raise FileNotFoundError(exc.errno, exc.strerror, chunk.entry.read_path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(chunk.entry.read_path)
        return os.pread(fd, chunk.length, chunk.offset)
    finally:
        os.close(fd)


def _deflate(data: bytes, level: int, final: bool) -> bytes:
    comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush(isal_zlib.Z_FINISH if final else isal_zlib.Z_SYNC_FLUSH)


def _choose_method(chunk: _Chunk, raw: bytes, level: int) -> int:
    if chunk.decision is not None:
        return chunk.decision.result()[0].method
    if not raw or _is_incompressible(chunk.entry.path):
        return STORED
    if chunk.last:
        return DEFLATED  # a single-chunk file is judged on its whole deflated size
    probe = raw[:PROBE]
    return STORED if len(_deflate(probe, level, True)) > len(probe) * (1 - MIN_SAVING) else DEFLATED


def _work(chunk: _Chunk, level: int) -> _Done:
    """Read, checksum and (maybe) deflate one chunk; runs in a pool thread."""
    try:
        raw = _read(chunk)
    except FileNotFoundError:
        # The file vanished between scan and read: archive what was there (nothing more).
        return _Done(b"", b"", STORED, 0, None, missing=chunk.index == 0)
    crc = isal_zlib.crc32(raw)
    single = chunk.index == 0 and chunk.last
    sha = hashlib.sha256(raw).hexdigest() if single else None
    if _choose_method(chunk, raw, level) == STORED:
        return _Done(raw, raw, STORED, crc, sha)
    out = _deflate(raw, level, chunk.last)
    if single and len(out) > len(raw) * (1 - MIN_SAVING):
        return _Done(raw, raw, STORED, crc, sha)
    return _Done(raw, out, DEFLATED, crc, sha)


def _work_batch(chunks: list[_Chunk], level: int) -> list[_Done]:
    return [_work(chunk, level) for chunk in chunks]


# Leaf opens beneath a folder handle: one component, never a link, never blocking on a fifo.
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(slots=True)
class _Built:
    """Small entries built whole by one task: headers and data back to back, their central
    records and manifest entries already encoded (no object per entry)."""

    data: bytearray | memoryview  # local headers and data
    central: bytearray  # central records, offsets relative to data's start (append_entry)
    starts: array[int]  # where each record's offset field lies in ``central``
    manifest: bytes  # the entries' manifest JSON, comma-separated
    sizes: array[int]  # the size of each file archived, in order (for progress)
    vanished: array[int]  # the batch's indices of the files that vanished
    files: int = 0
    raw_bytes: int = 0
    reused: int = 0


# How a _Built crosses a worker process's pipe: the lengths of its parts, then its counts.
_BUILT_HEAD = struct.Struct("<9Q")


def _encode_built(built: _Built) -> list[bytes | bytearray | memoryview | array[int]]:
    head = _BUILT_HEAD.pack(
        len(built.data), len(built.central), len(built.starts), len(built.manifest),
        len(built.sizes), len(built.vanished), built.files, built.raw_bytes, built.reused,
    )  # fmt: skip
    return [head, built.data, built.central, built.starts, built.manifest, built.sizes,
            built.vanished]  # fmt: skip


def _decode_built(view: memoryview) -> _Built:
    data_len, central_len, n_starts, manifest_len, n_sizes, n_vanished, files, raw, reused = (
        _BUILT_HEAD.unpack_from(view)
    )
    at = _BUILT_HEAD.size
    data = view[at : at + data_len]
    at += data_len
    central = bytearray(view[at : at + central_len])
    at += central_len
    starts, sizes, vanished = array("I"), array("Q"), array("I")
    starts.frombytes(view[at : at + n_starts * starts.itemsize])
    at += n_starts * starts.itemsize
    manifest = bytes(view[at : at + manifest_len])
    at += manifest_len
    sizes.frombytes(view[at : at + n_sizes * sizes.itemsize])
    at += n_sizes * sizes.itemsize
    vanished.frombytes(view[at : at + n_vanished * vanished.itemsize])
    return _Built(data, central, starts, manifest, sizes, vanished, files, raw, reused)


class _Parents:
    """The folder handle of the files a batch reads, opened once per run of siblings.

    Files come in scan order, so siblings follow each other; opening their folder once
    beneath the run (``RunDir.open``: no link in any component) and each file by its single
    name with ``O_NOFOLLOW`` relative to that handle is the same check as ``open_beneath`` of
    the whole path, without its per-call cost (the path's components walked again each time).
    """

    __slots__ = ("folder", "name", "run")

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.name: str | None = None
        self.folder: Folder | None = None

    def fd(self, parent: str) -> int | None:
        """Return the handle of folder ``parent`` (None if it is gone or no longer a folder)."""
        if parent == self.name:
            return None if self.folder is None else self.folder.fd
        self.close()
        self.name = parent
        if not parent:
            self.folder = Folder(os.dup(self.run.fd), "")
            return self.folder.fd
        try:
            self.folder = self.run.open(parent)
        except OSError as exc:
            if not is_unsafe_error(exc) and not isinstance(exc, FileNotFoundError):
                raise
            return None  # swapped for a link or removed since the scan: its files vanished
        return self.folder.fd

    def close(self) -> None:
        if self.folder is not None:
            self.folder.close()
            self.folder = None


def _read_small(parents: _Parents, path: str, limit: int = CHUNK) -> bytes | None:
    """Read a whole file of under ``limit`` bytes; None when it vanished or is no longer a file.

    As ``_read``: a file replaced by a link, a fifo or a folder since the scan reads as
    vanished, so nothing outside the run and nothing but a regular file is read.
    """
    parent, _, base = path.rpartition("/")
    if base in ("", ".", ".."):
        raise ValueError(f"not a plain path: {path!r}")
    parent_fd = parents.fd(parent)
    if parent_fd is None:
        return None
    try:
        fd = os.open(base, _O_READ, dir_fd=parent_fd)
    except OSError as exc:
        if is_unsafe_error(exc) or isinstance(exc, FileNotFoundError):
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        # What the file holds now, up to ``limit`` (a file grown past it is cut there, as
        # the chunked read of the scan's size would).
        return os.pread(fd, min(st.st_size, limit), 0) if st.st_size else b""
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _Batch:
    """One pool task's entries, with what the files cache offers for each (None: read it)."""

    entries: list[TreeEntry]
    reuse: list[ReusedEntry | None]
    cache_fd: int
    started_ns: int


def _build_batch(run: RunDir, batch: _Batch, level: int) -> _Built:
    """Read, checksum, deflate and frame small files, folders and links; runs in a pool thread
    or a worker process.

    Everything per entry happens here, headers and manifest entries included, so the writer
    only appends bytes: on a run of small files the per-entry Python, not deflate, is the
    cost. So the loop makes no object per entry (the headers are packed straight into the
    batch's buffers, the manifest entry straight into its JSON). A file the files cache
    offers is copied from the old archive when its bytes prove out (``ReusedEntry.copy``),
    else read whole (such files may exceed a chunk, up to ``filescache.REUSE_MAX``).
    """
    data, central = bytearray(), bytearray()
    starts, sizes, vanished = array("I"), array("Q"), array("I")
    manifest: list[str] = []
    files = raw_bytes = reused = 0
    started_ns, cache_fd = batch.started_ns, batch.cache_fd
    crc32, compress, sha256 = isal_zlib.crc32, isal_zlib.compress, hashlib.sha256
    pack, file_json = append_entry, file_entry_json
    parents = _Parents(run)
    try:
        for index, (e, reuse) in enumerate(zip(batch.entries, batch.reuse, strict=True)):
            kind, mode = e.type, e.mode
            if kind == FILE:
                copied = None if reuse is None else reuse.copy(cache_fd)
                if reuse is not None and copied is not None:
                    c = reuse.central
                    out, method, crc, usize, sha = copied, c.method, c.crc, c.usize, reuse.sha256
                    reused += 1
                else:
                    # A file the cache offered may exceed a chunk: read it whole, bounded as
                    # its chunks would be (the scan's size rounded up to whole chunks).
                    limit = CHUNK if reuse is None else max(1, -(-e.size // CHUNK)) * CHUNK
                    raw = _read_small(parents, e.read_path, limit)
                    if raw is None:
                        vanished.append(index)
                        continue
                    usize = len(raw)
                    crc = crc32(raw)
                    out, method = raw, STORED
                    if raw and not _is_incompressible(e.path):
                        packed = compress(raw, level, -15)
                        if len(packed) <= usize * (1 - MIN_SAVING):
                            out, method = packed, DEFLATED
                    sha = sha256(raw).hexdigest()
                name = e.path
                keep = cacheable(e, started_ns)
                manifest.append(file_json(name, usize, mode & 0o7777, e.mtime_ns, sha,
                                          e.followed_link, e.ctime_ns if keep else None,
                                          e.ino if keep else None, crc))  # fmt: skip
                files += 1
                raw_bytes += usize
                sizes.append(usize)
            else:
                if kind == DIR:
                    name, out = e.path + "/", b""
                else:
                    name, out = e.path, (e.target or "").encode("utf-8", "surrogateescape")
                usize, crc, method = len(out), crc32(out), STORED
                manifest.append(entry_json(e.path, kind, e.size, mode & 0o7777, e.mtime_ns, None,
                                           e.target, e.followed_link))  # fmt: skip
            pack(data, central, starts, name.encode(), method, mode, e.mtime_ns / 1e9, crc, out,
                 usize)  # fmt: skip
    finally:
        parents.close()
    return _Built(data, central, starts, ",".join(manifest).encode(), sizes, vanished, files,
                  raw_bytes, reused)  # fmt: skip


def _build_encoded(run: RunDir, level: int) -> Callable[[_Batch], list[Any]]:
    """Return the work of a worker process: a batch built, then encoded for its pipe."""

    def work(batch: _Batch) -> list[Any]:
        return _encode_built(_build_batch(run, batch, level))

    return work


def _chunks(run_fd: int, entry: TreeEntry) -> Iterator[_Chunk]:
    count = max(1, -(-entry.size // CHUNK))
    for i in range(count):
        yield _Chunk(entry, run_fd, i, i * CHUNK, CHUNK, i == count - 1)


def _estimate_size(entries: list[TreeEntry]) -> int:
    """Guess the archive size generously: stored files whole, the rest at a third."""
    total = 1 << 20
    for e in entries:
        if e.type == FILE:
            total += e.size if _is_incompressible(e.path) else e.size // 3
        total += 128 + 2 * len(e.path)
    return total


class _Budgeted:
    """The archive's file, refusing any write that would take it past ``budget`` bytes.

    Everything ``ZipWriter`` does to its file goes through ``write``/``writelines`` (counted)
    or is delegated unchanged (``tell``, ``flush``, ``fileno``; the close's ``pwrite`` patches
    rewrite bytes already counted).
    """

    def __init__(self, fh: BinaryIO, budget: int) -> None:
        self.fh, self.budget, self.written = fh, budget, 0

    def _take(self, size: int) -> None:
        if self.written + size > self.budget:
            raise QuotaExceeded(
                f"The archive would pass its quota of {human_bytes(self.budget)} (about "
                f"{human_bytes(self.written + size)} written so far); nothing was kept. "
                "Delete or prune archives, or ask an admin."
            )
        self.written += size

    def write(self, data: bytes | memoryview) -> int:
        self._take(len(data))
        return self.fh.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        self._take(sum(len(part) for part in parts))
        self.fh.writelines(parts)

    def __getattr__(self, name: str) -> object:
        return getattr(self.fh, name)


# Below this many entries in small batches, threads do (a fork and its pipes cost more than
# they save: see docs/benchmarks.md, "small files").
FORK_MIN_ENTRIES = 1000


def _plan(entries: list[TreeEntry], cache: FilesCache | None, started_ns: int
          ) -> list[_Batch | TreeEntry]:  # fmt: skip
    """Group the entries, in archive order, into the tasks that build them.

    Small files, folders and links travel in batches (one task per ~1 MiB or
    ``BATCH_FILES`` entries, so per-task overhead stays well below the work itself); a file
    of a chunk or more stands alone (split into chunks), unless the files cache offers its
    bytes (then it goes in a batch too).
    """
    plan: list[_Batch | TreeEntry] = []
    cache_fd = -1 if cache is None else cache.fd
    batch: list[TreeEntry] = []
    offers: list[ReusedEntry | None] = []
    batch_bytes = 0
    for entry in entries:
        offer = None if cache is None else cache.match(entry)
        if entry.type != FILE or entry.size < CHUNK or offer is not None:
            batch.append(entry)
            offers.append(offer)
            batch_bytes += entry.size
            if batch_bytes >= CHUNK or len(batch) >= BATCH_FILES:
                plan.append(_Batch(batch, offers, cache_fd, started_ns))
                batch, offers, batch_bytes = [], [], 0
            continue
        if batch:
            plan.append(_Batch(batch, offers, cache_fd, started_ns))
            batch, offers, batch_bytes = [], [], 0
        plan.append(entry)
    if batch:
        plan.append(_Batch(batch, offers, cache_fd, started_ns))
    return plan


class _Builder:
    """Writes one archive; the calling thread is the only one touching ``writer``."""

    writer: ZipWriter

    def __init__(
        self,
        run: RunDir,
        level: int,
        threads: int,
        progress: ProgressCallback,
        files_total: int,
        bytes_total: int,
        cache: FilesCache | None = None,
        started_ns: int = 0,
    ) -> None:
        self.run, self.level, self.threads = run, level, threads
        self.cache, self.started_ns = cache, started_ns
        self.reused = 0
        self.progress = progress
        self.files_total, self.bytes_total = files_total, bytes_total
        self.files_done = self.bytes_done = 0
        # The manifest's entries, JSON-encoded, in archive order (``Manifest.to_json``).
        self.manifest_parts: list[bytes] = []
        self.entries = 0
        self.vanished: set[str] = set()
        self.open: _Open | None = None

    def build(self, entries: list[TreeEntry]) -> None:
        """Build the entries in parallel and write results in archive order as they come due.

        Batches of small entries are built whole (``_build_batch``): by ``threads`` worker
        processes when there are enough of them (``forkpool``; on a run of small files the
        per-file Python holds the interpreter lock), else in the thread pool; files of a chunk
        or more are split into chunks deflated in the thread pool. A bounded number of tasks
        is in flight, so memory stays flat whatever the run's size.
        """
        plan = _plan(entries, self.cache, self.started_ns)
        batches = [item for item in plan if isinstance(item, _Batch)]
        forked: ForkPool[_Batch] | None = None
        if self.threads > 1 and sum(len(b.entries) for b in batches) >= FORK_MIN_ENTRIES:
            keep = [self.run.fd] + ([] if self.cache is None else [self.cache.fd])
            forked = ForkPool(batches, _build_encoded(self.run, self.level), self.threads, keep)
        max_inflight = 4 * self.threads + 4
        pending: deque[tuple[_Batch | list[_Chunk], Future[Any] | None]] = deque()
        with contextlib.ExitStack() as stack:
            # The children are forked before the pool starts a thread (fork copies only the
            # calling thread); the pool's threads start with its first chunk.
            if forked is not None:
                try:
                    stack.enter_context(forked)
                except OSError:  # no process to be had (a limit, a sandbox): threads build
                    forked = None
            pool = stack.enter_context(
                ThreadPoolExecutor(self.threads, thread_name_prefix="runarchive-deflate")
            )
            stack.callback(lambda: [fut.cancel() for _, fut in pending if fut is not None])

            def submit(task: _Batch | list[_Chunk], fut: Future[Any] | None) -> None:
                pending.append((task, fut))
                while len(pending) >= max_inflight:
                    self._consume(*pending.popleft(), forked)

            for item in plan:
                if isinstance(item, _Batch):
                    batch_fut = None if forked else pool.submit(_build_batch, self.run, item,
                                                                self.level)  # fmt: skip
                    submit(item, batch_fut)
                    continue
                chunks = list(_chunks(self.run.fd, item))
                first = pool.submit(_work_batch, chunks[:1], self.level)
                submit(chunks[:1], first)
                for chunk in chunks[1:]:
                    chunk.decision = first
                    submit([chunk], pool.submit(_work_batch, [chunk], self.level))
            while pending:
                self._consume(*pending.popleft(), forked)
            if forked is not None:
                forked.finish()

    def _consume(
        self,
        task: _Batch | list[_Chunk],
        fut: Future[Any] | None,
        forked: ForkPool[_Batch] | None,
    ) -> None:
        if isinstance(task, _Batch):
            if fut is not None:
                built = fut.result()
            else:
                assert forked is not None
                built = _decode_built(forked.next())
            self._write_built(task, built)
            return
        assert fut is not None
        for chunk, done in zip(task, fut.result(), strict=True):
            self._consume_chunk(chunk, done)

    def _write_built(self, batch: _Batch, built: _Built) -> None:
        self.writer.add_packed(built.data, built.central, built.starts)
        self.entries += len(built.starts)
        if built.manifest:
            self.manifest_parts.append(built.manifest)
        self.reused += built.reused
        gone = frozenset(built.vanished)
        self.vanished.update(batch.entries[i].path for i in gone)
        if self.progress is ignore_progress:  # no event built per file for nobody
            self.files_done += built.files
            self.bytes_done += built.raw_bytes
            return
        sizes = iter(built.sizes)
        for index, e in enumerate(batch.entries):
            if e.type == FILE and index not in gone:
                self.files_done += 1
                self.bytes_done += next(sizes)
                self._report(e.path)

    def _consume_chunk(self, chunk: _Chunk, done: _Done) -> None:
        e = chunk.entry
        if done.missing:
            self.vanished.add(e.path)
            return
        if e.path in self.vanished:
            return
        self.bytes_done += len(done.raw)
        if chunk.index == 0 and chunk.last:
            self.writer.add(e.path, done.method, e.mode, e.mtime_ns / 1e9, done.out, done.crc,
                            len(done.raw))  # fmt: skip
            self._close_entry(e, len(done.raw), done.sha256 or "", done.crc)
            return
        if chunk.index == 0:
            header = self.writer.begin(e.path, done.method, e.mode, e.mtime_ns / 1e9, e.size)
            self.open = _Open(header)
        assert self.open is not None
        cur = self.open
        self.writer.write_data(done.out)
        cur.sha.update(done.raw)
        cur.crc = isal_zlib.crc32_combine(cur.crc, done.crc, len(done.raw))
        cur.usize += len(done.raw)
        cur.csize += len(done.out)
        if chunk.last:
            self.writer.finish(cur.header, cur.crc, cur.csize, cur.usize)
            self._close_entry(e, cur.usize, cur.sha.hexdigest(), cur.crc)
            self.open = None

    def _close_entry(self, e: TreeEntry, size: int, digest: str, crc: int) -> None:
        keep = cacheable(e, self.started_ns)
        self.manifest_parts.append(
            entry_json(e.path, FILE, size, e.mode & 0o7777, e.mtime_ns, digest, None,
                       e.followed_link, e.ctime_ns if keep else None, e.ino if keep else None,
                       crc).encode()
        )  # fmt: skip
        self.entries += 1
        self.files_done += 1
        if self.progress is not ignore_progress:  # no event built per file for nobody
            self._report(e.path)

    def _report(self, path: str) -> None:
        self.progress(ProgressEvent("archive", Phase.WRITE, self.files_done, self.files_total,
                                    self.bytes_done, self.bytes_total, path))  # fmt: skip


def create_archive(
    run_dir: Path | RunRef,
    comment: str | Comment | None = None,
    *,
    progress: ProgressCallback | None = None,
    threads: int = 2,
    level: int = 1,
    limits: Limits | None = None,
    before_publish: Callable[[], None] | None = None,
    links: LinkMode | str = LinkMode.STORE,
    on_scan: Callable[[Tree], None] | None = None,
    budget: int | None = None,
    reuse: bool = True,
) -> CreateResult:
    """Snapshot ``run_dir`` into a new archive under its ``archives/`` folder.

    ``before_publish`` is called once the archive is written and synced, before it is linked
    to its name: if it raises, nothing is kept; once it returned, the archive is published.
    ``links`` is ``store`` (every symlink archived as a link) or ``follow`` (links that
    resolve inside the run archived as what they point to; see ``links``). ``on_scan`` sees
    the run's tree once it is scanned, before anything is read (the job locks the ``.nodb``
    files it lists there: one walk of the run per archive). ``budget`` caps the archive's
    bytes (QuotaExceeded, nothing kept; see the module's notes); None: no cap. ``reuse``
    lets unchanged files be copied from the newest archive (the files cache, ``filescache``);
    off, every file is read and compressed.
    """
    report = progress or ignore_progress
    text = normalize_comment(comment)
    mode = parse_link_mode(links)
    lim = limits or Limits.from_env()
    with open_run(run_dir) as run, run_lock(run) as work:
        recover_locked(run, work)
        # Before the scan: a file whose ctime is not clearly older may change again unseen.
        started_ns = time.time_ns()
        try:
            tree = scan_run(run)
        except OSError as exc:
            raise RunArchiveError(
                f"Cannot read {exc.filename}: {exc.strerror}. Fix its permissions and retry; "
                "no archive was written."
            ) from exc
        if on_scan is not None:
            on_scan(tree)
        if mode is LinkMode.FOLLOW:
            followed = follow_links(tree, lim)
            tree, count, warnings = followed.tree, followed.followed, followed.warnings
        else:
            count, warnings = 0, [f"link leaves the run: {link}" for link in tree.external_links]
        report(ProgressEvent("archive", Phase.SCAN, 0, tree.file_count, 0, tree.file_bytes))
        with run.ensure_archives() as folder:
            require_space(folder.fd, _estimate_size(tree.entries), "create the archive",
                          reserve=lim.reserve_for(folder.fd))  # fmt: skip
            cache = open_files_cache(folder, run.runid, lim) if reuse else None
            try:
                result = _create_in(run, folder, tree, text, report, threads, level,
                                    before_publish, budget, cache, started_ns)  # fmt: skip
            finally:
                if cache is not None:
                    cache.close()
        # A new archive ends what a restore kept for undo (renamed to trash: instant; the
        # caller's purge_trash or any later recover deletes it).
        drop_undo(work, purge=False)
    return replace(result, links=mode.value, followed=count, warnings=warnings)


def _create_in(run: RunDir, folder: Folder, tree: Tree, text: str, report: ProgressCallback,
               threads: int, level: int,
               before_publish: Callable[[], None] | None = None,
               budget: int | None = None, cache: FilesCache | None = None,
               started_ns: int = 0) -> CreateResult:  # fmt: skip
    """Write the archive to a temp file in ``archives/``, then link it to its final name."""
    files_total, bytes_total = tree.file_count, tree.file_bytes
    created = datetime.now(UTC)
    name = new_archive_name(run.runid, created, set(folder.names()))
    tmp = f".tmp-{name}-{secrets.token_hex(4)}.partial"
    manifest = Manifest(
        run_id=run.runid, created=created.strftime("%Y-%m-%dT%H:%M:%SZ"), comment=text,
        tool_version=__version__, external_links=tree.external_links,
    )  # fmt: skip
    try:
        builder = _Builder(run, level, threads, report, files_total, bytes_total, cache,
                           started_ns)  # fmt: skip
        size = _write(folder, tmp, builder, tree.entries, manifest, created, budget)
        if before_publish is not None:
            before_publish()
        os.link(tmp, name, src_dir_fd=folder.fd, dst_dir_fd=folder.fd, follow_symlinks=False)
        folder.unlink(tmp)
        folder.fsync()
    except OSError as exc:
        _discard(folder, tmp)
        if is_no_space(exc):
            raise NoSpace(
                f"Ran out of disk space while writing the archive ({exc.strerror}); "
                "nothing was kept. Free some space and retry."
            ) from exc
        if isinstance(exc, PermissionError):
            raise RunArchiveError(
                f"Cannot read {exc.filename}: permission denied. Fix its permissions "
                "and retry; no archive was written."
            ) from exc
        raise
    except BaseException:
        _discard(folder, tmp)
        raise
    skipped = tree.skipped + [f"{p} (vanished while archiving)" for p in sorted(builder.vanished)]
    report(ProgressEvent("archive", Phase.DONE, builder.files_done, files_total,
                         builder.bytes_done, bytes_total))  # fmt: skip
    return CreateResult(
        name=name,
        path=run.path / ARCHIVES_DIR / name,
        size=size,
        files=builder.files_done,
        entries=builder.entries,
        bytes_total=builder.bytes_done,
        external_links=tree.external_links,
        skipped=skipped,
        reused=builder.reused,
    )


def _write(
    folder: Folder,
    tmp: str,
    builder: _Builder,
    entries: list[TreeEntry],
    manifest: Manifest,
    created: datetime,
    budget: int | None = None,
) -> int:
    """Write every entry, then the manifest and central directory; fsync; return the size."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644, dir_fd=folder.fd)
    with os.fdopen(fd, "wb", buffering=CHUNK) as fh:
        out = fh if budget is None else cast(BinaryIO, _Budgeted(fh, budget))
        writer = builder.writer = ZipWriter(out)
        builder.build(entries)
        data = manifest.to_json(builder.manifest_parts)
        packed = _deflate(data, builder.level, True)
        writer.add(MANIFEST_NAME, DEFLATED, 0o100644, created.timestamp(), packed,
                   isal_zlib.crc32(data), len(data))  # fmt: skip
        writer.close(manifest.comment.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
        return os.fstat(fh.fileno()).st_size


def _discard(folder: Folder, tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        folder.unlink(tmp)
