"""The restore preview against the restore itself: for random edits of a run and random chosen
paths, what ``preview_restore`` counts is exactly what ``restore_archive`` then does to the
files on disk (restored, changed, removed), so the confirm cannot promise another rule."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from runarchive.core import create_archive, preview_restore, restore_archive
from tests.support.tree import Dir, File, Link, Spec, build_tree

RUN: Spec = {
    "README.md": File(b"# run\n"),
    "wepp": Dir(),
    "wepp/output": Dir(),
    **{f"wepp/output/H{i}.pass.dat": File(b"pass %d\n" % i * (i + 3)) for i in range(8)},
    "wepp/runs": Dir(),
    **{f"wepp/runs/p{i}.run": File(b"run %d\n" % i) for i in range(5)},
    "climate": Dir(),
    "climate/a.cli": File(b"climate\n" * 40),
    "latest": Link("wepp/output"),
}


def _files(run: Path) -> dict[str, bytes | str]:
    """Every file's bytes and every link's text below the run (archives/ aside)."""
    out: dict[str, bytes | str] = {}
    for path in run.rglob("*"):
        rel = path.relative_to(run).as_posix()
        if rel.split("/", 1)[0] == "archives":
            continue
        if path.is_symlink():
            out[rel] = str(path.readlink())
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


def _edit(run: Path, rng: random.Random) -> None:
    files = sorted(p for p in run.rglob("*") if p.is_file() and not p.is_symlink()
                   and "archives" not in p.relative_to(run).parts)  # fmt: skip
    for path in rng.sample(files, rng.randint(1, 6)):
        if not path.exists():
            continue
        choice = rng.choice(("delete", "grow", "same size", "touch"))
        if choice == "delete":
            path.unlink()
        elif choice == "grow":
            path.write_bytes(path.read_bytes() + b"+")
        elif choice == "same size":
            path.write_bytes(path.read_bytes()[::-1] if len(path.read_bytes()) > 1 else b"\xff")
        else:
            path.write_bytes(path.read_bytes())  # a new mtime only: no change to count
    for i in range(rng.randint(1, 3)):
        folder = rng.choice(("", "wepp/output/", "wepp/runs/", "climate/"))
        (run / f"{folder}new-{i}.txt").write_bytes(b"n" * rng.randint(1, 500))


@pytest.mark.parametrize("seed", range(12))
def test_the_preview_counts_what_the_restore_then_does(run_dir: Path, seed: int) -> None:
    rng = random.Random(seed)
    build_tree(run_dir, RUN)
    name = create_archive(run_dir).name
    _edit(run_dir, rng)
    chosen = rng.choice([None, ["wepp/output/"], ["README.md", "wepp/runs/"], ["climate/a.cli"]])
    preview = preview_restore(run_dir, name, paths=chosen)
    before = _files(run_dir)

    restore_archive(run_dir, name, paths=chosen)

    after = _files(run_dir)
    restored = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert preview.restores.files == len(restored), (restored, preview)
    assert preview.restores.bytes == sum(
        len(after[p]) for p in restored if isinstance(after[p], bytes)
    )
    assert preview.changes.files == len(changed), (changed, preview)
    assert preview.changes.bytes == sum(
        len(after[p]) for p in changed if isinstance(after[p], bytes)
    )
    assert preview.removes_files == len(removed), (removed, preview)
    assert preview.removes_bytes == sum(
        len(before[p]) for p in removed if isinstance(before[p], bytes)
    )
    assert set(preview.sample) <= set(removed) and len(preview.sample) == min(20, len(removed))
    if chosen is None:
        untouched = len([p for p in after if p not in restored and p not in changed])
        assert preview.unchanged == untouched
    if chosen is None:
        assert preview.paths is None
    else:
        assert sorted(preview.paths or []) == sorted(chosen)
