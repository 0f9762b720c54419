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
from runarchive.core import (
    MAX_KEEP,
    RETENTION_RULES,
    RUNID_RE,
    SAFE_ARCHIVE_RE,
    AuditAction,
    Outcome,
)

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
DRY_RUN = {
    "name": "dry_run",
    "in": "query",
    "required": False,
    "description": "`1`: only say what would be removed.",
    "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
}
AUDIT_CURSOR = {
    "name": "cursor",
    "in": "query",
    "required": False,
    "description": "The `next` of the previous page (opaque; one log's cursor does not page "
    "another's: 400 `invalid_cursor`).",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,6000}$"},
}
AUDIT_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "Events per page, 1 to 1000 (default 100).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
}
AUDIT_EVENT = {
    "type": "object",
    "description": "One recorded action (append-only; `id` only grows).",
    "required": ["id", "time", "user", "remote_addr", "runid", "archive", "action", "outcome",
                 "job_id", "bytes", "detail"],
    "properties": {
        "id": {"type": "integer", "description": "Monotonic: the order of the log."},
        "time": {"type": "string", "format": "date-time", "description": "ISO 8601, UTC."},
        "user": {"type": "string", "description": "`<name>` (session), `token:<id>:<name>` "
                 "(API token), `cli:<login>`, `host` (a host policy's grant), `anonymous` "
                 "(a public run), `unknown` (a job queued outside runarchive)."},
        "remote_addr": {"type": "string", "description": "The request's address as the app "
                        "sees it (after the trusted proxies), `local` for the CLI."},
        "runid": {"type": ["string", "null"]},
        "archive": {"type": ["string", "null"]},
        "action": {"type": "string", "enum": [a.value for a in AuditAction]},
        "outcome": {"type": "string", "enum": [o.value for o in Outcome]},
        "job_id": {"type": ["string", "null"]},
        "bytes": {"type": ["integer", "null"], "description": "Archive written, restored, "
                  "deleted, pruned or sent."},
        "detail": {"type": ["string", "null"], "description": "Extra field: a refusal's "
                   "message, a partial restore's paths, a downloaded file's path, a policy."},
    },
}  # fmt: skip

# What a browser sends to open a websocket; without them the URL answers 400.
WS_HEADERS = [
    {"name": name, "in": "header", "required": True, "schema": {"type": "string", "enum": [value]}}
    for name, value in (("Upgrade", "websocket"), ("Connection", "Upgrade"),
                        ("Sec-WebSocket-Version", "13"))
]  # fmt: skip

_COUNT: dict[str, Any] = {
    "type": "object",
    "required": ["files", "bytes"],
    "properties": {"files": {"type": "integer"}, "bytes": {"type": "integer"}},
}
RESTORE_PATH = {
    "name": "path",
    "in": "query",
    "required": False,
    "description": "Repeatable: preview a restore of only these files and folders (`dir/`), "
    "checked as the restore's `paths` are; absent: the whole run.",
    "schema": {"type": "array", "items": {"type": "string"}, "maxItems": 10000},
    "style": "form",
    "explode": True,
}

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
        "(`job_running`, `job_id` names it), another operation holds the run (`busy`), the "
        "archive is pinned (`pinned`), the run is read-only, or the archive is unreadable/unsafe "
        "(a restore of an archive the scrub found damaged: `damaged_archive`, the damage named)."
    ),
    "503": _error("Redis (the job queue) is unavailable, or no disk space."),
}

# An archive request adds the quota refusal to the run's busy ones.
ARCHIVE_REFUSALS = {
    **BUSY,
    "409": _error(
        BUSY["409"]["description"] + " Or over an archive quota (`quota_exceeded`): the run's "
        "or an owner's archive bytes (with the estimate of this archive) or count would pass "
        "the limit; the message names the usage, the limit and what to do."
    ),
}

