"""Blueprint ``archive`` (a run's archives): its dashboard page, archive list and downloads.

``in_progress`` in the list comes from the jobs layer's slot (``running_job``, which first frees
the slot of a job that died), never from a flag stored on disk that a crash could leave behind.
The slot is read *before* the archives are listed: a job finishing in between then shows as
"not in progress" with its new archive already listed, never the reverse.

Downloads are served from one open descriptor with conditional responses: ``ETag``
(inode-mtime-size), ``If-None-Match``/``If-Modified-Since`` (304), single ``Range`` requests
(206), and ``HEAD``. The archive is opened by handle under the run's real ``archives/`` folder
(``core.open_archive_fd``) and the checked descriptor is the one sent: no symlink, swapped in
at any moment, can redirect a download elsewhere.

Rows carry ``created`` (ISO 8601, UTC) and ``modified`` (the same moment as WEPPcloud's lists
show it: ``%Y-%m-%d %H:%M:%S`` in the server's local time). ``list_body`` is the one list the
WEPPcloud route (``wepp.py``) answers too.
"""

from __future__ import annotations

import functools
import json
import os
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.wsgi import wrap_file

from runarchive.core import (
    MAX_COMMENT_CHARS,
    ArchiveInfo,
    display_comment,
    iso_utc,
    list_archives,
    open_archive_fd,
    open_run,
    parse_restore_paths,
    preview_restore,
    undo_info,
)
from runarchive.jobs import (
    JOB_STATES,
    Event,
    Trigger,
    archive_health,
    check_restorable,
    running_job,
)

from . import access, archive_quota, urls
from .access import RunView
from .audit import recorded_download, sent_bytes
from .errors import html_page
from .jobs_context import jobs
from .mount import template

bp = Blueprint("archive", __name__)
MODIFIED_FORMAT = "%Y-%m-%d %H:%M:%S"  # WEPPcloud's, in the server's local time


def _json_for_script(value: Any) -> str:
    """Return JSON that is safe inside a ``<script type="application/json">`` element."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def dashboard_config(runid: str, can_write: bool) -> dict[str, Any]:
    """Return what the dashboard's script needs: URLs, vocabularies, limits."""
    return {
        "runid": runid,
        "can_write": can_write,
        "urls": {
            "list": urls.archive_list(runid),
            "archive": urls.start_archive(runid),
            "restore": urls.start_restore(runid),
            "undo": urls.undo_restore(runid),
            "fork": urls.fork_archive(runid),
            "dashboard": urls.dashboard_template(),  # {runid}: a fork's new run
            "delete": urls.delete_archive(runid),
            # Archive names keep their characters in a URL path: the page appends the name.
            "restore_preview": urls.restore_preview_base(runid),
            "pin": urls.pin_base(runid),  # + "/<name>/pin" or "/<name>/unpin"
            "policy": urls.retention_policy(runid),
            "prune": urls.prune(runid),
            "storage_chart": urls.storage_chart(runid),
            # The Activity tab: the audit log is write access, so only owners get its URL.
            "audit": urls.audit_log(runid) if can_write else None,
            "jobstatus": urls.job_status_prefix(),
            "jobinfo": urls.job_info_prefix(),
            "canceljob": urls.cancel_prefix(),
            # Asked when the socket drops: no answer at all is "Offline", not "Polling".
            "health": urls.health(),
            "ws": urls.status_stream_path(runid),
            "login": urls.browser_login(),
            # Inside one archive: templates with {name} (and {path}) for the page to fill in.
            "inside": urls.inside_templates(runid),
        },
        "constants": {
            "triggers": {t.name: t.value for t in Trigger},
            "events": {e.name: e.value for e in Event},
            "job_states": list(JOB_STATES),
            "max_comment": MAX_COMMENT_CHARS,
        },
        "poll_interval_ms": int(current_app.config["POLL_INTERVAL_MS"]),
    }


@bp.get("/runs/<runid>/archive")
@html_page
def rq_archive_dashboard(runid: str) -> str:
    """Show the run's archive dashboard."""
    return dashboard_page(access.require_read(runid))


