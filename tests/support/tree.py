"""Declarative fixture trees: describe a run as data, build it, and snapshot it for comparison."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

EXCLUDED = {"archives", ".runarchive"}


@dataclass(frozen=True)
class File:
    data: bytes = b""
    mode: int = 0o644
    mtime_ns: int = 1_600_000_000_123_456_789


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755
    mtime_ns: int = 1_600_000_000_000_000_000


@dataclass(frozen=True)
class Link:
    target: str


Spec = dict[str, File | Dir | Link]


def build_tree(root: Path, spec: Spec) -> Path:
    """Create ``spec`` (relative path → node) under ``root``; parents are made as needed."""
    root.mkdir(parents=True, exist_ok=True)
    dirs: list[tuple[Path, Dir]] = []
    for rel, node in sorted(spec.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(node, File):
            path.write_bytes(node.data)
            os.chmod(path, node.mode)
            os.utime(path, ns=(node.mtime_ns, node.mtime_ns))
        elif isinstance(node, Dir):
            path.mkdir(exist_ok=True)
            dirs.append((path, node))
        else:
            os.symlink(node.target, path)
    for path, node in sorted(dirs, key=lambda d: -len(d[0].parts)):
        os.chmod(path, node.mode)
        os.utime(path, ns=(node.mtime_ns, node.mtime_ns))
    return root


def snapshot(root: Path, *, with_dir_times: bool = True) -> dict[str, tuple[object, ...]]:
    """Describe everything under ``root`` but ``archives/`` and ``.runarchive/``, byte-exactly."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in EXCLUDED]
            filenames = [f for f in filenames if f not in EXCLUDED]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                when = st.st_mtime_ns if with_dir_times else 0
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), when)
            else:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                out[rel] = ("file", digest, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Map every regular file path under ``root`` to its content.

    A top-level ``.runarchive/`` (our lock and journal inside ``archives/``) is left out: the
    archives a test compares are the zips, and the lock file is (re)made by every operation.
    """
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.relative_to(root).parts[0] != ".runarchive"
    }


def archive_files(folder: Path) -> list[str]:
    """Return the names in an ``archives/`` folder but our own state folder, sorted."""
    return sorted(n for n in os.listdir(folder) if n != ".runarchive")
