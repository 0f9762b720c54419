"""Walking a run: what gets archived and how links are treated.

Everything under the run is archived except the top-level ``archives/`` and ``.runarchive/``
folders. Symlinks are stored as links and never followed; an absolute link that points inside
the run is rewritten relative so the snapshot survives being moved; a link that leaves the run
is kept as is and reported, because restoring it would reach outside the run. With
``--links=follow``, ``links.follow_links`` turns the scanned tree's in-run links into what
they point to.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from .manifest import DIR, FILE, SYMLINK
from .names import is_reserved_top
from .rundir import Folder, RunDir, is_unsafe_error, open_run


@dataclass(slots=True)
class TreeEntry:
    """One path of the run as seen by lstat."""

    path: str
    type: str
    size: int
    mode: int
    mtime_ns: int
    target: str | None = None
    # Set by ``links.follow_links`` on entries reached through a followed link: the run path
    # whose content is archived under ``path``, and (on the link itself) the link's text.
    source: str | None = None
    followed_link: str | None = None
    # A file's lstat ctime and inode: with size and mtime, what the files cache compares.
    ctime_ns: int = 0
    ino: int = 0

    @property
    def read_path(self) -> str:
        """Return the run path to read this entry's bytes from (beneath the run's handle)."""
        return self.path if self.source is None else self.source


@dataclass(slots=True)
class Tree:
    """The archivable content of a run, in a stable order (parents before children)."""

    entries: list[TreeEntry] = field(default_factory=list)
    external_links: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def file_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.type == FILE)

    @property
    def file_count(self) -> int:
        return sum(1 for e in self.entries if e.type == FILE)


MAX_LINK_HOPS = 40


def link_leaves_run(path: str, links: Mapping[str, str]) -> bool:
    """Tell whether the link at ``path`` resolves outside the run (see ``resolve_in_run``)."""
    return resolve_in_run(path, links) is None


def resolve_in_run(path: str, links: Mapping[str, str]) -> str | None:
    """Return where the link at ``path`` lands inside the run, or None when it leaves it.

    Resolution is done on the tree itself, component by component, following the tree's
    other links (``sub/up -> ..`` makes ``x -> sub/up/..`` leave the run although its text
    does not). Absolute targets, backslashes, NUL and link loops count as leaving. The path
    returned (``""`` for the run itself) has no link of ``links`` in any component, so it can
    be opened with ``open_beneath``; whether anything is there is for the caller to check.
    """
    target = links[path]
    if target.startswith("/") or "\\" in target or "\x00" in target:
        return None
    position = path.split("/")[:-1]
    pending = deque(target.split("/"))
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not position:
                return None
            position.pop()
            continue
        position.append(part)
        inner = links.get("/".join(position))
        if inner is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS or inner.startswith("/") or "\\" in inner or "\x00" in inner:
            return None
        position.pop()
        pending.extendleft(reversed(inner.split("/")))
    return "/".join(position)


def _link_target(run_root: str, rel: str, text: str) -> str:
    """Rewrite an absolute link that points inside the run as a relative one."""
    if text.startswith("/"):
        norm = os.path.normpath(text)
        if norm == run_root or norm.startswith(run_root + "/"):
            return os.path.relpath(norm, os.path.dirname(f"{run_root}/{rel}"))
    return text


def _utf8_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_run(run: RunDir) -> Tree:
    """List every archivable path of the run with its lstat facts.

    Each folder is opened beneath the run's handle with no link in its path (``rundir``), so
    a folder swapped for a link while the scan runs is skipped, never followed out of the run.
    """
    tree = Tree()
    root = str(run.path)
    stack: list[str] = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            folder = run.open(rel_dir) if rel_dir else Folder(os.dup(run.fd), "")
        except OSError as exc:
            if not is_unsafe_error(exc) and not isinstance(exc, FileNotFoundError):
                raise
            tree.skipped.append(f"{rel_dir} (changed into a link or vanished while archiving)")
            continue
        with folder:
            children = sorted(folder.scandir(), key=lambda d: d.name)
            subdirs: list[str] = []
            for child in children:
                if not rel_dir and is_reserved_top(child.name):
                    continue
                rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
                if not _utf8_name(rel):
                    tree.skipped.append(f"{rel!r} (name is not valid UTF-8)")
                    continue
                try:
                    st = child.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished while scanning
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    tree.entries.append(TreeEntry(rel, DIR, 0, mode, st.st_mtime_ns))
                    subdirs.append(rel)
                elif stat.S_ISREG(mode):
                    entry = TreeEntry(rel, FILE, st.st_size, mode, st.st_mtime_ns)
                    entry.ctime_ns, entry.ino = st.st_ctime_ns, st.st_ino
                    tree.entries.append(entry)
                elif stat.S_ISLNK(mode):
                    try:
                        text = folder.readlink(child.name)
                    except OSError:  # gone or no longer a link since the listing
                        tree.skipped.append(f"{rel} (changed while archiving)")
                        continue
                    target = _link_target(root, rel, text)
                    size = len(target.encode("utf-8", "surrogateescape"))
                    tree.entries.append(TreeEntry(rel, SYMLINK, size, mode, st.st_mtime_ns, target))
                else:
                    tree.skipped.append(f"{rel} (special file: fifo, socket or device)")
        stack.extend(reversed(subdirs))
    links = {e.path: e.target for e in tree.entries if e.target is not None}
    tree.external_links = [f"{p} -> {t}" for p, t in links.items() if link_leaves_run(p, links)]
    return tree


def find_nodb_files(run_path: os.PathLike[str] | str) -> list[str]:
    """Return the run's ``.nodb`` state files as relative POSIX paths."""
    with open_run(run_path) as run:
        return nodb_files(scan_run(run))


def nodb_files(tree: Tree) -> list[str]:
    """Return the ``.nodb`` state files of a scanned tree."""
    return sorted(e.path for e in tree.entries if e.type == FILE and e.path.endswith(".nodb"))