# What ``core.parse_comment`` refuses, as far as a pattern can say it (the rule is by Unicode
# category: Cc, Cf, Cs, Co, Cn, Zl, Zp): the C0/C1 controls, bidi marks and zero-width ones;
# surrogates and the BMP's private use area (U+D800-U+F8FF); every code point above U+3134A
# but the variation selectors U+E0100-U+E01EF (in Python 3.11's Unicode 14 all of them are
# unassigned, tags or private use; held as characters in the string, since ``\u`` escapes
# stop at U+FFFF). The BMP's scattered unassigned code points are left to the server's 400.
COMMENT_PATTERN = (
    "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u200b-\\u200f\\u2028-\\u202e"
    "\\u2060-\\u206f\\ud800-\\uf8ff\\ufeff\\ufff9-\\ufffb"
    "\U0003134b-\U000e00ff\U000e01f0-\U0010ffff]*$"
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


_FORK_BODY = {
    "type": "object",
    "required": ["archive_name"],
    "properties": {
        "archive_name": ARCHIVE_NAME["schema"],
        "new_runid": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_.;-]{1,200}$",
            "not": {"enum": [".", ".."]},
            "description": "The new run's id; it must not exist (nor be granted to another "
            "user). Absent or empty: a fresh id, 10 lowercase letters and digits.",
        },
    },
}


_RESTORE_BODY = {
    "type": "object",
    "required": ["archive_name"],
    "properties": {
        "archive_name": ARCHIVE_NAME["schema"],
        "paths": {
            "type": "array",
            "minItems": 1,
            "maxItems": 10000,
            "items": {"type": "string", "minLength": 1},
            "description": "Restore only these files and folders (JSON bodies only); a "
            "trailing `/` asks for a folder, which becomes exactly the archive's folder; "
            "everything else in the run stays as it is. Each is checked like an archive entry "
            "name (no `..`, absolute path, backslash, control character; not `archives/`); a "
            "path the archive lacks is 400 naming it; overlapping paths collapse.",
        },
    },
}


