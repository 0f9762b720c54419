"""The OpenAPI description of the routes inside one archive (``inside.py``): paths and schemas.

Kept apart from ``openapi.py`` so each stays readable whole; ``openapi.document`` merges them.
"""

from __future__ import annotations

from typing import Any

from .openapi import ARCHIVE_NAME, READ, REFUSALS, RUNID, _error, _json, _ref

BASE = "/runs/{runid}/archive/{name}"
# core.inside.check_path as a pattern: components that are not empty, `.` or `..`, without
# backslashes or control characters (C0 and DEL), joined by single slashes.
_COMPONENT = r"(?!\.\.?(?:/|$))[^/\\\u0000-\u001f\u007f]+"
_PATH_PATTERN = rf"{_COMPONENT}(?:/{_COMPONENT})*"
PATH = {
    "name": "path",
    "in": "path",
    "required": True,
    "description": "A file's path inside the archive (relative; no `.`/`..`/empty components, "
    "backslashes or control characters; at most 1,024 characters).",
    "schema": {"type": "string", "maxLength": 1024, "pattern": f"^{_PATH_PATTERN}$"},
}
CURSOR = {
    "name": "cursor",
    "in": "query",
    "required": False,
    "description": "The `next` of the previous page (opaque, bound to its listing).",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]*$", "maxLength": 6000},
}
LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200},
}
AGAINST = {
    "name": "against",
    "in": "query",
    "required": False,
    "description": "Another archive of the run to compare with; absent or empty: the live run.",
    "schema": ARCHIVE_NAME["schema"],
}
_NULL_INT = {"type": ["integer", "null"]}
_NULL_TIME = {"type": ["string", "null"], "format": "date-time", "description": "UTC, `Z`."}
_TALLY = {
    "type": "object",
    "properties": {"entries": {"type": "integer"}, "files": {"type": "integer"},
                   "bytes": {"type": "integer"}},
}  # fmt: skip
_BUCKETS = ("added", "removed", "modified", "type_changed")

SCHEMAS: dict[str, Any] = {
    "Entry": {
        "type": "object",
        "required": ["path", "type", "size", "mode", "mtime", "sha256", "target"],
        "properties": {
            "path": {"type": "string"},
            "type": {"type": "string", "enum": ["file", "dir", "symlink", "special"]},
            "size": {"type": "integer"},
            "mode": {**_NULL_INT, "description": "Permission bits; null when not recorded."},
            "mtime": _NULL_TIME,
            "sha256": {"type": ["string", "null"], "description": "From the manifest."},
            "target": {"type": ["string", "null"], "description": "Links only."},
            "files": {"type": "integer", "description": "Folders: files in the subtree."},
            "bytes": {"type": "integer", "description": "Folders: those files' bytes."},
        },
    },
    "Entries": {
        "type": "object",
        "required": ["entries", "next", "total", "hidden"],
        "properties": {
            "entries": {"type": "array", "items": _ref("Entry"),
                        "description": "Folders first, then the rest, each by name."},
            "next": {"type": ["string", "null"], "description": "Cursor of the next page."},
            "total": {"type": "integer", "description": "Rows of the whole listing."},
            "hidden": {"type": "integer", "description": "Archive entries never shown."},
        },
    },
    "Change": {
        "type": "object",
        "required": ["path", "type", "size_a", "size_b", "mtime_a", "mtime_b"],
        "properties": {
            "path": {"type": "string"},
            "type": {"type": "string", "description": "b's kind (a's for removed)."},
            "size_a": _NULL_INT, "size_b": _NULL_INT,
            "mtime_a": _NULL_TIME, "mtime_b": _NULL_TIME,
            "type_a": {"type": "string", "description": "type_changed rows: a's kind."},
            "reason": {"type": "string",
                       "enum": ["size", "content", "target", "mode", "unreadable"],
                       "description": "modified rows."},
        },
    },
    "Diff": {
        "type": "object",
        "required": [*_BUCKETS, "unchanged", "summary", "next", "total"],
        "properties": {
            "archive": {"type": "string"},
            "against": {"type": ["string", "null"], "description": "null: the live run."},
            **{b: {"type": "array", "items": _ref("Change")} for b in _BUCKETS},
            "unchanged": {"type": "integer"},
            "unchanged_by": {"type": "object", "properties": {
                p: {"type": "integer"} for p in ("sha256", "size_mtime_mode", "crc32_size")}},
            "summary": {"type": "object", "properties": {b: _TALLY for b in _BUCKETS}},
            "hidden": {"type": "integer"},
            "skipped": {"type": "array", "items": {"type": "string"}},
            "hashed": {"type": "object", "properties": {"files": {"type": "integer"},
                                                        "bytes": {"type": "integer"}}},
            "next": {"type": ["string", "null"]},
            "total": {"type": "integer", "description": "Changed rows of the whole diff."},
        },
    },
    "TextDiff": {
        "type": "object",
        "required": ["path", "diff", "cut", "note"],
        "properties": {
            "path": {"type": "string"},
            "diff": {"type": "string", "description": "Unified diff; empty when identical."},
            "cut": {"type": "boolean", "description": "Cut at 2,000 lines."},
            "note": {"type": ["string", "null"]},
        },
    },
}  # fmt: skip

