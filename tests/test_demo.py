"""The demo generator writes realistic, reproducible runs of the size asked for."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import pytest

from runarchive.synthetic_run import NODB_NAMES, GeneratedRun, generate_run

TARGET = 2 * 2**20
FILES = 150


def tree_digest(root: Path) -> str:
    """Hash every path, file content and link target under ``root``, in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest.update(f"L {rel} -> {os.readlink(path)}\n".encode())
        elif path.is_dir():
            digest.update(f"D {rel}\n".encode())
        else:
            digest.update(f"F {rel}\n".encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRun:
    return generate_run(tmp_path_factory.mktemp("demo") / "run", target_bytes=TARGET, files=FILES)


def test_the_same_seed_writes_byte_identical_trees(tmp_path: Path, run: GeneratedRun) -> None:
    again = generate_run(tmp_path / "again", target_bytes=TARGET, files=FILES)
    other = generate_run(tmp_path / "other", seed=1, target_bytes=TARGET, files=FILES)

    assert tree_digest(again.path) == tree_digest(run.path)
    assert tree_digest(other.path) != tree_digest(run.path)


def test_it_writes_about_the_files_and_bytes_asked_for(run: GeneratedRun) -> None:
    regular = [p for p in run.path.rglob("*") if p.is_file() and not p.is_symlink()]

    assert run.files == len(regular)
    assert run.bytes == sum(p.stat().st_size for p in regular)
    assert abs(run.files - FILES) <= FILES * 0.1
    assert abs(run.bytes - TARGET) <= TARGET * 0.1


def test_it_scales_up_to_thousands_of_files(tmp_path: Path) -> None:
    big = generate_run(tmp_path / "big", target_bytes=4 * 2**20, files=3000)

    assert abs(big.files - 3000) <= 300


def test_the_run_has_nodb_state_at_the_top_level(run: GeneratedRun) -> None:
    assert sorted(p.name for p in run.path.glob("*.nodb")) == sorted(
        f"{name}.nodb" for name in NODB_NAMES
    )


def test_rasters_and_parquet_do_not_compress(run: GeneratedRun) -> None:
    opaque = [*run.path.rglob("*.tif"), *run.path.rglob("*.parquet")]
    opaque_bytes = sum(p.stat().st_size for p in opaque)

    assert opaque
    assert 0.05 * run.bytes < opaque_bytes < 0.15 * run.bytes
    for path in opaque:
        data = path.read_bytes()
        assert len(zlib.compress(data, 6)) > 0.95 * len(data), path


def test_model_outputs_compress_like_real_text_output(run: GeneratedRun) -> None:
    data = b"".join(p.read_bytes() for p in sorted(run.path.glob("wepp/output/*.dat")))
    ratio = len(data) / len(zlib.compress(data, 6))

    assert 4 <= ratio <= 8


def test_it_adds_an_internal_relative_symlink_and_empty_folders(run: GeneratedRun) -> None:
    links = [p for p in run.path.rglob("*") if p.is_symlink()]

    assert len(links) == 1
    assert not os.readlink(links[0]).startswith("/")
    assert links[0].resolve().is_relative_to(run.path.resolve())
    assert links[0].resolve().is_file()
    assert any(p.is_dir() and not any(p.iterdir()) for p in run.path.rglob("*"))


def test_it_refuses_a_folder_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")

    with pytest.raises(FileExistsError):
        generate_run(tmp_path, target_bytes=TARGET, files=FILES)