def _body(schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {
        "required": required,
        "content": {
            JSON: {"schema": schema},
            "application/x-www-form-urlencoded": {"schema": schema},
        },
    }


_KEEP = {"type": "integer", "minimum": 0, "maximum": MAX_KEEP}

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
        "required": ["name", "comment", "size", "created", "modified", "files", "download_url"],
        "properties": {
            "name": {"type": "string"},
            "comment": {"type": "string"},
            "size": {"type": "integer", "description": "Bytes."},
            "created": {"type": "string", "format": "date-time", "description": "UTC, `Z`."},
            "modified": {
                "type": "string",
                "pattern": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$",
                "description": "`created` as WEPPcloud shows it: `%Y-%m-%d %H:%M:%S`, the "
                "server's local time.",
            },
            "files": {"type": "integer"},
            "links": {"type": "integer", "description": "Symlink entries the archive holds."},
            "readable": {"type": "boolean", "description": "False for a damaged archive."},
            "pinned": {
                "type": "boolean",
                "description": "Pinned: never pruned, and not deleted until unpinned.",
            },
            "health": {
                "type": "string",
                "enum": ["ok", "damaged", "unchecked"],
                "description": "What the scrub (or `runarchive scrub` with Redis) found when it "
                "last read every byte of this very file; `unchecked` until then, and again once "
                "the file under the name is replaced or rewritten. New archives start unchecked.",
            },
            "checked_at": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When that check ended (UTC, `Z`); null when unchecked.",
            },
            "damage": {
                "type": ["string", "null"],
                "description": "What is damaged, naming the entry (e.g. `CRC mismatch in "
                "'wepp/output/H1.dat': the archive is damaged.`); null unless damaged.",
            },
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
                "enum": ["archive", "restore", "prune", "undo", "fork", "delete", None],
            },
            "undo": _ref("Undo"),
            "usage": _ref("Usage"),
        },
    },
    "Usage": {
        "type": "object",
        "required": [
            "archives_bytes",
            "archives_count",
            "run_bytes",
            "quota_bytes",
            "quota_count",
            "disk_free_bytes",
        ],
        "description": "The run's storage: its archives, its own files, its quota (the site's "
        "per-run limit; null: none) and the free space of the archives' disk.",
        "properties": {
            "archives_bytes": {"type": "integer", "minimum": 0},
            "archives_count": {"type": "integer", "minimum": 0},
            "run_bytes": {
                "type": "integer",
                "minimum": 0,
                "description": "The run's files outside `archives/` (measured at most a "
                "minute ago).",
            },
            "quota_bytes": {"type": ["integer", "null"], "minimum": 0},
            "quota_count": {"type": ["integer", "null"], "minimum": 0},
            "disk_free_bytes": {"type": "integer", "minimum": 0},
        },
    },
    "Undo": {
        "type": "object",
        "required": ["available", "restored", "at", "expires", "bytes"],
        "description": "What the run's last restore replaced, kept so `undo-restore` can put "
        "it back exactly, until the next archive, restore or undo of the run or `expires`.",
        "properties": {
            "available": {"type": "boolean"},
            "restored": {"type": ["string", "null"], "description": "The restored archive."},
            "at": {"type": ["string", "null"], "format": "date-time"},
            "expires": {"type": ["string", "null"], "format": "date-time"},
            "bytes": {
                "type": "integer",
                "description": "Disk the kept tree holds on its own (files still shared with "
                "the run by hard links left out); 0 when nothing is kept.",
            },
        },
    },
    "JobId": {
        "type": "object",
        "required": ["job_id"],
        "properties": {"job_id": {"type": "string"}},
    },
    "ForkQueued": {
        "type": "object",
        "required": ["job_id", "new_runid"],
        "properties": {
            "job_id": {"type": "string"},
            "new_runid": {
                "type": "string",
                "description": "The run the fork makes (granted "
                "to the requester now; it appears when the job ends with "
                "`FORK_COMPLETE`).",
            },
        },
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
        "required": ["name", "paths", "restores", "changes", "removes", "unchanged", "sample"],
        "description": "Counted from the diff of the archive against the run (links as links), "
        "within `paths` when given; files are regular files and links, folders are not counted.",
        "properties": {
            "name": {"type": "string"},
            "paths": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "The chosen paths as a restore of them would take them "
                "(normalised, folders with `/`); null for the whole run.",
            },
            "restores": {
                **_COUNT,
                "description": "Files the archive holds and the run lacks (archive bytes).",
            },
            "changes": {
                **_COUNT,
                "description": "Files on both sides that differ or are another kind on one "
                "side (archive bytes written).",
            },
            "removes": {
                **_COUNT,
                "description": "The run's files and links the archive lacks (run bytes).",
            },
            "unchanged": {"type": "integer", "description": "Files and links proven the same."},
            "sample": {
                "type": "array",
                "items": {"type": "string"},
                "maxItems": 20,
                "description": "Up to 20 of the paths `removes` counts.",
            },
        },
    },
    "Deleted": {
        "type": "object",
        "required": ["deleted"],
        "properties": {"deleted": {"type": "string"}},
    },
    "AuditEvent": AUDIT_EVENT,
    "AuditPage": {
        "type": "object",
        "required": ["events", "next"],
        "properties": {
            "events": {
                "type": "array",
                "items": _ref("AuditEvent"),
                "description": "Newest first.",
            },
            "next": {"type": ["string", "null"], "description": "Cursor of the next page."},
        },
    },
    "PinState": {
        "type": "object",
        "required": ["name", "pinned"],
        "properties": {"name": {"type": "string"}, "pinned": {"type": "boolean"}},
    },
    "Policy": {
        "type": "object",
        "description": "restic's `forget --keep-*` rule over UTC calendar days, ISO weeks and "
        "months; pinned archives are always kept and not counted; every count 0 keeps "
        "everything. An archive's time is the UTC stamp in its name, a foreign zip's its mtime.",
        "required": list(RETENTION_RULES),
        "properties": {rule: _KEEP for rule in RETENTION_RULES},
        "additionalProperties": False,
    },
    "PolicyBody": {
        "type": "object",
        "description": "The run's own policy; a missing rule is 0.",
        "properties": {rule: _KEEP for rule in RETENTION_RULES},
        "additionalProperties": False,
    },
    "PrunePlan": {
        "type": "object",
        "required": ["keep", "remove", "bytes_freed"],
        "properties": {
            "keep": {"type": "array", "items": {"type": "string"}, "description": "Newest first."},
            "remove": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Newest first.",
            },
            "bytes_freed": {"type": "integer"},
            "job_id": {"type": "string", "description": "Without `dry_run`: the prune job."},
        },
    },
    "JobStatus": {
        "type": "object",
        "required": ["id", "runid", "status", "started_at", "ended_at", "progress"],
        "properties": {
            "id": {"type": "string"},
            "runid": {"type": "string"},
            "kind": {"type": "string", "enum": ["archive", "restore", "prune", "undo", "fork"]},
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
    "WeppList": {
        "allOf": [
            _ref("ArchiveList"),
            {"type": "object", "required": ["Success"], "properties": {"Success": {"const": True}}},
        ]
    },
    "WeppSuccess": {
        "type": "object",
        "required": ["Success"],
        "properties": {"Success": {"const": True}, "job_id": {"type": "string"}},
    },
    "WeppRefusal": {
        "type": "object",
        "required": ["Success", "Error"],
        "properties": {
            "Success": {"const": False},
            "Error": {"type": "string", "description": "WEPPcloud's text (docs/api.md)."},
        },
    },
    "EngineError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "details", "code"],
                "properties": {
                    "message": {"type": "string", "description": "WEPPcloud's text."},
                    "details": {"type": ["string", "null"], "description": "Ours, if reworded."},
                    "code": {"type": "string"},
                },
            }
        },
    },
    "EngineJob": {
        "description": "Our job status plus `job_id`, or `{job_id, status: not_found}`.",
        "type": "object",
        "required": ["job_id", "status"],
        "properties": {"job_id": {"type": "string"}, "status": {"type": "string"}},
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


SINCE = {
    "name": "since",
    "in": "query",
    "required": False,
    "description": "Protocol version 2: also send the retained lines numbered above this seq "
    "(0: all retained); without it, live lines only.",
    "schema": {"type": "string", "pattern": r"^[0-9]{1,18}$"},
}


def _status_socket() -> dict[str, Any]:
    return {"get": {
        "summary": "Websocket of the run's status lines (see docs/api.md). " + READ,
        "x-websocket": True, "parameters": [RUNID, SINCE, *WS_HEADERS],
        "responses": {"101": {"description": "Switching protocols."},
                      "400": _error("Not a websocket request, invalid run id or since."),
                      "401": REFUSALS["401"], "403": _error("Not allowed, or cross-origin."),
                      "404": REFUSALS["404"],
                      "503": _error("Redis unavailable, a socket cap is reached "
                                    "(`too_many_sockets`), or the server cannot upgrade "
                                    "(`websocket_unavailable`): poll instead.")}}}  # fmt: skip


CONFIG = {
    "name": "config",
    "in": "path",
    "required": True,
    "description": "WEPPcloud's config segment; handed to a host access policy that takes it.",
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,128}$"},
}
# WEPPcloud answers an unknown job with 200 not_found whoever asks: credentials are optional
# until a job is found (then the job's run's rule applies).
ANY_OR_NONE: list[dict[str, list[str]]] = [{}, {"session": [], "csrfHeader": []}, {"bearer": []}]
WEPP = "WEPPcloud console envelope: refusals are `WeppRefusal` with our HTTP status. "
ENGINE = "WEPPcloud rq-engine: refusals are `EngineError` with 400/401/403/404/500. "


