"""The OpenAPI 3.1 description of the HTTP API, written by hand and served at ``/openapi.json``.

Hand-written so that it says what matters (who may call a route, what each refusal means) and
not just what a generator can infer; ``tests/web/test_openapi.py`` keeps it honest by failing
when a route of the app is missing here or a path here is not a route of the app. The
websocket is described as the ``GET`` it starts with (answer 101) and marked
``x-websocket: true``; its frames are described in ``docs/api.md``.
"""

from __future__ import annotations

from typing import Any

from runarchive import __version__
from runarchive.core.names import RUNID_RE, SAFE_ARCHIVE_RE

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


RUNID = {
    "name": "runid",
    "in": "path",
    "required": True,
    "description": "Run id: letters, digits and `_ . ; -` (not `.`/`..`).",
    "schema": {
        "type": "string",
        "pattern": f"^(?:{RUNID_RE.pattern})$",  # JSON Schema patterns are unanchored
        "maxLength": 200,
        "not": {"enum": [".", ".."]},
    },
}
JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,128}$"},
}
ARCHIVE_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": (
        "An archive name as listed: ours are `<runid>.<YYYYMMDDTHHMMSSZ>[-N].zip`; "
        "any other safe `*.zip` in `archives/` is listed too."
    ),
    "schema": {"type": "string", "pattern": f"^(?:{SAFE_ARCHIVE_RE.pattern})$", "maxLength": 255},
}
# What a browser sends to open a websocket; without them the URL answers 400.
WS_HEADERS = [
    {"name": name, "in": "header", "required": True, "schema": {"type": "string", "enum": [value]}}
    for name, value in (("Upgrade", "websocket"), ("Connection", "Upgrade"),
                        ("Sec-WebSocket-Version", "13"))
]  # fmt: skip

READ = "Read access: the run's owners, admins, or anyone when the run holds a `PUBLIC` file."
WRITE = "Write access: the run's owners and admins. Browser sessions send `X-CSRFToken`."

REFUSALS = {
    "400": _error("Invalid input (run id, archive name, body) or CSRF check failed."),
    "401": _error("Not logged in and no valid API token."),
    "403": _error("Logged in but not allowed."),
    "404": _error("Unknown run, archive or job (told only to callers who may see the run)."),
}
BUSY = {
    "409": _error(
        "Run locked (`locked`, `locked_files` lists the .nodb files), a job already running "
        "(`job_running`, `job_id` names it), or the archive is unreadable/unsafe."
    ),
    "503": _error("Redis (the job queue) is unavailable, or no disk space."),
}

# What ``core.parse_comment`` refuses, as far as a pattern can say it (the rule is by Unicode
# category: Cc, Cf, Cs, Co, Cn, Zl, Zp); the C0/C1 controls, bidi marks and zero-width ones.
COMMENT_PATTERN = (
    "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u200b-\\u200f\\u2028-\\u202e"
    "\\u2060-\\u206f\\ufeff\\ufff9-\\ufffb]*$"
)
_ARCHIVE_BODY = {
    "type": "object",
    "properties": {
        "comment": {
            "type": ["string", "null"],
            "description": "Cut to 40 chars. Control, invisible and direction-changing "
            "characters are refused (400); the pattern names the common ones.",
            "pattern": COMMENT_PATTERN,
        },
        "links": {
            "type": "string",
            "enum": ["store", "follow"],
            "description": "`store` keeps symlinks as links; `follow` archives links that "
            "resolve inside the run as what they point to. Default: `RUNARCHIVE_LINKS`.",
        },
    },
}
_NAME_BODY = {
    "type": "object",
    "required": ["archive_name"],
    "properties": {"archive_name": ARCHIVE_NAME["schema"]},
}


