"""Faults from the machine: a full disk, a file-size limit, files we may not read.

Disk full is produced for real: ``RLIMIT_FSIZE`` in a child process (writes past the limit
fail with EFBIG; SIGXFSZ is ignored so the child sees the error instead of dying) and small
tmpfs mounts. Permission faults need a user that file modes apply to: the tests run as root,
whose CAP_DAC_OVERRIDE ignores ``chmod 000``, and the project's interpreter lives under
``/root`` (mode 0700), so ``nobody`` cannot start it. The CLI therefore runs as root with
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH removed from its bounding set (``setpriv``), which
makes permission bits bind it exactly as they bind an ordinary user.

Every case checks that the error is clean (exit code 1, a message naming the problem, no
traceback), that the run and its existing archives are unchanged, and that no temp file,
stage or journal is left behind.
"""

from __future__ import annotations

import os
import random
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runarchive.core import (
    NoSpace,
    RunArchiveError,
    create_archive,
    list_archives,
    restore_archive,
)
from runarchive.core.create import FORK_MIN_ENTRIES
from tests.support.journal import leftovers
from tests.support.tree import (
    Dir,
    File,
    Link,
    Spec,
    archive_files,
    build_tree,
    snapshot,
    tree_bytes,
)
from tests.support.zipcraft import build_zip, file, place

pytestmark = pytest.mark.slow

RUNID = "ambitious-pinecone"
MIB = 1 << 20
RNG = random.Random(1234)
NOISE_3M = RNG.randbytes(3 * MIB)

OLD: Spec = {
    "notes.txt": File(b"old notes\n"),
    "wepp": Dir(),
    "wepp/H1.pass.dat": File(b"1 2 3\n" * 500),
    "latest": Link("wepp/H1.pass.dat"),
}
NEW: Spec = {
    "notes.txt": File(b"new notes\n"),
    "wepp": Dir(),
    "wepp/H1.pass.dat": File(b"4 5 6\n" * 500),
    "wepp/H2.pass.dat": File(b"7 8 9\n" * 500),
    "rasters": Dir(),
    "rasters/dem.bin": File(NOISE_3M),
}


def cli_command(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "runarchive"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from runarchive.cli import main; main()", *args]


def run_cli(
    *args: str, preexec_fn: Callable[[], None] | None = None, unprivileged: bool = False
) -> subprocess.CompletedProcess[str]:
    cmd = cli_command(*args)
    if unprivileged:
        cmd = without_dac_override(cmd)
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=env, preexec_fn=preexec_fn
    )


def limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def assert_clean_failure(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert re.search(pattern, proc.stderr, re.IGNORECASE), proc.stderr


def assert_no_leftovers(run: Path) -> None:
    archives = run / "archives"
    if archives.exists():
        assert [n for n in archive_files(archives) if n.startswith(".")] == []
    assert leftovers(run) == []


def replace_content(run: Path, spec: Spec) -> None:
    for name in os.listdir(run):
        if name in ("archives", ".runarchive"):
            continue
        path = run / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    build_tree(run, spec)


# ---------------------------------------------------------------------------------------------
# File-size limit (EFBIG) in a child process
# ---------------------------------------------------------------------------------------------


def test_file_size_limit_while_creating_gives_clean_error_and_keeps_nothing(
    run_dir: Path,
) -> None:
    build_tree(run_dir, NEW)
    first = create_archive(run_dir, "before the fault").name
    before, archives = snapshot(run_dir), tree_bytes(run_dir / "archives")

    proc = run_cli("archive", str(run_dir), preexec_fn=limit_file_size(MIB))

    assert_clean_failure(proc, r"disk space|too large")
    assert snapshot(run_dir) == before
    assert tree_bytes(run_dir / "archives") == archives
    assert [a.name for a in list_archives(run_dir)] == [first]
    assert_no_leftovers(run_dir)


def test_file_size_limit_while_restoring_gives_clean_error_and_keeps_the_run(
    run_dir: Path,
) -> None:
    build_tree(run_dir, NEW)
    name = create_archive(run_dir).name
    replace_content(run_dir, OLD)
    before, archives = snapshot(run_dir), tree_bytes(run_dir / "archives")

    proc = run_cli("restore", str(run_dir), name, preexec_fn=limit_file_size(MIB))

    assert_clean_failure(proc, r"disk space|too large")
    assert "unchanged" in proc.stderr
    assert snapshot(run_dir) == before
    assert tree_bytes(run_dir / "archives") == archives
    assert_no_leftovers(run_dir)


LIBRARY_UNDER_LIMIT = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    from runarchive.core import create_archive, restore_archive
    run = Path(sys.argv[1])
    try:
        if len(sys.argv) > 2:
            restore_archive(run, sys.argv[2])
        else:
            create_archive(run)
    except Exception as exc:
        print(type(exc).__name__)
    """
)


@pytest.mark.parametrize("op", ["create", "restore"])
def test_file_size_limit_surfaces_as_no_space_error(run_dir: Path, op: str) -> None:
    """Callers (the web layer answers NoSpace with 503) must be able to tell a full disk apart."""
    build_tree(run_dir, NEW)
    args = [str(run_dir)]
    if op == "restore":
        args.append(create_archive(run_dir).name)
        replace_content(run_dir, OLD)

    proc = subprocess.run(
        [sys.executable, "-c", LIBRARY_UNDER_LIMIT, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.stdout.split() == ["NoSpace"], proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# Small tmpfs mounts: a real full disk
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], Path]]:
    """Mount tmpfs file systems of a given size in MiB; unmount them afterwards.

    The free-space reserve (1 GiB by default) is switched off here, for this process and the
    CLI it starts: these tests are about what happens when the disk itself runs out.
    """
    monkeypatch.setenv("RUNARCHIVE_RESERVE_BYTES", "0")
    monkeypatch.setenv("RUNARCHIVE_RESERVE_PERCENT", "0")
    if os.geteuid() != 0:
        pytest.skip("mounting tmpfs needs root")
    mounted: list[Path] = []

    def mount(size_mib: int) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount tmpfs: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _archive_elsewhere(tmp_path: Path, spec: Spec) -> Path:
    """Create an archive of ``spec`` in a run on the normal disk and return its path."""
    run = tmp_path / "elsewhere" / RUNID
    build_tree(run, spec)
    return create_archive(run).path


def test_create_refuses_up_front_when_the_disk_is_clearly_too_small(
    small_fs: Callable[[int], Path],
) -> None:
    run = small_fs(8) / RUNID
    build_tree(run, {"scan.tif": File(RNG.randbytes(5 * MIB)), "notes.txt": File(b"n\n")})
    before = snapshot(run)

    with pytest.raises(NoSpace, match="Not enough disk space to create the archive"):
        create_archive(run)
    proc = run_cli("archive", str(run))

    assert_clean_failure(proc, "Not enough disk space")
    assert snapshot(run) == before
    assert archive_files(run / "archives") == []
    assert_no_leftovers(run)


def test_create_running_out_of_space_midway_raises_no_space_and_keeps_nothing(
    small_fs: Callable[[int], Path],
) -> None:
    # Random bytes under a compressible-looking name: the estimate (a third) passes the
    # up-front check, the real archive (stored, full size) does not fit.
    run = small_fs(8) / RUNID
    build_tree(run, {"blob.dat": File(RNG.randbytes(4 * MIB + MIB // 2))})
    before = snapshot(run)

    with pytest.raises(RunArchiveError, match="disk space") as caught:
        create_archive(run)
    proc = run_cli("archive", str(run))

    assert_clean_failure(proc, "disk space")
    assert snapshot(run) == before
    assert archive_files(run / "archives") == []
    assert_no_leftovers(run)
    assert isinstance(caught.value, NoSpace), f"{type(caught.value).__name__}: {caught.value}"


def test_restore_of_a_large_archive_into_a_nearly_full_disk_is_refused_up_front(
    small_fs: Callable[[int], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNARCHIVE_MAX_RATIO", "5000")  # zeros: let the space check refuse
    archive = _archive_elsewhere(tmp_path, {"zeros.bin": File(bytes(24 * MIB))})
    run = small_fs(8) / RUNID
    build_tree(run, OLD)
    (run / "archives").mkdir()
    shutil.copy(archive, run / "archives" / archive.name)
    before, archives = snapshot(run), tree_bytes(run / "archives")

    with pytest.raises(NoSpace, match="Not enough disk space to restore"):
        restore_archive(run, archive.name)
    proc = run_cli("restore", str(run), archive.name)

    assert_clean_failure(proc, "Not enough disk space")
    assert snapshot(run) == before
    assert tree_bytes(run / "archives") == archives
    assert_no_leftovers(run)


def test_restore_running_out_of_space_midway_raises_no_space_and_keeps_the_run(
    small_fs: Callable[[int], Path], tmp_path: Path
) -> None:
    # 6,000 one-byte files pass the byte-count check but need a 4 KiB page each.
    run = small_fs(20) / RUNID
    build_tree(run, OLD)
    many = [file(f"d{i // 100:02}/f{i:04}.txt", b"x") for i in range(6000)]
    name = place(run, build_zip(many))
    before, archives = snapshot(run), tree_bytes(run / "archives")

    with pytest.raises(RunArchiveError, match="disk space") as caught:
        restore_archive(run, name)

    assert "unchanged" in str(caught.value)
    assert snapshot(run) == before
    assert tree_bytes(run / "archives") == archives
    assert_no_leftovers(run)
    assert shutil.disk_usage(run).used < 2 * MIB  # the stage is really gone
    assert isinstance(caught.value, NoSpace), f"{type(caught.value).__name__}: {caught.value}"


# ---------------------------------------------------------------------------------------------
# Permissions: files and folders the operator may not read or write
# ---------------------------------------------------------------------------------------------


def without_dac_override(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd]


@pytest.fixture
def permissions_bind(tmp_path: Path) -> None:
    """Skip unless a chmod 000 file really cannot be read by the unprivileged command."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to drop CAP_DAC_OVERRIDE")
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    if (
        subprocess.run(without_dac_override(["cat", str(probe)]), capture_output=True).returncode
        == 0
    ):
        pytest.skip("permission bits do not bind here")


