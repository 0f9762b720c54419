"""The web service: archive dashboard, JSON API, websocket status relay, accounts and access.

``create_app(test_config=None)`` builds the Flask app (``app.py``); ``runarchive serve``
(``server.py``) runs it under gunicorn. The package itself imports nothing heavy, so the
``runarchive`` command line (which registers ``commands.py``) starts quickly; Flask,
SQLAlchemy and gunicorn are imported when an app is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app", "shutdown"]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``test_config`` overrides (see ``app.create_app``)."""
    from .app import create_app as build

    return build(test_config)


def shutdown(app: Flask) -> None:
    """Hang up the app's websockets and close its Redis and database connections."""
    from .app import shutdown as close

    close(app)
