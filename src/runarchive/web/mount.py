"""Where runarchive is mounted in a Flask app, and whose login it uses.

``app.init_app`` records one ``Mount`` per app (``app.extensions``, and the ``runarchive``
Jinja global for the templates). Everything that depends on the mounting reads it here:

* ``own_login`` — runarchive's own accounts, login form and session (``create_app``, or a host
  that gives no access policy), or the host's (a host with an access policy: our login
  blueprint is not registered, anonymous browsers go to the host's login view);
* ``own_app`` — the whole app is runarchive's (``create_app``): its error pages and security
  headers then cover every URL; in a host only our blueprints' requests get them;
* ``home_endpoint`` — where "Runs" links go: our runs page, or the host's own list.

Templates and static files live under the ``runarchive`` blueprint: templates as
``runarchive/<name>`` (a host's own ``base.html`` cannot shadow ours), static files at
``<prefix>/static/…`` (endpoint ``runarchive.static``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, current_app, request
from jinja2 import BaseLoader, FileSystemLoader, PrefixLoader
from werkzeug.utils import cached_property

EXTENSION = "runarchive.mount"
TEMPLATE_PREFIX = "runarchive"
PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Mount:
    """How runarchive is mounted in one app."""

    url_prefix: str
    own_login: bool
    own_app: bool
    home_endpoint: str
    blueprints: frozenset[str] = frozenset()  # the names of the blueprints we registered


class _Assets(Blueprint):
    """Our static files, and our templates under the ``runarchive/`` name prefix."""

    @cached_property
    def jinja_loader(self) -> BaseLoader | None:
        return PrefixLoader({TEMPLATE_PREFIX: FileSystemLoader(PACKAGE / "templates")})


assets = _Assets(
    "runarchive", __name__, static_folder=str(PACKAGE / "static"), static_url_path="/static"
)


def template(name: str) -> str:
    """Return the loader name of our template ``name`` (e.g. ``archive/dashboard.html``)."""
    return f"{TEMPLATE_PREFIX}/{name}"


def mount() -> Mount:
    """Return the current app's mount."""
    found: Mount = current_app.extensions[EXTENSION]
    return found


def is_ours() -> bool:
    """Tell whether the current request is for runarchive (always, when the app is ours)."""
    found = mount()
    return found.own_app or request.blueprint in found.blueprints
