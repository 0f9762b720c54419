"""File-system hints on real filesystems: the ext4 spread flag is set where supported, and
ignored where it is not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runarchive.core.fsutil import spread_subfolders

SHM = Path("/dev/shm")


def spread(folder: Path, on: bool = True) -> bool:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return spread_subfolders(fd, on)
    finally:
        os.close(fd)


def attributes(path: Path) -> str:
    out = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def filesystem(path: Path) -> str:
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_spread_hint_is_set_on_ext4(tmp_path: Path) -> None:
    folder = tmp_path / "scratch"
    folder.mkdir()
    took = spread(folder)
    # ext2/ext3/ext4 all report "ext2/ext3" here and all honour the flag.
    assert took == (filesystem(folder) == "ext2/ext3"), filesystem(folder)
    if took:
        assert "T" in attributes(folder)
        (folder / "sub").mkdir()  # folders under it are still made as usual
        assert (folder / "sub").is_dir()
        assert spread(folder, on=False)
        assert "T" not in attributes(folder)


def test_the_spread_hint_is_ignored_where_unsupported(tmp_path: Path) -> None:
    folder = SHM / f"runarchive-{tmp_path.name}"
    folder.mkdir()
    try:
        assert filesystem(folder) == "tmpfs"
        assert spread(folder) is False
    finally:
        folder.rmdir()
