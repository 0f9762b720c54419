"""The hostile-run world: a victim's run beside an attacker's, and secrets around them.

The attacker may write anything (files, links, fifos) into their own run, our ``.runarchive/``
state folder and ``archives/`` included. After every attack the tests check that the victim's
run, the files outside the runs root and the data dir (accounts SQLite, secret key) are
byte-identical — content, mode bits, file and folder mtimes, link targets — and that nothing
served or printed ever held a secret byte.

Layout of one world (``root`` is a temp folder)::

    root/runs/<victim>/      owned by victor: small files + ``photo.png`` (stored, so its bytes,
                             marker included, appear raw in the victim's archive), one archive
    root/runs/<attacker>/    owned by mallory: a small run with one archive
    root/outside/secret.txt  a file outside the runs root
    root/data/               the accounts SQLite database and ``secret_key``
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.processes import CLI, environment

SQLITE_MAGIC = b"SQLite format 3"
VICTIM_MARK = b"VICTIM-PRIVATE-" + secrets.token_hex(8).encode()


def full_snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Describe everything under ``root`` (``archives/`` and ``.runarchive/`` included)."""
    out: dict[str, tuple[object, ...]] = {}
    if not os.path.lexists(root):
        return out
    top = os.lstat(root)
    out["."] = (stat.S_IFMT(top.st_mode), stat.S_IMODE(top.st_mode), top.st_mtime_ns)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                out[rel] = ("file", digest, mode, st.st_mtime_ns, st.st_size)
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode), mode)
    return out


def make_victim_run(runs: Path, runid: str) -> Path:
    """Write the victim's run: text files, a nested folder and a stored binary with the mark."""
    run = runs / runid
    (run / "output" / "deep").mkdir(parents=True)
    (run / "README.md").write_text("the victim's run\n")
    (run / "output" / "H0.pass.dat").write_bytes(VICTIM_MARK + b"\nvictim data\n" * 100)
    (run / "output" / "deep" / "notes.txt").write_bytes(VICTIM_MARK + b" deep\n")
    (run / "photo.png").write_bytes(VICTIM_MARK + secrets.token_bytes(2048))
    (run / "wepp.nodb").write_text('{"state": "victim"}\n')
    return run


class Secrets:
    """Every byte string that must never reach an attacker."""

    def __init__(self, *needles: bytes) -> None:
        self.needles = [n for n in needles if n]

    def add(self, needle: bytes) -> None:
        self.needles.append(needle)

    def check(self, data: bytes | str, where: str = "") -> None:
        """Fail if ``data`` holds any secret."""
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        for needle in self.needles:
            assert needle not in raw, f"secret bytes {needle[:20]!r}… served ({where})"


def run_cli(
    *args: str | bytes | Path, cwd: Path, timeout: float = 60, stdin: bytes = b"", **env: str
) -> subprocess.CompletedProcess[bytes]:
    """Run ``runarchive ARGS`` as its own process from ``cwd`` (run dirs given relative)."""
    argv: list[str | bytes] = [*CLI, *(a if isinstance(a, bytes) else str(a) for a in args)]
    return subprocess.run(
        argv, cwd=cwd, input=stdin, capture_output=True, timeout=timeout, env=environment(**env)
    )


def json_out(done: subprocess.CompletedProcess[bytes]) -> Any:
    return json.loads(done.stdout)


def within(seconds: float, func: Callable[[], Any], unblock: Callable[[], None]) -> Any:
    """Run ``func`` in a thread; fail (after calling ``unblock``) if it takes over ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    began = time.monotonic()
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        unblock()
        thread.join(10)
        raise AssertionError(f"call still blocked after {time.monotonic() - began:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def unblock_fifo(path: Path) -> Callable[[], None]:
    """Return a function that opens the fifo at ``path`` for writing, releasing a blocked reader."""

    def release() -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return
        os.close(fd)

    return release
