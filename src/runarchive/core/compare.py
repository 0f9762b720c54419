"""Comparing an archive with the live run or with another archive, and one file's text diff.

A diff goes *from* the archive (side a) *to* its target (side b): ``added`` is on b only,
``removed`` on a only, ``type_changed`` a different kind on each side (``type_a`` says a's),
``modified`` the same kind with different content, link target or permission bits (``reason``
says which, in that order of precedence: size, content, target, mode). Folders compare by
mode only (their mtime moves with every change inside them); mtimes alone never make a
change: a file touched but not changed is unchanged, once that is proven.

When a file counts as unchanged (the rule; ``unchanged_by`` counts each way):

``sha256``
    the target's bytes hash to the sha256 the archive's manifest recorded (against the run:
    the run file is read and hashed), or both archives' manifests record the same sha256;
``size_mtime_mode``
    against the run only: the manifest hashed the file, and the run file has the same size,
    the same mtime to the nanosecond and the same permission bits. No read: this is the rule
    restore and ``rsync`` rely on, and a file rewritten with its size and mtime put back is
    the one case it cannot see;
``crc32_size``
    when an archive has no manifest (made by zip, 7-Zip, WEPPcloud): the same size and the
    same CRC-32 (the run file's computed, the archive's from its central directory). Weaker
    than sha256, and said so.

Everything else that is the same size is read and hashed; a different size is a change
without reading. The run is scanned once with create's own scan (``tree.scan_run``: the same
exclusion of ``archives/`` and runarchive's state, the same link text), and with create's
``--links=follow`` rule when the archive was made with it (its manifest records followed
links), so the run is compared with what archiving it now would write. Run files are opened
beneath the run's handle with no link on the way and read only when they are regular files
(``rundir``); one the scan saw but that is gone or replaced by a link when read counts as
removed.

The text diff (``diff_text``; ``textdiff``: difflib's format, anchored on unique lines)
works on files of at most 1 MiB on both sides that are text (valid UTF-8 without NUL); its
output is cut at 2,000 lines, with a note saying so.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field, replace
from enum import StrEnum

from isal import isal_zlib

from .errors import EntryNotFound, NotText
from .inside import Contents, Node, check_path, tree_key
from .isotime import iso_from_ns
from .linkmode import LinkMode
from .links import follow_links
from .manifest import DIR, FILE, SYMLINK
from .member import MemberStream, open_member
from .names import is_reserved_top
from .paging import check_limit, decode_cursor, encode_cursor, take_page
from .reader import READ_BLOCK
from .rundir import RunDir, is_unsafe_error, open_beneath
from .textdiff import unified_lines
from .tree import TreeEntry, scan_run

BUCKETS = ("added", "removed", "modified", "type_changed")
MAX_TEXT_BYTES = 1 << 20
MAX_DIFF_LINES = 2000


class Reason(StrEnum):
    """Why a path present on both sides as the same kind is ``modified``."""

    SIZE = "size"
    CONTENT = "content"
    TARGET = "target"
    MODE = "mode"
    UNREADABLE = "unreadable"  # the run file could not be read (permissions): not proven


class Proof(StrEnum):
    """How an unchanged file was proven unchanged (see the module doc)."""

    SHA256 = "sha256"
    METADATA = "size_mtime_mode"
    CRC32 = "crc32_size"


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path; ``type`` is b's kind (a's for ``removed``)."""

    path: str
    type: str
    size_a: int | None
    size_b: int | None
    mtime_a: int | None
    mtime_b: int | None
    type_a: str | None = None  # type_changed only
    reason: Reason | None = None  # modified only

    def as_json(self) -> dict[str, object]:
        """Return the row as the API and ``--json`` give it (mtimes as ISO 8601 UTC)."""
        row: dict[str, object] = {
            "path": self.path,
            "type": self.type,
            "size_a": self.size_a,
            "size_b": self.size_b,
            "mtime_a": iso_from_ns(self.mtime_a),
            "mtime_b": iso_from_ns(self.mtime_b),
        }
        if self.type_a is not None:
            row["type_a"] = self.type_a
        if self.reason is not None:
            row["reason"] = self.reason.value
        return row


