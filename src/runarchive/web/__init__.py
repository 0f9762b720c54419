"""The web service: archive dashboard, JSON API, websocket status relay, accounts and access.

``create_app(test_config=None)`` builds the Flask app (``app.py``); ``runarchive serve``
(``server.py``) runs it under gunicorn. ``init_app(app, url_prefix=…, access_policy=…)``
mounts the same service in a host Flask application (``docs/integration.md`` §1). The
package itself imports nothing heavy, so the ``runarchive`` command line (which registers
``commands.py``) starts quickly; Flask, SQLAlchemy and gunicorn are imported when an app is
built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from runarchive.jobs import Settings

    from .mount import Mount
    from .settings import WebSettings

__all__ = ["create_app", "init_app", "shutdown"]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment; ``test_config`` overrides (see ``app.create_app``)."""
    from .app import create_app as build

    return build(test_config)


def init_app(
    app: Flask,
    *,
    url_prefix: str = "",
    access_policy: Callable[[str], str | None] | None = None,
    settings: Settings | None = None,
    web_settings: WebSettings | None = None,
    home_endpoint: str | None = None,
) -> Mount:
    """Mount runarchive on host app ``app`` under ``url_prefix`` (see ``app.init_app``)."""
    from .app import init_app as mount

    return mount(
        app,
        url_prefix=url_prefix,
        access_policy=access_policy,
        settings=settings,
        web_settings=web_settings,
        home_endpoint=home_endpoint,
    )


def shutdown(app: Flask) -> None:
    """Hang up the app's websockets and close its Redis and database connections."""
    from .app import shutdown as close

    close(app)
