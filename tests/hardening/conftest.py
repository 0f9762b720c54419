"""Fixtures of the hardening suite: the web tests' deployment (real valkey, app, users, workers).

The module-scoped ``web`` app, the ``live`` server and the ``workers`` pool are the web
suite's own (``tests/web/conftest.py``); registered here so the hardening tests attack exactly
the app the product builds. Tests that stop Redis start their own embedded valkey. Deployment
builders the tests call themselves are in ``tests/support/web.py`` and ``workers.py``.
"""

from __future__ import annotations

from tests.web.conftest import live, web, workers

__all__ = ["live", "web", "workers"]