@pytest.mark.usefixtures("permissions_bind")
def test_unreadable_file_fails_create_cleanly_and_leaves_no_archive(run_dir: Path) -> None:
    build_tree(run_dir, NEW | {"wepp/secret.dat": File(b"classified\n")})
    first = create_archive(run_dir).name
    archives = tree_bytes(run_dir / "archives")
    (run_dir / "wepp" / "secret.dat").chmod(0)

    proc = run_cli("archive", str(run_dir), unprivileged=True)

    assert_clean_failure(proc, r"secret\.dat.*permission denied")
    assert tree_bytes(run_dir / "archives") == archives
    assert [a.name for a in list_archives(run_dir)] == [first]
    assert_no_leftovers(run_dir)
    assert (run_dir / "wepp" / "secret.dat").stat().st_mode & 0o777 == 0


@pytest.mark.usefixtures("permissions_bind")
def test_an_unreadable_file_read_by_a_worker_process_fails_create_cleanly(run_dir: Path) -> None:
    # Enough small files for the worker processes: the permission error is raised in a
    # worker, sent to the parent and reported as the threads' one is.
    many = {f"wepp/out/f{i:04}.txt": File(b"%d\n" % i) for i in range(FORK_MIN_ENTRIES)}
    build_tree(run_dir, NEW | many | {"wepp/out/secret.dat": File(b"classified\n")})
    (run_dir / "wepp" / "out" / "secret.dat").chmod(0)
    before = snapshot(run_dir)

    proc = run_cli("archive", str(run_dir), unprivileged=True)

    assert_clean_failure(proc, r"secret\.dat.*permission denied")
    assert snapshot(run_dir) == before
    assert list_archives(run_dir) == []
    assert_no_leftovers(run_dir)


@pytest.mark.usefixtures("permissions_bind")
def test_unreadable_folder_fails_create_cleanly_and_leaves_no_archive(run_dir: Path) -> None:
    build_tree(run_dir, NEW | {"private/data.txt": File(b"hidden\n"), "private": Dir(0)})
    before = snapshot(run_dir)

    proc = run_cli("archive", str(run_dir), unprivileged=True)

    assert_clean_failure(proc, r"private.*permission denied|permission denied.*private")
    assert snapshot(run_dir) == before
    assert list_archives(run_dir) == []
    assert_no_leftovers(run_dir)


@pytest.mark.usefixtures("permissions_bind")
def test_unprivileged_restore_swaps_read_only_top_level_folders(run_dir: Path) -> None:
    read_only = {"inputs": Dir(0o555), "inputs/soil.sol": File(b"soil\n", mode=0o444)}
    build_tree(run_dir, NEW | read_only)
    wanted = snapshot(run_dir)
    name = create_archive(run_dir).name
    (run_dir / "notes.txt").write_bytes(b"edited after archiving\n")

    proc = run_cli("restore", str(run_dir), name, unprivileged=True)

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert snapshot(run_dir) == wanted
    assert_no_leftovers(run_dir)


@pytest.mark.usefixtures("permissions_bind")
def test_unprivileged_restore_keeps_modes_of_unchanged_files_in_read_only_folders(
    run_dir: Path,
) -> None:
    nested = {"data": Dir(), "data/ro": Dir(0o555), "data/ro/keep.txt": File(b"keep\n")}
    build_tree(run_dir, NEW | nested)
    wanted = snapshot(run_dir)
    name = create_archive(run_dir).name
    (run_dir / "notes.txt").write_bytes(b"edited after archiving\n")

    proc = run_cli("restore", str(run_dir), name, unprivileged=True)

    assert proc.returncode == 0, proc.stderr[-2000:]
    mode = stat.S_IMODE(os.stat(run_dir / "data" / "ro" / "keep.txt").st_mode)
    assert oct(mode) == oct(0o644)
    assert snapshot(run_dir) == wanted
    assert_no_leftovers(run_dir)
