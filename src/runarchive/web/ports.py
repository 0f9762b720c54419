"""Checking a listening port before start-up, and naming the process that holds it.

Why by hand: the start-up must fail *before* it prints a login banner and starts Redis and a
worker, with one line that says who holds the port; gunicorn only reports "Connection in use"
after retrying for several seconds. Linux's ``/proc/net/tcp*`` and ``/proc/<pid>/fd`` give the
holder without extra tools (``ss``/``lsof`` may be missing); elsewhere the holder stays unnamed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket

from runarchive.core import InvalidInput

_LISTEN = "0A"


def require_free_port(host: str, port: int) -> None:
    """Raise InvalidInput naming the holder when ``host:port`` cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise InvalidInput(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
            holder = port_holder(port)
            who = f" by {holder}" if holder else ""
            raise InvalidInput(
                f"Port {port} on {host} is already in use{who}. Stop it, or choose another "
                f"port: `make run PORT={port + 1}` (or `runarchive serve --port {port + 1}`)."
            ) from None


def port_holder(port: int) -> str | None:
    """Return "process <pid> (<name>)" listening on TCP ``port``, or None if unknown."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                listening = len(fields) > 9 and fields[3] == _LISTEN
                if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        with open(f"/proc/{pid}/comm") as comm:
                            return f"process {pid} ({comm.read().strip()})"
    return "another process"