def _body(schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {
        "required": required,
        "content": {
            JSON: {"schema": schema},
            "application/x-www-form-urlencoded": {"schema": schema},
        },
    }


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "locked_files": {"type": "array", "items": {"type": "string"}},
                    "job_id": {"type": "string"},
                },
            }
        },
    },
    "Archive": {
        "type": "object",
        "required": ["name", "comment", "size", "created", "files", "download_url"],
        "properties": {
            "name": {"type": "string"},
            "comment": {"type": "string"},
            "size": {"type": "integer", "description": "Bytes."},
            "created": {"type": "string", "format": "date-time", "description": "UTC, `Z`."},
            "files": {"type": "integer"},
            "links": {"type": "integer", "description": "Symlink entries the archive holds."},
            "readable": {"type": "boolean", "description": "False for a damaged archive."},
            "download_url": {"type": "string"},
        },
    },
    "ArchiveList": {
        "type": "object",
        "required": ["archives", "in_progress", "job_id"],
        "properties": {
            "archives": {"type": "array", "items": _ref("Archive"), "description": "Newest first."},
            "in_progress": {
                "type": "boolean",
                "description": "A job, or a CLI command (job id `local-…`), holds the run now.",
            },
            "job_id": {"type": ["string", "null"]},
            "job_kind": {
                "type": ["string", "null"],
                "enum": ["archive", "restore", "delete", None],
            },
        },
    },
    "JobId": {
        "type": "object",
        "required": ["job_id"],
        "properties": {"job_id": {"type": "string"}},
    },
    "ArchiveQueued": {
        "type": "object",
        "required": ["job_id", "comment", "comment_cut"],
        "properties": {
            "job_id": {"type": "string"},
            "comment": {
                "type": "string",
                "maxLength": 40,
                "description": "The comment as stored (trimmed, cut to 40).",
            },
            "comment_cut": {"type": "boolean", "description": "Whether it was cut."},
        },
    },
    "RestorePreview": {
        "type": "object",
        "required": ["name", "removes", "sample"],
        "properties": {
            "name": {"type": "string"},
            "removes": {
                "type": "object",
                "required": ["files", "bytes"],
                "properties": {"files": {"type": "integer"}, "bytes": {"type": "integer"}},
            },
            "sample": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
        },
    },
    "Deleted": {
        "type": "object",
        "required": ["deleted"],
        "properties": {"deleted": {"type": "string"}},
    },
    "JobStatus": {
        "type": "object",
        "required": ["id", "runid", "status", "started_at", "ended_at", "progress"],
        "properties": {
            "id": {"type": "string"},
            "runid": {"type": "string"},
            "kind": {"type": "string", "enum": ["archive", "restore"]},
            "status": {
                "type": "string",
                "description": "RQ's: queued, started, finished, failed, stopped, canceled …",
            },
            "enqueued_at": {"type": ["string", "null"], "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "ended_at": {"type": ["string", "null"], "format": "date-time"},
            "progress": {
                "type": ["object", "null"],
                "description": "op, phase, files_done, files_total, bytes_done, bytes_total, "
                "updated_at",
            },
            "trigger": {"type": ["string", "null"], "description": "Final trigger, once ended."},
        },
    },
    "Canceled": {
        "type": "object",
        "required": ["job_id", "status"],
        "properties": {
            "job_id": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["canceled", "canceling"],
                "description": "canceled: it was queued and is over; canceling: it runs and "
                "stops at its next progress event, leaving the run as it was.",
            },
        },
    },
    "JobInfo": {
        "allOf": [
            _ref("JobStatus"),
            {"type": "object", "properties": {"exc_info": {"type": ["string", "null"]}}},
        ]
    },
    "Health": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "database": {"type": "string"},
            "redis": {"type": "string"},
            "workers": {"type": "integer"},
        },
    },
}


