"""gunicorn server hooks that stop runarchive's websockets with the worker: serve's, and hosts'.

An open status websocket is a request that never ends. Stopping a gthread worker (SIGTERM)
lets in-flight requests finish for up to ``graceful_timeout`` (30 s by default), so without
these hooks every page watching a run holds the stop for the whole timeout, then the arbiter
kills the worker and the pages see their sockets cut (close 1006) instead of told to come back.
With them, SIGTERM (and a quick stop, SIGINT/SIGQUIT) first hangs up every websocket of the
worker with 1001 ("going away": StatusStream and our dashboard reconnect with backoff, to the
restarted or another server), so the worker stops as soon as its plain requests are done; at
the worker's exit runarchive's Redis and database connections are closed.

``runarchive serve`` installs them itself. A host app that mounts runarchive with ``init_app``
and runs under gunicorn uses this module as its config, or imports the three hooks into its
own config file (calling them from hooks of its own if it has some)::

    gunicorn -c python:runarchive.web.gunicorn_hooks --worker-class gthread --threads 8 \\
        'wsgi:app'

    # or, in the host's gunicorn.conf.py
    from runarchive.web.gunicorn_hooks import post_worker_init, worker_exit, worker_int

gunicorn reads only its own setting names from a config module, so the imports here are
ignored. The worker's WSGI callable must be the Flask app itself (wrap ``app.wsgi_app``, not
``app``, in middleware), which is how the hooks find its relay; for any other callable they do
nothing. Tested with a host under gunicorn: ``tests/web/test_wepp_browser.py`` (``[host]``).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from flask import Flask

from .app import shutdown
from .websocket import RELAY


def _stop_relay_soon(app: Any) -> None:
    relay = getattr(app, "extensions", {}).get(RELAY)
    if relay is not None:  # never block inside a signal handler
        threading.Thread(target=relay.stop, name="relay-stop", daemon=True).start()


def post_worker_init(worker: Any) -> None:
    """Adjust the worker's signals: websockets hung up on SIGTERM, one quick stop only.

    Ctrl-C in a terminal signals the whole process group, so a worker got SIGINT from the
    terminal and then SIGQUIT from the arbiter. gunicorn's gthread worker re-entered its quit
    handler while the first call held the thread pool's shutdown lock and deadlocked until the
    arbiter killed it after the graceful timeout (seen twice in about fifteen stops). Workers now
    leave SIGINT to the arbiter and act on the first quit only.
    """
    app = worker.wsgi
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        _stop_relay_soon(app)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quit_handler = signal.getsignal(signal.SIGQUIT)
    quitting: list[int] = []

    def on_quit(signum: int, frame: FrameType | None) -> None:
        if quitting:
            return
        quitting.append(signum)
        if callable(quit_handler):
            quit_handler(signum, frame)

    signal.signal(signal.SIGQUIT, on_quit)


def worker_int(worker: Any) -> None:
    """On SIGINT/SIGQUIT (quick stop), hang up the worker's websockets."""
    _stop_relay_soon(worker.wsgi)


def worker_exit(server: Any, worker: Any) -> None:
    """Close runarchive's websockets, Redis and database connections as the worker exits."""
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        shutdown(app)