def _wepp_refusals(*codes: str) -> dict[str, Any]:
    return {code: _json(_ref("WeppRefusal"), "Refused.") for code in codes}


def _engine_refusals(*codes: str) -> dict[str, Any]:
    return {code: _json(_ref("EngineError"), "Refused.") for code in codes}


def _wepp_paths() -> dict[str, Any]:
    """WEPPcloud's URL shapes (``wepp.py``), over the same code as ours."""
    html = {"description": "HTML page.", "content": {"text/html": {}}}
    base = "/runs/{runid}/{config}"
    console = ("400", "401", "403", "404", "409", "503")
    engine = ("400", "401", "403", "404", "500")
    paths: dict[str, Any] = {
        f"{base}/rq-archive-dashboard": {
            "get": {
                "summary": "Our dashboard at WEPPcloud's URL. " + READ,
                "parameters": [RUNID, CONFIG],
                "responses": {
                    "200": html,
                    "302": {"description": "Anonymous: to /login."},
                    "400": html,
                    "403": html,
                    "404": html,
                },
            }
        },
        f"{base}/rq-archive-dashboard/archives": {
            "get": {
                "summary": WEPP + "The list, with `Success: true`. " + READ,
                "parameters": [RUNID, CONFIG],
                "responses": {
                    "200": _json(_ref("WeppList"), "Archives, newest first."),
                    **_wepp_refusals("400", "401", "403", "404", "503"),
                },
            }
        },
    }
    for route, body, what in (
        ("archive", _body(_ARCHIVE_BODY), "Queue an archive job."),
        ("restore-archive", _body(_NAME_BODY, required=True), "Queue a restore job."),
        ("delete-archive", _body(_NAME_BODY, required=True), "Delete an archive now."),
    ):
        paths[f"{base}/rq/api/{route}"] = {
            "post": {
                "summary": WEPP + what + " " + WRITE,
                "parameters": [RUNID, CONFIG],
                "requestBody": body,
                "responses": {
                    "200": _json(_ref("WeppSuccess"), "Done or queued."),
                    **_wepp_refusals(*console),
                },
            }
        }
        done = (
            _json(_ref("JobId"), "Queued.")
            if route != "delete-archive"
            else _json({"type": "object", "maxProperties": 0}, "Deleted.")
        )
        paths[f"/rq-engine/api/runs/{{runid}}/{{config}}/{route}"] = {
            "post": {
                "summary": ENGINE + what + " " + WRITE,
                "parameters": [RUNID, CONFIG],
                "requestBody": body,
                "responses": {"200": done, **_engine_refusals(*engine)},
            }
        }
    for route, what in (
        ("jobstatus", "A job's status. Read access to the job's run."),
        ("jobinfo", "Status plus the traceback. Write access."),
    ):
        paths[f"/rq-engine/api/{route}/{{job_id}}"] = {
            "get": {
                "security": ANY_OR_NONE,
                "summary": ENGINE + what,
                "parameters": [JOB_ID],
                "responses": {
                    "200": _json(_ref("EngineJob"), "Status, or not_found."),
                    **_engine_refusals(*engine),
                },
            }
        }
    paths["/rq-engine/api/canceljob/{job_id}"] = {
        "post": {
            "summary": ENGINE + "Not served yet: 501 for a known job. Write access.",
            "parameters": [JOB_ID],
            "security": ANY_OR_NONE,
            "responses": {
                "200": _json(_ref("EngineJob"), "Unknown job: not_found."),
                "409": _json(_ref("EngineError"), "The job ended, or a restore's swap began."),
                **_engine_refusals(*engine),
            },
        }
    }
    paths["/weppcloud-microservices/status/{runid}:archive"] = _status_socket()
    return paths  # fmt: skip


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
            "summary": "What a restore of the archive (of each `path` only, when given) would "
                       "restore, change and remove, from the diff the restore would plan; "
                       "refused as the restore would be (locked, a job running, read-only, "
                       "unsafe or damaged archive, a path it lacks). Changes nothing. " + WRITE,
            "parameters": [RUNID, ARCHIVE_NAME, RESTORE_PATH],
            "responses": {"200": _json(_ref("RestorePreview"), "What the restore would do."),
                          **REFUSALS, **BUSY}}},
        "/runs/{runid}/rq/api/archive": {"post": {
            "summary": "Queue an archive job. " + WRITE, "parameters": [RUNID],
            "requestBody": _body(_ARCHIVE_BODY),
            "responses": {"202": _json(_ref("ArchiveQueued"), "Queued."), **REFUSALS,
                          **ARCHIVE_REFUSALS}}},
        "/runs/{runid}/rq/api/restore-archive": {"post": {
            "summary": "Queue a restore job (all, or only `paths`). " + WRITE,
            "parameters": [RUNID],
            "requestBody": _body(_RESTORE_BODY, required=True),
            "responses": {"202": _json(_ref("JobId"), "Queued."), **REFUSALS, **BUSY}}},
        "/runs/{runid}/rq/api/undo-restore": {"post": {
            "summary": "Queue an undo of the run's last restore: what it replaced is put back "
                       "exactly; triggers `UNDO_COMPLETE`/`UNDO_FAILED`. " + WRITE,
            "parameters": [RUNID],
            "responses": {"202": _json(_ref("JobId"), "Queued."), **REFUSALS,
                          "409": _error("`nothing_to_undo`: no restore since the last "
                                        "archive, restore or undo, or it expired; or busy/"
                                        "locked as for every job."),
                          "503": BUSY["503"]}}},
        "/runs/{runid}/rq/api/fork-archive": {"post": {
            "summary": "Queue a fork: the archive restored into a new run under the runs root, "
                       "granted to the requester; triggers `FORK_COMPLETE`/`FORK_FAILED` on the "
                       "source's channel. Write access to the source. " + WRITE,
            "parameters": [RUNID],
            "requestBody": _body(_FORK_BODY, required=True),
            "responses": {"202": _json(_ref("ForkQueued"), "Queued."), **REFUSALS,
                          "409": _error("`run_exists`: something has the new run's name, "
                                        "another fork is making it, or another user holds "
                                        "a grant on it; or busy as for every job."),
                          "503": BUSY["503"]}}},
        "/runs/{runid}/rq/api/delete-archive": {"post": {
            "summary": "Delete an archive now. " + WRITE, "parameters": [RUNID],
            "requestBody": _body(_NAME_BODY, required=True),
            "responses": {"200": _json(_ref("Deleted"), "Deleted."), **REFUSALS, **BUSY}}},
        "/runs/{runid}/archive/{name}/pin": {"post": {
            "summary": "Pin an archive: never pruned, and not deleted until unpinned. " + WRITE,
            "parameters": [RUNID, ARCHIVE_NAME],
            "responses": {"200": _json(_ref("PinState"), "Pinned."), **REFUSALS, **BUSY}}},
        "/runs/{runid}/archive/{name}/unpin": {"post": {
            "summary": "Unpin an archive (not pinned: answered as unpinned). " + WRITE,
            "parameters": [RUNID, ARCHIVE_NAME],
            "responses": {"200": _json(_ref("PinState"), "Unpinned."), **REFUSALS, **BUSY}}},
        "/runs/{runid}/archive/policy": {
            "get": {"summary": "The retention policy that applies: the run's own, else the "
                               "site default, else all 0 (keep everything). " + READ,
                    "parameters": [RUNID],
                    "responses": {"200": _json(_ref("Policy"), "The policy."), **REFUSALS}},
            "put": {"summary": "Set the run's own retention policy. " + WRITE,
                    "parameters": [RUNID],
                    "requestBody": {"required": True,
                                    "content": {JSON: {"schema": _ref("PolicyBody")}}},
                    "responses": {"200": _json(_ref("Policy"), "Stored."), **REFUSALS, **BUSY}},
        },
        "/runs/{runid}/archive/prune": {"post": {
            "summary": "What the run's retention policy keeps and removes; without `dry_run` "
                       "the removal is queued as a prune job (202, `job_id`). " + WRITE,
            "parameters": [RUNID, DRY_RUN],
            "responses": {"200": _json(_ref("PrunePlan"), "Dry run: nothing was touched."),
                          "202": _json(_ref("PrunePlan"), "The plan now; the prune job queued."),
                          **REFUSALS, **BUSY}}},
        "/runs/{runid}/archive/storage.svg": {"get": {
            "summary": "The run's storage chart, an SVG image: archive sizes over time (pinned "
                       "and damaged ones marked) and the run, archives vs quota and free disk "
                       "as bars, each labelled in words. " + READ,
            "parameters": [RUNID, {"name": "width", "in": "query", "required": False,
                                   "description": "Pixels wide, 320 to 1280 (400 otherwise).",
                                   "schema": {"type": "integer", "minimum": 320,
                                              "maximum": 1280, "default": 640}}],
            "responses": {"200": {"description": "The chart (`no-store`).",
                                  "content": {"image/svg+xml": {"schema": {"type": "string"}}}},
                          **REFUSALS}}},
        "/runs/{runid}/archive/audit": {"get": {
            "summary": "The run's audit log, newest first: every archive, restore, undo, fork, "
                       "delete, prune, pin/unpin, cancel, download and policy change, accepted "
                       "or refused, and every job's end. " + WRITE,
            "parameters": [RUNID, AUDIT_CURSOR, AUDIT_LIMIT],
            "responses": {"200": _json(_ref("AuditPage"), "One page of events."), **REFUSALS}}},
        "/audit": {"get": {
            "summary": "Every run's audit log, newest first. Admins only (403 otherwise).",
            "parameters": [AUDIT_CURSOR, AUDIT_LIMIT],
            "responses": {"200": _json(_ref("AuditPage"), "One page of events."),
                          **{k: v for k, v in REFUSALS.items() if k != "404"}}}},
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
        "/status/{runid}:archive": _status_socket(),
    }  # fmt: skip


def document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document."""
    from . import openapi_inside  # it builds on this module's parameters: imported after it

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runarchive",
            "version": __version__,
            "description": "Archive, list, download, restore and delete snapshots of runs. "
            'Errors are `{"error": {"code", "message"}}`. See docs/api.md.',
        },
        "security": [{"session": [], "csrfHeader": []}, {"bearer": []}],
        "paths": {**_paths(), **openapi_inside.paths(), **_wepp_paths()},
        "components": {
            "schemas": {**SCHEMAS, **openapi_inside.SCHEMAS},
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
