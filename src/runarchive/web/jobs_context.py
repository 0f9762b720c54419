"""The lazily opened jobs context behind one app: its settings and, on first use, its Redis clients.

The context is opened lazily and per process: gunicorn builds the app in each worker after the
fork, and an app must start (and answer ``/healthz`` with 503) while Redis is still down. A
failed open is retried on the next request.
"""

from __future__ import annotations

import threading

from flask import Flask, current_app

from runarchive.jobs import JobsContext, Recorder, Settings

EXTENSION = "runarchive.deployment"


class Deployment:
    """Jobs settings plus the lazily opened ``JobsContext``."""

    def __init__(self, settings: Settings, recorder: Recorder | None = None) -> None:
        self.settings = settings
        self.recorder = recorder  # the app's audit log: a job end seen here is recorded there
        self._ctx: JobsContext | None = None
        self._lock = threading.Lock()

    def context(self) -> JobsContext:
        """Return the open context (opening it now; QueueUnavailable if Redis cannot be found)."""
        ctx = self._ctx
        if ctx is None:
            with self._lock:
                if self._ctx is None:
                    opened = JobsContext.from_settings(self.settings)
                    opened.recorder = self.recorder
                    self._ctx = opened
                ctx = self._ctx
        return ctx

    def close(self) -> None:
        """Close the Redis clients, if opened."""
        with self._lock:
            if self._ctx is not None:
                self._ctx.close()
                self._ctx = None


def init_app(app: Flask, settings: Settings, recorder: Recorder | None = None) -> Deployment:
    """Attach the deployment of ``settings`` (its audit events to ``recorder``) to ``app``."""
    deployment = Deployment(settings, recorder)
    app.extensions[EXTENSION] = deployment
    return deployment


def deployment() -> Deployment:
    """Return the current app's deployment."""
    found: Deployment = current_app.extensions[EXTENSION]
    return found


def jobs() -> JobsContext:
    """Return the current app's jobs context (opened on first use)."""
    return deployment().context()
