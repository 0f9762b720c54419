"""Small and many-file runs written straight to disk, with ``.nodb`` state files."""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
from pathlib import Path

from runarchive.core import create_archive


def make_small_run(root: Path, runid: str, nodb: tuple[str, ...] = ("wepp.nodb",)) -> Path:
    """Write a small run with a few files, an empty folder and ``.nodb`` state files."""
    run = root / runid
    (run / "output").mkdir(parents=True)
    (run / "empty").mkdir()
    (run / "README.md").write_text("a small run\n")
    for i in range(5):
        (run / "output" / f"H{i}.pass.dat").write_text(f"hillslope {i}\n" * 200)
    for name in nodb:
        path = run / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"state": 1}\n')
    return run


def make_many_files_run(root: Path, runid: str, files: int) -> Path:
    """Write a run of ``files`` small files in 100 folders (fast to generate, slow to archive)."""
    run = root / runid
    per_dir = max(1, files // 100)
    payload = b"x" * 64
    for i in range(files):
        folder = run / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.txt").write_bytes(payload + str(i).encode())
    (run / "wepp.nodb").write_text('{"state": 1}\n')
    return run


def copy_archives(run: Path, stamps: list[str]) -> list[str]:
    """Give ``run`` one real archive per UTC stamp (``YYYYMMDDTHHMMSSZ``), oldest first.

    One archive is made of the run as it is; the others are byte copies of it under our names.
    """
    seed = create_archive(run, "seed").path
    names = []
    for stamp in stamps:
        name = f"{run.name}.{stamp}.zip"
        shutil.copyfile(seed, run / "archives" / name)
        names.append(name)
    seed.unlink()
    return names


def make_mixed_run(root: Path, runid: str, random_bytes: int = 256 * 1024) -> Path:
    """Write a run holding a file the archive stores (random bytes, ``data.bin``) and text
    files it deflates (``output/*.txt``)."""
    run = root / runid
    (run / "output").mkdir(parents=True)
    (run / "data.bin").write_bytes(os.urandom(random_bytes))
    for i in range(3):
        (run / "output" / f"H{i}.txt").write_text(f"hillslope {i} runoff 0.25 mm\n" * 4000)
    (run / "wepp.nodb").write_text('{"state": 1}\n')
    return run


def flip_entry_byte(archive: Path, entry: str, method: int) -> None:
    """Flip one byte in the middle of ``entry``'s data (found with the standard library's
    zipfile, not ours), after checking the entry is compressed with ``method``; the file's
    size stays the same."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(entry)
    assert info.compress_type == method, (entry, info.compress_type)
    with open(archive, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", fh.read(4))
        where = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
        fh.seek(where)
        byte = fh.read(1)
        fh.seek(where)
        fh.write(bytes([byte[0] ^ 0x5A]))
