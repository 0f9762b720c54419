"""A WEPPcloud-like host app with runarchive mounted by ``init_app``: the browser tests' host.

The host is the documented example (``docs/examples/host_app.py``), served the way its docs
say: a WSGI entry point of our own (``create_host``) under gunicorn with runarchive's hooks::

    gunicorn -c python:runarchive.web.gunicorn_hooks --worker-class gthread --threads 8 \\
        'tests.web.wepp_host:create_host()'

in a process of its own, so a test can stop and start it mid-job. What the example lacks, a
WEPPcloud host has, and this entry point adds it the way a host would:

* a console page of the host (``/runs/<runid>/<config>/archive-console``, login required):
  ``tests/web/wepp_client/console.html`` rendered by the host with the host's flask-wtf CSRF
  token in ``<meta name="csrf-token">`` and every URL under the mount prefix;
* an access policy taking ``config=`` (WEPPcloud's URLs carry a config segment) that decides
  as the example's does and writes each call to ``HOST_POLICY_LOG`` (JSON lines), so the test
  can see what the host was told.

The environment names the deployment: ``REDIS_URL``, ``RUNARCHIVE_*`` (runs root, queue, key
prefix, data dir, ping interval), ``HOST_SECRET_KEY``, and the host's one user: ``HOST_USER``
with ``HOST_PASSWORD``, owning the runs listed in ``HOST_RUNS`` (comma-separated).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

from flask import Flask, Response, render_template_string, url_for
from flask_login import login_required  # type: ignore[import-untyped]
from flask_wtf.csrf import generate_csrf  # type: ignore[import-untyped]
from werkzeug.security import generate_password_hash

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "host_app.py"
CLIENT = Path(__file__).with_name("wepp_client")
PREFIX = "/archive-svc"  # the example's mount prefix
CONSOLE = "/runs/<runid>/<config>/archive-console"

_log_lock = threading.Lock()


def load_example() -> ModuleType:
    """Import ``docs/examples/host_app.py`` as it is."""
    spec = importlib.util.spec_from_file_location("host_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def create_host() -> Flask:
    """Build the host from the environment (gunicorn calls this in each worker)."""
    example = load_example()
    runs = {r for r in os.environ.get("HOST_RUNS", "").split(",") if r}
    user = example.HostUser(
        os.environ["HOST_USER"], generate_password_hash(os.environ["HOST_PASSWORD"]), runs
    )
    log = Path(os.environ["HOST_POLICY_LOG"])

    def policy(runid: str, *, config: str | None = None) -> str | None:
        """The example's decision, and a record of what the host was asked."""
        with _log_lock, log.open("a") as out:
            out.write(json.dumps({"runid": runid, "config": config}) + "\n")
        decision: str | None = example.access_policy(runid)
        return decision

    app: Flask = example.create_app({user.id: user}, policy=policy)
    template = (CLIENT / "console.html").read_text()

    @app.get(CONSOLE)
    @login_required  # type: ignore[untyped-decorator]
    def archive_console(runid: str, config: str) -> str:
        return render_template_string(
            template,
            csrf=generate_csrf(),  # the host's token, in the host's session
            script=url_for("console_script"),
            prefix=PREFIX,
            runid=runid,
            config=config,
        )

    @app.get("/host-static/console.js")
    def console_script() -> Response:
        return Response((CLIENT / "console.js").read_text(), mimetype="text/javascript")

    return app