def _paths() -> dict[str, Any]:
    html = {"description": "HTML page.", "content": {"text/html": {}}}
    return {
        "/": {"get": {"summary": "The logged-in user's runs (anonymous: redirect to /login).",
                      "responses": {"200": html, "302": {"description": "To /login."}}}},
        "/healthz": {"get": {"summary": "Database and Redis health (no auth).", "security": [],
                             "responses": {"200": _json(_ref("Health"), "Healthy."),
                                           "503": _json(_ref("Health"), "Degraded.")}}},
        "/csrf-token": {"get": {
            "summary": "The CSRF token of this browser session, for pages that POST with the "
                       "session cookie (send it as X-CSRFToken). Same-origin: no CORS. Answers "
                       "anyone: the token is bound to the caller's own session.",
            "security": [],
            "responses": {"200": _json({"type": "object", "required": ["csrf_token", "header"],
                                        "properties": {"csrf_token": {"type": "string"},
                                                       "header": {"const": "X-CSRFToken"}}},
                                       "The token.")}}},
        "/openapi.json": {"get": {"summary": "This document.", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3.1."}}}},
        "/login": {
            "get": {"summary": "Login form.", "security": [],
                    "responses": {"200": html,
                                  "302": {"description": "Already logged in: to /."}}},
            "post": {"summary": "Log in (form: username, password, csrf_token, next).",
                     "security": [],
                     "responses": {"302": {"description": "Logged in; to `next` or /."},
                                   "400": {"description": "CSRF check failed."},
                                   "401": html, "429": html}},
        },
        "/logout": {"post": {"summary": "Log out (form: csrf_token).",
                             "responses": {"302": {"description": "To /login."}}}},
        "/runs/{runid}/archive": {"get": {
            "summary": "The run's archive dashboard. " + READ, "parameters": [RUNID],
            "responses": {"200": html, "302": {"description": "Anonymous: to /login."},
                          "400": html, "403": html, "404": html}}},
        "/runs/{runid}/archive/list": {"get": {
            "summary": "The run's archives and whether a job runs. " + READ,
            "parameters": [RUNID],
            "responses": {"200": _json(_ref("ArchiveList"), "Archives, newest first."),
                          **REFUSALS, "503": BUSY["503"]}}},
        "/runs/{runid}/archive/download/{name}": {
            "get": {"summary": "Download an archive (Range → 206, ETag, 304). " + READ,
                    "parameters": [RUNID, ARCHIVE_NAME],
                    "responses": {"200": {"description": "The zip.",
                                          "content": {"application/zip": {}}},
                                  "206": {"description": "The requested byte range."},
                                  "304": {"description": "Not modified."},
                                  "416": {"description": "Range not satisfiable."},
                                  **REFUSALS}},
            "head": {"summary": "Headers of the download.", "parameters": [RUNID, ARCHIVE_NAME],
                     "responses": {"200": {"description": "Headers only."},
                                   "304": {"description": "Not modified."},
                                   **{code: {"description": r["description"]}
                                      for code, r in REFUSALS.items()}}},
        },
        "/runs/{runid}/archive/{name}/restore-preview": {"get": {
            "summary": "The run's files and links a restore of the archive would remove "
                       "(the archive does not hold them). " + WRITE,
            "parameters": [RUNID, ARCHIVE_NAME],
            "responses": {"200": _json(_ref("RestorePreview"), "What would be removed."),
                          **REFUSALS}}},
        "/runs/{runid}/rq/api/archive": {"post": {
            "summary": "Queue an archive job. " + WRITE, "parameters": [RUNID],
            "requestBody": _body(_ARCHIVE_BODY),
            "responses": {"202": _json(_ref("ArchiveQueued"), "Queued."), **REFUSALS, **BUSY}}},
        "/runs/{runid}/rq/api/restore-archive": {"post": {
            "summary": "Queue a restore job. " + WRITE, "parameters": [RUNID],
            "requestBody": _body(_NAME_BODY, required=True),
            "responses": {"202": _json(_ref("JobId"), "Queued."), **REFUSALS, **BUSY}}},
        "/runs/{runid}/rq/api/delete-archive": {"post": {
            "summary": "Delete an archive now. " + WRITE, "parameters": [RUNID],
            "requestBody": _body(_NAME_BODY, required=True),
            "responses": {"200": _json(_ref("Deleted"), "Deleted."), **REFUSALS, **BUSY}}},
        "/rq/api/jobstatus/{job_id}": {"get": {
            "summary": "A job's status, times and progress. Read access to the job's run.",
            "parameters": [JOB_ID],
            "responses": {"200": _json(_ref("JobStatus"), "Status."), **REFUSALS,
                          "503": BUSY["503"]}}},
        "/rq/api/jobinfo/{job_id}": {"get": {
            "summary": "Status plus the traceback. Write access to the job's run.",
            "parameters": [JOB_ID],
            "responses": {"200": _json(_ref("JobInfo"), "Status and exc_info."), **REFUSALS,
                          "503": BUSY["503"]}}},
        "/rq/api/canceljob/{job_id}": {"post": {
            "summary": "Cancel a queued or running job (write access to the job's run: its "
                       "owners and admins; browser sessions send `X-CSRFToken`).",
            "parameters": [JOB_ID],
            "responses": {"200": _json(_ref("Canceled"), "Canceled, or stopping."),
                          **REFUSALS,
                          "409": _error("`not_cancelable`: the job ended, or a restore's swap "
                                        "began (it will finish)."),
                          "503": BUSY["503"]}}},
        "/status/{runid}:archive": {"get": {
            "summary": "Websocket of the run's status lines (see docs/api.md). " + READ,
            "x-websocket": True, "parameters": [RUNID, *WS_HEADERS],
            "responses": {"101": {"description": "Switching protocols."},
                          "400": _error("Not a websocket request, or invalid run id."),
                          "401": REFUSALS["401"], "403": _error("Not allowed, or cross-origin."),
                          "404": REFUSALS["404"],
                          "503": _error("Redis unavailable, a socket cap is reached "
                                        "(`too_many_sockets`), or the server cannot upgrade "
                                        "(`websocket_unavailable`): poll instead.")}}},
    }  # fmt: skip


def document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runarchive",
            "version": __version__,
            "description": "Archive, list, download, restore and delete snapshots of runs. "
            'Errors are `{"error": {"code", "message"}}`. See docs/api.md.',
        },
        "security": [{"session": [], "csrfHeader": []}, {"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "runarchive_session"},
                "csrfHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRFToken",
                    "description": "Required with the session cookie on POST.",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Personal API token from `runarchive tokens create USER`.",
                },
            },
        },
    }
