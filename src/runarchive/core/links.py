"""Link modes: store a run's symlinks as links (the default), or follow the ones inside the run.

Many unzip tools mishandle links: 7-Zip refuses one whose text holds ``..``, ``jar`` and
Python's ``zipfile`` write the link text as a small file, and old restore scripts write
through a link or crash on a folder link. ``follow`` makes an archive those tools restore as
plain files: a link that resolves inside the run is archived as what it points to, a file
link as a regular file with the target's bytes, mode and mtime, a folder link as a folder
holding the target's content.

Algorithm: ``follow_links`` works on the scanned tree alone, never on the file system. Each
link is resolved with the tree's own resolver (``tree.resolve_in_run``), which yields a run
path with no link in any component; the entry is given that path as its ``source`` and the
archive's writer reads it with ``open_beneath`` (no symlink anywhere, beneath the run's
handle). So the OS never follows a link for us, and a link or folder swapped for one pointing
elsewhere between the scan and the read makes the read fail (the entry is reported as
vanished) rather than reach anything else.

What is never followed, and stays a link with a warning:

* a link that leaves the run (absolute, ``..`` above the run, through other links): following
  it would read outside the run, which nothing in runarchive ever does;
* a link to nothing the scan archives (nothing there, ``archives/``, runarchive's state, a
  fifo or device);
* a folder link that loops back to a folder being copied (``sub/up -> ..``): cycles stop;
* any link once the copy would pass ``Limits.max_entries`` entries or ``max_total_bytes``
  bytes (links to a big folder nested in each other grow exponentially).

A link kept inside a copied folder is re-aimed from its new place at the same run path, so it
means what it meant (and restores) wherever the copy put it.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from dataclasses import dataclass, field

from .limits import Limits
from .manifest import DIR, FILE, SYMLINK
from .tree import Tree, TreeEntry, link_leaves_run, resolve_in_run

LEAVES = "leaves the run and is never followed (that would read outside the run)"


@dataclass(slots=True)
class Followed:
    """The tree to archive, how many links were followed, and what was kept as a link."""

    tree: Tree
    followed: int = 0
    warnings: list[str] = field(default_factory=list)


def follow_links(tree: Tree, limits: Limits) -> Followed:
    """Return ``tree`` with every in-run link replaced by a copy of what it points to."""
    return _Follower(tree, limits).run()


class _Follower:
    def __init__(self, tree: Tree, limits: Limits) -> None:
        self.tree = tree
        self.by_path = {e.path: e for e in tree.entries}
        self.children: defaultdict[str, list[TreeEntry]] = defaultdict(list)
        for e in tree.entries:  # the scan's order: sorted by name within each folder
            self.children[posixpath.dirname(e.path)].append(e)
        self.links = {e.path: e.target for e in tree.entries if e.target is not None}
        self.max_entries, self.max_bytes = limits.max_entries, limits.max_total_bytes
        self.out: list[TreeEntry] = []
        self.bytes = 0
        self.result = Followed(Tree(skipped=list(tree.skipped)))
        self.stopped = False
        self.warned: set[tuple[str, str]] = set()

    def run(self) -> Followed:
        # (folder in the archive, folder of the run it copies, run folders on the way there)
        stack: list[tuple[str, str, frozenset[str]]] = [("", "", frozenset({""}))]
        while stack:
            vdir, pdir, chain = stack.pop()
            subdirs: list[tuple[str, str, frozenset[str]]] = []
            for child in self.children.get(pdir, []):
                name = posixpath.basename(child.path)
                vpath = f"{vdir}/{name}" if vdir else name
                if child.type == SYMLINK:
                    entry = self._link(child, vpath, vdir, chain)
                else:
                    entry = self._copy(child, vpath)
                if entry is None:
                    continue
                self.out.append(entry)
                if entry.type == DIR:
                    source = entry.read_path
                    subdirs.append((vpath, source, chain | {source}))
            stack.extend(reversed(subdirs))
        tree = self.result.tree
        tree.entries = self.out
        links = {e.path: e.target for e in self.out if e.target is not None}
        tree.external_links = [f"{p} -> {t}" for p, t in links.items() if link_leaves_run(p, links)]
        return self.result

    def _copy(self, entry: TreeEntry, vpath: str) -> TreeEntry | None:
        """Place a file or folder of the run at ``vpath`` (itself when nothing was followed)."""
        if vpath == entry.path:
            return self._count(entry)
        return self._count(
            TreeEntry(
                vpath, entry.type, entry.size, entry.mode, entry.mtime_ns, source=entry.read_path
            )
        )

    def _count(self, entry: TreeEntry) -> TreeEntry | None:
        """Charge an entry of the copy to the limits; None once they are reached."""
        if entry.source is None:
            return entry  # the run's own entries are archived whatever the copies cost
        size = entry.size if entry.type == FILE else 0
        if len(self.out) + 1 > self.max_entries or self.bytes + size > self.max_bytes:
            self._stop()
            return None
        self.bytes += size
        return entry

    def _stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.result.warnings.append(
                f"Stopped following links at {self.max_entries} entries or "
                f"{self.max_bytes} bytes of copies; the rest stay links."
            )

    def _link(
        self, link: TreeEntry, vpath: str, vdir: str, chain: frozenset[str]
    ) -> TreeEntry | None:
        """Return what ``link`` becomes at ``vpath``: a copy of its target, or a link."""
        text = link.target or ""
        where = resolve_in_run(link.path, self.links)
        if where is None:
            return self._keep(link, vpath, vdir, None, LEAVES)
        target = self.by_path.get(where)
        if where in chain:
            return self._keep(link, vpath, vdir, where, "loops back to a folder that holds it")
        if target is None or target.type not in (FILE, DIR):
            # Also what the scan leaves out: archives/, our state, special files.
            return self._keep(link, vpath, vdir, where, "points to nothing archived in the run")
        if self.stopped:
            return self._keep(link, vpath, vdir, where, None)
        copy = TreeEntry(
            vpath,
            target.type,
            target.size if target.type == FILE else 0,
            target.mode,
            target.mtime_ns,
            source=where,
            followed_link=text,
        )
        counted = self._count(copy)
        if counted is None:
            return self._keep(link, vpath, vdir, where, None)
        self.result.followed += 1
        return counted

    def _keep(
        self, link: TreeEntry, vpath: str, vdir: str, where: str | None, why: str | None
    ) -> TreeEntry:
        """Keep ``link`` as a link at ``vpath``, aimed at the same run path from there."""
        if why is not None and (link.path, why) not in self.warned:
            self.warned.add((link.path, why))
            self.result.warnings.append(f"{link.path} -> {link.target} {why}; kept as a link.")
        if vpath == link.path or where is None:
            return TreeEntry(vpath, SYMLINK, link.size, link.mode, link.mtime_ns, link.target)
        text = posixpath.relpath(where or ".", vdir or ".")
        return TreeEntry(
            vpath,
            SYMLINK,
            len(text.encode("utf-8", "surrogateescape")),
            link.mode,
            link.mtime_ns,
            text,
        )