def dashboard_page(found: RunView) -> str:
    """Render the dashboard of a run the caller may read."""
    runid = found.runid
    config = dashboard_config(runid, found.can_write)
    return render_template(
        template("archive/dashboard.html"),
        runid=runid,
        can_write=found.can_write,
        config_json=_json_for_script(config),
    )


@functools.lru_cache(maxsize=20_000)
def _row(info: ArchiveInfo) -> dict[str, Any]:
    """The JSON fields of one archive (cached: an archive's info is immutable; callers copy)."""
    return {
        "name": info.name,
        "comment": display_comment(info.comment),
        "size": info.size,
        "created": iso_utc(info.created),
        "modified": info.created.astimezone().strftime(MODIFIED_FORMAT),
        "files": info.files,
        "links": info.links,
        "readable": info.readable,
        "pinned": info.pinned,
    }


@bp.get("/runs/<runid>/archive/list")
def rq_archive_list(runid: str) -> Response:
    """List the run's archives, newest first, and whether a job is running."""
    response = jsonify(list_body(access.require_read(runid)))
    response.headers["Cache-Control"] = "no-store"
    return response


def list_body(found: RunView) -> dict[str, Any]:
    """Return the list of a run the caller may read: its archives (each with the scrub's
    ``health``, ``checked_at`` and ``damage``: ``jobs.archive_health``, bound to the file now
    under the name), the job holding it, whether the last restore can be undone (``undo``; an
    expired one is dropped here), and the run's storage ``usage`` (``archive_quota``)."""
    assert found.run is not None
    slot = running_job(jobs(), found.runid)
    download = urls.download_prefix(found.runid)  # one url_for for every row (urls.py)
    rows = list_archives(found.run.path)
    health = archive_health(jobs(), found.run, [info.name for info in rows])
    archives = [
        {**_row(info), **health[info.name].as_json(), "download_url": download + info.name}
        for info in rows
    ]
    return {
        "archives": archives,
        "in_progress": slot is not None,
        "job_id": slot.job_id if slot is not None else None,
        "job_kind": slot.kind if slot is not None else None,
        "undo": undo_info(found.run.path).as_json(),
        "usage": archive_quota.usage_block(found.run, rows),
    }


@bp.get("/runs/<runid>/archive/<name>/restore-preview")
def rq_restore_preview(runid: str, name: str) -> Response:
    """Say what a restore of ``name`` (of each ``path`` only, when given) would restore,
    change and remove, or why it would be refused now (locked, busy, damaged)."""
    found = access.require_write(runid)
    assert found.run is not None
    asked = request.args.getlist("path")
    paths = parse_restore_paths(asked) if asked else None  # 400 before any work
    check_restorable(jobs(), found.run)
    preview = preview_restore(found.run, name, paths=paths)
    response = jsonify(preview.as_json())
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/runs/<runid>/archive/download/<name>")
def rq_archive_download(runid: str, name: str) -> Response:
    """Send archive ``name`` (GET and HEAD; Range, ETag and conditional requests).

    The archive is opened once, by handle beneath the run's real ``archives/`` folder with
    ``O_NOFOLLOW``; the descriptor that was checked (a regular file) is the one sent, so
    swapping the file for a link after the check cannot change what is served.
    """
    with recorded_download(runid, name) as note:
        response = _download(note.admit(access.require_read(runid)), name)
        note.bytes = sent_bytes(response)
    return response


def _download(found: RunView, name: str) -> Response:
    """The download's response, from the one descriptor checked (see ``rq_archive_download``)."""
    assert found.run_dir is not None
    with open_run(found.run_dir) as run:
        fd, st = open_archive_fd(run, name)  # InvalidInput (400) for anything not a name
    file = os.fdopen(fd, "rb")
    try:
        response = Response(
            wrap_file(request.environ, file),
            mimetype="application/zip",
            direct_passthrough=True,
        )
        response.content_length = st.st_size
        response.last_modified = datetime.fromtimestamp(st.st_mtime, UTC)
        response.set_etag(f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}")
        response.headers.set("Content-Disposition", "attachment", filename=name)
        response.make_conditional(request.environ, accept_ranges=True, complete_length=st.st_size)
    except BaseException:
        file.close()
        raise
    if response.status_code in (304, 412, 416) or request.method == "HEAD":
        file.close()
    response.headers["Cache-Control"] = "private, no-cache"
    return response
