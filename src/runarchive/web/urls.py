"""Every URL the web layer hands out, built in one place (the model: Datasette's ``url_builder``).

Each URL is built by Flask from its endpoint, so a mount prefix (``init_app(url_prefix=…)``) or
a host's blueprint prefix is honoured. Some are handed out as *prefixes* that a client
completes: the dashboard's script appends a job id or an archive name, the list appends each
archive's name to the download prefix. Run ids, archive names and job ids are validated to
characters a URL path keeps as they are, so one ``url_for`` serves every row (``url_for`` per
row was a third of the list's time with 500 archives). A prefix is the URL built with a
placeholder, cut where the placeholder starts (``_prefix``), never by counting characters.

The routes inside one archive take an archive name *and* a path within it, so they are handed
out as *templates* (``_template``): the URL built with placeholders that are then written
``{name}`` and ``{path}``; the page puts in the name and the path, each component
percent-encoded (entry names, unlike run ids and archive names, may hold any character).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app, url_for

from .mount import mount

_PLACEHOLDER = "RUNARCHIVE-PLACEHOLDER"


def _prefix(endpoint: str, field: str, **values: Any) -> str:
    """Return the URL of ``endpoint`` up to where ``field``'s value goes."""
    url = url_for(endpoint, **{**values, field: _PLACEHOLDER})
    head, found, _ = url.partition(_PLACEHOLDER)
    assert found, f"{endpoint} has no {field} in its path"
    return head


def _template(endpoint: str, fields: tuple[str, ...], **values: Any) -> str:
    """Return the URL of ``endpoint`` with ``{field}`` where each of ``fields``' values goes."""
    markers = {field: f"{_PLACEHOLDER}-{field.upper()}" for field in fields}
    url = url_for(endpoint, **{**values, **markers})
    for field, marker in markers.items():
        head, found, tail = url.partition(marker)
        assert found and "?" not in head, f"{endpoint} has no {field} in its path"
        url = head + "{" + field + "}" + tail
    return url


# --- pages ---------------------------------------------------------------------------------


def home() -> str:
    """The page a logged-in user lands on (the mount's home endpoint: our runs, or the host's)."""
    return url_for(mount().home_endpoint)


def dashboard(runid: str) -> str:
    """A run's archive dashboard."""
    return url_for("archive.rq_archive_dashboard", runid=runid)


def dashboard_template() -> str:
    """Any run's archive dashboard, ``{runid}`` where the id goes (a fork links to its run)."""
    return _template("archive.rq_archive_dashboard", ("runid",))


def login(next_page: str | None = None) -> str:
    """Our login form (``next_page``: where to go after logging in)."""
    if next_page is None:
        return url_for("auth.login")
    return url_for("auth.login", next=next_page)


def browser_login() -> str | None:
    """Where a browser logs in: our form, else the host's Flask-Login view, if it has one."""
    if mount().own_login:
        return login()
    view = getattr(getattr(current_app, "login_manager", None), "login_view", None)
    return url_for(view) if isinstance(view, str) else None


# --- the API -------------------------------------------------------------------------------


def archive_list(runid: str) -> str:
    return url_for("archive.rq_archive_list", runid=runid)


def download_prefix(runid: str) -> str:
    """The download URL of a run's archive, without the archive's name at its end."""
    return _prefix("archive.rq_archive_download", "name", runid=runid)


def restore_preview_base(runid: str) -> str:
    """What the page puts ``/<name>/restore-preview`` after (no trailing slash)."""
    return _prefix("archive.rq_restore_preview", "name", runid=runid).removesuffix("/")


def inside_templates(runid: str) -> dict[str, str]:
    """The routes inside one archive of the run, as templates the dashboard fills in."""
    return {
        "entries": _template("inside.rq_archive_entries", ("name",), runid=runid),
        "file": _template("inside.rq_archive_file", ("name", "path"), runid=runid),
        "diff": _template("inside.rq_archive_diff", ("name",), runid=runid),
        "diff_file": _template("inside.rq_archive_diff_file", ("name", "path"), runid=runid),
    }


def start_archive(runid: str) -> str:
    return url_for("rq_api.api_archive", runid=runid)


def start_restore(runid: str) -> str:
    return url_for("rq_api.api_restore_archive", runid=runid)


def undo_restore(runid: str) -> str:
    return url_for("rq_api.api_undo_restore", runid=runid)


def fork_archive(runid: str) -> str:
    return url_for("rq_api.api_fork_archive", runid=runid)


def delete_archive(runid: str) -> str:
    return url_for("rq_api.api_delete_archive", runid=runid)


def pin_base(runid: str) -> str:
    """What the page puts ``/<name>/pin`` or ``/<name>/unpin`` after (no trailing slash)."""
    return _prefix("retention.pin_archive", "name", runid=runid).removesuffix("/")


def retention_policy(runid: str) -> str:
    return url_for("retention.get_policy", runid=runid)


def prune(runid: str) -> str:
    return url_for("retention.prune", runid=runid)


def storage_chart(runid: str) -> str:
    """The run's storage chart (an SVG image)."""
    return url_for("storage.rq_storage_chart", runid=runid)


def audit_log(runid: str) -> str:
    """The run's audit log (write access; the dashboard's Activity tab reads it)."""
    return url_for("audit.run_audit", runid=runid)


def job_status_prefix() -> str:
    return _prefix("rq_api.jobstatus", "job_id")


def job_info_prefix() -> str:
    return _prefix("rq_api.jobinfo", "job_id")


def cancel_prefix() -> str:
    return _prefix("rq_api.canceljob", "job_id")


def health() -> str:
    return url_for("pages.healthz")


def csrf_token() -> str:
    return url_for("pages.csrf_token")


def status_stream_path(runid: str) -> str:
    """The status websocket's path: the page picks ws:// or wss:// from its own location
    (werkzeug would build an absolute ws:// URL, wrong behind TLS)."""
    return urlsplit(url_for("status.archive_stream", runid=runid)).path
