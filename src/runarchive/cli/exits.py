"""The CLI's exit codes, the one map from the library's errors to a process status.

0 success; 1 the operation failed (damage found, unsafe archive, no space, Redis configured but
unreachable…); 2 bad input (arguments, names, a short password); 3 refused because something
holds the run (another operation, a job, the host's ``.nodb`` locks, a read-only marker, a job
past the point of canceling) or the archive is pinned; 5 ``scrub`` checked every archive and
found damage.
past the point of canceling) or the archive is pinned; 4 refused by an archive quota (waiting
does not help: delete or prune archives, or ask an admin).

The library names its errors (each class's ``code``); the codes are looked up along the error's
class hierarchy, so a subclass with a name of its own (``job_running`` is a ``busy``) maps like
its parent unless it is listed. By name rather than by class, so that this module imports
nothing: the local commands must start without the jobs layer (RQ, redis-py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from runarchive.core import RunArchiveError

FAILED = 1
BAD_INPUT = 2
REFUSED = 3
DAMAGE_FOUND = 5  # ``scrub`` ran and found a damaged archive (not an error of the command)
QUOTA = 4

EXIT_CODES: dict[str, int] = {
    "invalid_input": BAD_INPUT,
    "busy": REFUSED,  # and job_running, its subclass
    "read_only": REFUSED,
    "pinned": REFUSED,  # delete of a pinned archive: unpin it first
    "locked": REFUSED,
    "not_cancelable": REFUSED,
    "nothing_to_undo": REFUSED,
    "run_exists": BAD_INPUT,  # a fork's new run: name another folder
    "quota_exceeded": QUOTA,
}


def exit_code_of(exc: RunArchiveError) -> int:
    """Return the process status for ``exc``."""
    for cls in type(exc).__mro__:
        code = vars(cls).get("code")
        if isinstance(code, str) and code in EXIT_CODES:
            return EXIT_CODES[code]
    return FAILED


def exit_with(exc: RunArchiveError) -> NoReturn:
    """End the process with ``exc``'s status."""
    sys.exit(exit_code_of(exc))


@contextmanager
def reporting(as_json: bool = False, *, detail: bool = True) -> Iterator[None]:
    """Print a library error as ``error: …`` on stderr (or a JSON document) and exit with its code.

    With ``detail`` the operator also sees what clients may not (``QueueUnavailable.detail``:
    where Redis was expected); the service commands' default.
    """
    try:
        yield
    except RunArchiveError as exc:
        extra = getattr(exc, "detail", "") if detail else ""
        message = f"{exc} ({extra})" if extra else str(exc)
        if as_json:
            import json  # here: start-up loads no json (a local command's success needs none)

            click.echo(json.dumps({"error": {"code": exc.code, "message": message}}))
        else:
            click.echo(f"error: {message}", err=True)
        exit_with(exc)