_DAMAGED = _error("The archive is unreadable (`invalid_archive`) or the entry is damaged "
                  "(`damaged_archive`, `limit_exceeded`).")  # fmt: skip


def paths() -> dict[str, Any]:
    """Return the inside-an-archive routes' path items."""
    refusals = {**REFUSALS, "409": _DAMAGED}
    file_answers = {
        "200": {"description": "The file's bytes (`application/octet-stream`, attachment).",
                "content": {"application/octet-stream": {}}},
        "206": {"description": "The one byte range asked for (`Content-Range`)."},
        "304": {"description": "Not modified (`If-None-Match` with the sha256 ETag)."},
        "416": {"description": "Range not satisfiable (`Content-Range: bytes */size`)."},
    }  # fmt: skip
    return {
        f"{BASE}/entries": {"get": {
            "summary": "One page of a folder's listing inside the archive. " + READ,
            "parameters": [RUNID, ARCHIVE_NAME,
                           {"name": "prefix", "in": "query", "required": False,
                            "description": "The folder (`dir/`; empty: the top).",
                            "schema": {"type": "string", "maxLength": 1025,
                                       "pattern": f"^(?:{_PATH_PATTERN}/?)?$"}},
                           CURSOR, LIMIT,
                           {"name": "recursive", "in": "query", "required": False,
                            "description": "1: the whole subtree in pre-order.",
                            "schema": {"type": "string", "enum": ["0", "1"]}},
                           {"name": "search", "in": "query", "required": False,
                            "description": "Only the subtree's paths containing this text "
                                           "(case-insensitive), in pre-order; `total` counts "
                                           "them. No control characters.",
                            "schema": {"type": "string", "maxLength": 200,
                                       "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"}}],
            "responses": {"200": _json(_ref("Entries"), "One page."), **refusals}}},
        f"{BASE}/file/{{path}}": {
            "get": {"summary": "One file of the archive, streamed from the zip (sha256 ETag, "
                               "one Range). Damage found mid-stream cuts the connection. " + READ,
                    "parameters": [RUNID, ARCHIVE_NAME, PATH],
                    "responses": {**file_answers, **refusals}},
            "head": {"summary": "The file's headers, no body.",
                     "parameters": [RUNID, ARCHIVE_NAME, PATH],
                     "responses": {**file_answers, **{code: {"description": r["description"]}
                                                      for code, r in REFUSALS.items()}}},
        },
        f"{BASE}/diff": {"get": {
            "summary": "Changes from the archive to the live run (or to `against`). " + READ,
            "parameters": [RUNID, ARCHIVE_NAME, AGAINST, CURSOR, LIMIT],
            "responses": {"200": _json(_ref("Diff"), "One page of the diff; whole totals."),
                          **refusals}}},
        f"{BASE}/diff/file/{{path}}": {"get": {
            "summary": "The unified diff of one text file (≤ 1 MiB, UTF-8) from the archive to "
                       "the run (or `against`). " + READ,
            "parameters": [RUNID, ARCHIVE_NAME, PATH, AGAINST],
            "responses": {"200": _json(_ref("TextDiff"), "The diff."),
                          **refusals,
                          "400": _error("Invalid input, or `not_text`: a side holds a folder, "
                                        "a link, a binary, non-UTF-8 or larger file.")}}},
    }  # fmt: skip