@dataclass(frozen=True, slots=True)
class Tally:
    """A bucket's totals: its rows, the files among them and their bytes (b's size, a's for
    ``removed``)."""

    entries: int = 0
    files: int = 0
    bytes: int = 0

    def as_json(self) -> dict[str, int]:
        return {"entries": self.entries, "files": self.files, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class Diff:
    """The changes from archive ``archive`` to ``against`` (another archive; None: the run).

    The four lists may be one page of the whole (``page_diff``); ``summary``, ``unchanged``
    and the counts always describe the whole diff.
    """

    archive: str
    against: str | None
    added: tuple[Change, ...]
    removed: tuple[Change, ...]
    modified: tuple[Change, ...]
    type_changed: tuple[Change, ...]
    unchanged: int
    unchanged_by: dict[Proof, int]
    summary: dict[str, Tally]
    hidden: int = 0  # archive entries neither side shows (``inside``: unsafe names…)
    skipped: tuple[str, ...] = ()  # run paths the scan leaves out (special files…)
    hashed_files: int = 0  # run files read to decide
    hashed_bytes: int = 0
    next: str | None = None
    total: int = field(default=0)  # changed rows in the whole diff

    @property
    def changes(self) -> int:
        return len(self.added) + len(self.removed) + len(self.modified) + len(self.type_changed)

    def as_json(self) -> dict[str, object]:
        """Return the diff (or page) as the API and ``--json`` give it."""
        return {
            "archive": self.archive,
            "against": self.against,
            **{name: [c.as_json() for c in getattr(self, name)] for name in BUCKETS},
            "unchanged": self.unchanged,
            "unchanged_by": {p.value: self.unchanged_by.get(p, 0) for p in Proof},
            "summary": {name: self.summary[name].as_json() for name in BUCKETS},
            "hidden": self.hidden,
            "skipped": list(self.skipped),
            "hashed": {"files": self.hashed_files, "bytes": self.hashed_bytes},
            "next": self.next,
            "total": self.total,
        }


class _Collector:
    """Gathers rows into buckets and counts the unchanged, then builds the Diff."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Change]] = {name: [] for name in BUCKETS}
        self.unchanged = 0
        self.proofs: dict[Proof, int] = {p: 0 for p in Proof}
        self.hashed_files = self.hashed_bytes = 0

    def same(self, proof: Proof | None = None) -> None:
        self.unchanged += 1
        if proof is not None:
            self.proofs[proof] += 1

    def diff(self, archive: str, against: str | None, hidden: int, skipped: list[str]) -> Diff:
        lists = {k: tuple(sorted(v, key=lambda c: tree_key(c.path))) for k, v in self.rows.items()}
        summary = {name: _tally(name, rows) for name, rows in lists.items()}
        return Diff(
            archive, against, lists["added"], lists["removed"], lists["modified"],
            lists["type_changed"], self.unchanged, self.proofs, summary, hidden,
            tuple(skipped), self.hashed_files, self.hashed_bytes, None,
            sum(len(v) for v in lists.values()),
        )  # fmt: skip


def _tally(bucket: str, rows: tuple[Change, ...]) -> Tally:
    files = [r for r in rows if r.type == FILE]
    size = sum((r.size_a if bucket == "removed" else r.size_b) or 0 for r in files)
    return Tally(len(rows), len(files), size)


def _target(contents: Contents, node: Node) -> str | None:
    return contents.entry(node).target


def diff_against_run(contents: Contents, run: RunDir, *, links: LinkMode | None = None) -> Diff:
    """Compare the archive with the live run (scanned once; see the module doc for the rule).

    ``links`` is how the run's links are compared: as links (``store``) or as what they point
    to (``follow``); by default as the archive was made.
    """
    mode = links if links is not None else _links_of(contents)
    tree = scan_run(run)
    if mode is LinkMode.FOLLOW:
        tree = follow_links(tree, contents.reader.limits).tree
    live = {e.path: e for e in tree.entries}
    out = _Collector()
    for path, a in contents.nodes.items():
        b = live.pop(path, None)
        if b is None:
            out.rows["removed"].append(_row(path, a.type, a, None))
        else:
            _compare_with_run(contents, run, path, a, b, out)
    for path, b in live.items():
        out.rows["added"].append(_row(path, b.type, None, b))
    return out.diff(contents.name, None, contents.hidden, tree.skipped)


def _links_of(contents: Contents) -> LinkMode:
    manifest = contents.reader.manifest()
    followed = manifest is not None and any(e.followed_link for e in manifest.entries)
    return LinkMode.FOLLOW if followed else LinkMode.STORE


def _row(
    path: str,
    kind: str,
    a: Node | None,
    b: TreeEntry | Node | None,
    type_a: str | None = None,
    reason: Reason | None = None,
) -> Change:
    size_b = None if b is None else (b.size if b.type != DIR else 0)
    return Change(
        path, kind, None if a is None else a.size, size_b,
        None if a is None else a.mtime_ns, None if b is None else b.mtime_ns, type_a, reason,
    )  # fmt: skip


def _compare_with_run(
    contents: Contents, run: RunDir, path: str, a: Node, b: TreeEntry, out: _Collector
) -> None:
    if a.type != b.type:
        out.rows["type_changed"].append(_row(path, b.type, a, b, type_a=a.type))
        return
    mode_b = stat.S_IMODE(b.mode)
    mode_differs = a.mode is not None and a.mode != mode_b
    if a.type == SYMLINK:
        if _target(contents, a) != b.target:
            out.rows["modified"].append(_row(path, b.type, a, b, reason=Reason.TARGET))
        else:
            out.same()
        return
    if a.type != FILE:
        if mode_differs:
            out.rows["modified"].append(_row(path, b.type, a, b, reason=Reason.MODE))
        else:
            out.same()
        return
    if a.size != b.size:
        out.rows["modified"].append(_row(path, FILE, a, b, reason=Reason.SIZE))
        return
    sha = a.sha256
    if sha is not None and a.mtime_ns == b.mtime_ns and not mode_differs:
        out.same(Proof.METADATA)
        return
    try:
        size, digest = _digest_run_file(run, b.read_path, sha is not None)
    except FileNotFoundError:
        out.rows["removed"].append(_row(path, a.type, a, None))
        return
    except OSError:
        out.rows["modified"].append(_row(path, FILE, a, b, reason=Reason.UNREADABLE))
        return
    out.hashed_files += 1
    out.hashed_bytes += size
    expected: str | int | None = sha if sha is not None else _crc_of(a)
    if size != a.size or digest != expected:
        reason = Reason.SIZE if size != a.size else Reason.CONTENT
        out.rows["modified"].append(_row(path, FILE, a, replace(b, size=size), reason=reason))
    elif mode_differs:
        out.rows["modified"].append(_row(path, FILE, a, b, reason=Reason.MODE))
    else:
        out.same(Proof.SHA256 if sha is not None else Proof.CRC32)


def _crc_of(node: Node) -> int | None:
    return None if node.central is None else node.central.crc


def _open_run_file(run: RunDir, rel: str) -> int:
    """Open a regular file of the run beneath its handle (no link on the way) and return it.

    A link or a non-folder on the way, or something other than a regular file at the end,
    reads as not there (FileNotFoundError): nothing outside the run is ever read.
    """
    try:
        fd = open_beneath(run.fd, rel)
    except OSError as exc:
        if is_unsafe_error(exc):
            raise FileNotFoundError(errno.ENOENT, "not a file of the run", rel) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", rel)
    return fd


def _digest_run_file(run: RunDir, rel: str, sha256: bool) -> tuple[int, str | int]:
    """Return a run file's size and its sha256 (hex) or, for ``sha256=False``, its CRC-32."""
    fd = _open_run_file(run, rel)
    try:
        sha = hashlib.sha256() if sha256 else None
        crc = 0
        offset = 0
        while True:
            block = os.pread(fd, READ_BLOCK, offset)
            if not block:
                break
            offset += len(block)
            if sha is not None:
                sha.update(block)
            else:
                crc = isal_zlib.crc32(block, crc)
        return offset, (sha.hexdigest() if sha is not None else crc)
    finally:
        os.close(fd)


def diff_archives(a: Contents, b: Contents) -> Diff:
    """Compare two archives from their central directories and manifests, reading no content.

    Files compare by sha256 when both manifests record it, else by size and CRC-32 (said so
    in ``unchanged_by``); links by target, folders by mode.
    """
    out = _Collector()
    rest = dict(b.nodes)
    for path, x in a.nodes.items():
        y = rest.pop(path, None)
        if y is None:
            out.rows["removed"].append(_row(path, x.type, x, None))
            continue
        if x.type != y.type:
            out.rows["type_changed"].append(_row(path, y.type, x, y, type_a=x.type))
            continue
        mode_differs = x.mode is not None and y.mode is not None and x.mode != y.mode
        if x.type == SYMLINK:
            same_target = _target(a, x) == _target(b, y)
            reason = None if same_target else Reason.TARGET
        elif x.type == FILE:
            if x.size != y.size:
                reason = Reason.SIZE
            elif x.sha256 is not None and y.sha256 is not None:
                reason = None if x.sha256 == y.sha256 else Reason.CONTENT
            else:
                reason = None if _crc_of(x) == _crc_of(y) else Reason.CONTENT
            if reason is None and mode_differs:
                reason = Reason.MODE
        else:
            reason = Reason.MODE if mode_differs else None
        if reason is not None:
            out.rows["modified"].append(_row(path, y.type, x, y, reason=reason))
        elif x.type == FILE:
            both = x.sha256 is not None and y.sha256 is not None
            out.same(Proof.SHA256 if both else Proof.CRC32)
        else:
            out.same()
    for path, y in rest.items():
        out.rows["added"].append(_row(path, y.type, None, y))
    return out.diff(a.name, b.name, a.hidden + b.hidden, [])


def page_diff(diff: Diff, cursor: str | None = None, limit: int | None = None) -> Diff:
    """Return one page of ``diff``: at most ``limit`` rows (1 to 1000, default 200).

    Rows go bucket by bucket (added, removed, modified, type_changed), each by path;
    ``next`` is the cursor of the following page, None on the last one.
    """
    size = check_limit(limit)
    scope = f"diff\x00{diff.archive}\x00{diff.against or ''}"
    after = decode_cursor(cursor, scope, ranks=len(BUCKETS))
    rows = [(rank, change) for rank, name in enumerate(BUCKETS) for change in getattr(diff, name)]
    page, last = take_page(rows, lambda r: (r[0], tree_key(r[1].path)), after, size)
    cut = {name: tuple(c for rank, c in page if BUCKETS[rank] == name) for name in BUCKETS}
    more = None if last is None else encode_cursor(scope, last)
    return replace(
        diff, added=cut["added"], removed=cut["removed"], modified=cut["modified"],
        type_changed=cut["type_changed"], next=more,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class TextDiff:
    """A unified diff of one text file, a (the archive) to b; ``cut`` when capped."""

    path: str
    lines: tuple[str, ...]  # each ends with a newline
    cut: bool
    note: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "diff": self.text, "cut": self.cut, "note": self.note}


def diff_text(
    contents: Contents,
    path: str,
    against: RunDir | Contents,
    *,
    max_lines: int = MAX_DIFF_LINES,
) -> TextDiff:
    """Return the unified diff of the text file ``path`` from the archive to ``against``.

    A side that does not hold the file diffs as empty (``/dev/null``); EntryNotFound when
    neither does; NotText when a side holds something else than a text file of at most 1 MiB.
    """
    rel = check_path(path)
    old = _archive_text(contents, rel)
    new = _run_text(against, rel) if isinstance(against, RunDir) else _archive_text(against, rel)
    if old is None and new is None:
        raise EntryNotFound(f"Neither side holds a file at {rel!r}.")
    lines: list[str] = []
    cut = False
    diff = unified_lines(
        _lines(old or ""), _lines(new or ""),
        "/dev/null" if old is None else f"a/{rel}", "/dev/null" if new is None else f"b/{rel}",
    )  # fmt: skip
    for line in diff:
        if len(lines) >= max_lines:
            cut = True
            break
        if line.endswith("\n"):
            lines.append(line)
        else:  # the last line of a file without a final newline, marked as diff(1) does
            lines.append(line + "\n")
            if len(lines) < max_lines:
                lines.append("\\ No newline at end of file\n")
    if cut:
        note = f"Diff cut at {max_lines:,} lines."
    elif not lines:
        note = "No differences."
    else:
        note = None
    return TextDiff(rel, tuple(lines), cut, note)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _archive_text(contents: Contents, rel: str) -> str | None:
    node = contents.nodes.get(rel)
    if node is None:
        return None
    if node.type != FILE:
        raise NotText(f"{rel!r} is a {node.type} in the archive {contents.name}, not a file.")
    if node.size > MAX_TEXT_BYTES:
        raise NotText(f"{rel!r} is larger than 1 MiB in {contents.name}; no text diff.")
    stream: MemberStream
    with open_member(contents, rel) as stream:
        return _decode(stream.read(), rel, contents.name)


def _run_text(run: RunDir, rel: str) -> str | None:
    if is_reserved_top(rel.split("/", 1)[0]):
        return None  # archives/ and our state are not part of the run's content
    try:
        fd = _open_run_file(run, rel)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size > MAX_TEXT_BYTES:
            raise NotText(f"{rel!r} is larger than 1 MiB in the run; no text diff.")
        data = os.pread(fd, MAX_TEXT_BYTES + 1, 0)
    finally:
        os.close(fd)
    if len(data) > MAX_TEXT_BYTES:
        raise NotText(f"{rel!r} is larger than 1 MiB in the run; no text diff.")
    return _decode(data, rel, "the run")


def _decode(data: bytes, rel: str, where: str) -> str:
    if b"\x00" in data:
        raise NotText(f"{rel!r} is binary in {where} (it holds NUL bytes); no text diff.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotText(f"{rel!r} is not UTF-8 text in {where}; no text diff.") from None
