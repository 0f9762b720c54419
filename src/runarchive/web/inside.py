"""Blueprint ``inside`` (inside one archive): its folder listings, one file's bytes, diffs.

Every route takes the read rule of the list (``access.require_read``), then opens the archive
by handle beneath the run's real ``archives/`` folder (``core.open_contents``: the name is
validated there, once). Paths and prefixes from the URL are checked by the core's one path
rule (``..``, ``.``, empty components, absolute, backslashes and control characters → 400);
a path the archive's tree does not hold as a file → 404 ``entry_not_found``.

A file (``/file/<path>``) is streamed from the zip one bounded piece at a time
(``core.open_member``): never the whole archive, never a temporary file. Its strong ``ETag``
is the manifest's sha256 (no ``ETag`` without one: a CRC-32 is no strong validator);
``If-None-Match`` → 304; one ``Range`` (``bytes=a-b``, ``a-``, ``-n``) → 206, an
unsatisfiable one → 416, several → 200 with the whole file; ``If-Range`` with another
validator → 200 whole. ``HEAD`` answers from the tree, opening no stream.

Failure semantics of a file: damage found before the first byte (a local header that lies,
encryption, an unknown method, data running into the central directory) or within the first
piece (1 MiB, read before the status is given: a small file is wholly checked first) is an
error answer (409 ``invalid_archive``/``damaged_archive``). Damage found later while
streaming (CRC, deflate, more bytes than declared, the ratio limit) comes after the status and
some bytes were sent:
the body's iterator raises, and the WSGI server (werkzeug, gunicorn) then closes the
connection, so the client sees a body shorter than its ``Content-Length`` — never a complete
looking file with wrong bytes. The CRC is checked whenever the bytes sent reach the file's end
from its first byte (``MemberStream.checks_crc``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request
from werkzeug.utils import secure_filename

from runarchive.core import (
    Contents,
    EntryNotFound,
    InvalidArchive,
    InvalidInput,
    MemberStream,
    RunRef,
    diff_against_run,
    diff_archives,
    diff_text,
    has_hidden_characters,
    list_entries,
    open_contents,
    open_member,
    open_run,
    page_diff,
    parse_limit,
    stat_entry,
)

from . import access
from .audit import recorded_download, sent_bytes

log = logging.getLogger(__name__)
bp = Blueprint("inside", __name__)
BASE = "/runs/<runid>/archive/<name>"
PIECE = 1 << 20  # bytes read from the archive per piece sent
_RANGE_RE = re.compile(r"bytes=(?:([0-9]{1,19})-([0-9]{0,19})|-([0-9]{1,19}))")


def _readable(runid: str) -> RunRef:
    """Return the run if the caller may read it (the list's rule): 400/401/403/404 else."""
    found = access.require_read(runid)
    assert found.run is not None  # require_read answers 404 otherwise
    return found.run


def _limit() -> int | None:
    """Return the ``limit`` query parameter (None: the default); the core checks its range."""
    return parse_limit(request.args.get("limit"))


def _recursive() -> bool:
    text = request.args.get("recursive", "0")
    if text not in ("0", "1"):
        raise InvalidInput(f"Invalid recursive {text[:20]!r}: use 0 or 1.")
    return text == "1"


def _against() -> str | None:
    """Return the other archive's name, or None for the live run (absent or empty)."""
    return request.args.get("against") or None


def _json(value: dict[str, object], cache: str) -> Response:
    response = jsonify(value)
    response.headers["Cache-Control"] = cache
    return response


@bp.get(f"{BASE}/entries")
def rq_archive_entries(runid: str, name: str) -> Response:
    """List the direct children of ``prefix`` (or its subtree, or the paths of it matching
    ``search``), folders first, one page."""
    run_ref = _readable(runid)
    prefix, cursor = request.args.get("prefix", ""), request.args.get("cursor")
    limit, recursive, search = _limit(), _recursive(), request.args.get("search")
    with open_run(run_ref) as run, open_contents(run, name) as contents:
        listing = list_entries(
            contents, prefix, cursor=cursor, limit=limit, recursive=recursive, search=search
        )
    # A published archive never changes, but its name may be deleted and made again.
    return _json(listing.as_json(), "private, no-cache")


@bp.get(f"{BASE}/diff")
def rq_archive_diff(runid: str, name: str) -> Response:
    """Say what changed from the archive to the live run (or to archive ``against``)."""
    run_ref = _readable(runid)
    against, cursor, limit = _against(), request.args.get("cursor"), _limit()
    with open_run(run_ref) as run, open_contents(run, name) as contents:
        if against is None:
            diff = diff_against_run(contents, run)
        else:
            with open_contents(run, against) as other:
                diff = diff_archives(contents, other)
    return _json(page_diff(diff, cursor, limit).as_json(), "no-store")


@bp.get(f"{BASE}/diff/file/<path:path>")
def rq_archive_diff_file(runid: str, name: str, path: str) -> Response:
    """Give the unified diff of one text file from the archive to the run (or ``against``)."""
    run_ref = _readable(runid)
    against = _against()
    with open_run(run_ref) as run, open_contents(run, name) as contents:
        if against is None:
            text = diff_text(contents, path, run)
        else:
            with open_contents(run, against) as other:
                text = diff_text(contents, path, other)
    return _json(text.as_json(), "no-store")


@bp.get(f"{BASE}/file/<path:path>")
def rq_archive_file(runid: str, name: str, path: str) -> Response:
    """Send one file of the archive (GET and HEAD; ETag, one Range), streamed from the zip.

    A GET is recorded in the audit log as a download of that path (a HEAD sends nothing).
    """
    with recorded_download(runid, name, f"file: {path}") as note:
        run_ref = note.admit(access.require_read(runid)).run
        assert run_ref is not None  # require_read answers 404 otherwise
        with open_run(run_ref) as run:
            contents = open_contents(run, name)
        try:
            response = _file_response(contents, path, run_ref.runid)
        except BaseException:
            contents.reader.close()  # idempotent: a stream that took it over closed it already
            raise
        note.bytes = sent_bytes(response)
    return response


def _file_response(contents: Contents, path: str, runid: str) -> Response:
    """Answer for the file at ``path``; the stream, when there is one, owns the reader."""
    entry = stat_entry(contents, path)
    if entry.type != "file":
        raise EntryNotFound(f"{entry.path!r} in the archive {contents.name} is a {entry.type}.")
    size, etag = entry.size, entry.sha256
    response = Response(status=200, mimetype="application/octet-stream")
    if etag is not None:
        response.set_etag(etag)
        if request.if_none_match.contains_weak(etag):
            contents.reader.close()
            response.status_code = 304
            return response
    response.headers["Accept-Ranges"] = "bytes"
    response.headers.set("Content-Disposition", "attachment", **_download_name(entry.path))
    response.headers["Cache-Control"] = "private, no-cache"
    span = _wanted_range(size, etag)
    if isinstance(span, str):  # "unsatisfiable"
        contents.reader.close()
        response.status_code = 416
        response.headers["Content-Range"] = f"bytes */{size}"
        response.headers.remove("Content-Disposition")
        return response
    start, stop = span if span is not None else (0, size)
    if span is not None:
        response.status_code = 206
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    if request.method == "HEAD":
        contents.reader.close()
    else:
        stream = open_member(contents, entry.path, start=start, stop=stop, owns_reader=True)
        try:
            first = stream.read(PIECE)  # damage in a small file is still an error answer
        except BaseException:
            stream.close()
            raise
        response.response = _Body(stream, first, f"{runid}/{contents.name}:{entry.path}")
        response.direct_passthrough = True
    response.content_length = stop - start
    return response


def _wanted_range(size: int, etag: str | None) -> tuple[int, int] | str | None:
    """Return the one byte range asked for, None for the whole file, or "unsatisfiable".

    A malformed header or several ranges are answered with the whole file (RFC 9110 lets a
    server ignore ``Range``); so is a ``Range`` whose ``If-Range`` names another validator.
    """
    header = request.headers.get("Range")
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.replace(" ", ""))
    if match is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and (etag is None or if_range.strip() != f'"{etag}"'):
        return None
    first, last, suffix = match.groups()
    if suffix is not None:  # the last n bytes (all of them when n is larger)
        start, stop = max(size - int(suffix), 0), size
    else:
        start = int(first)
        stop = size if not last else min(int(last) + 1, size)
        if last and int(last) < start:
            return None  # syntactically invalid: ignored
    if start >= stop:
        return "unsatisfiable"
    return start, stop


def _download_name(path: str) -> dict[str, str]:
    """Return ``Content-Disposition`` parameters naming the file safely (RFC 6266).

    ``filename`` is werkzeug's ``secure_filename`` of the last component (ASCII letters,
    digits, ``_ . -``); a name it changes also goes whole as ``filename*`` (UTF-8,
    percent-encoded), unless it holds invisible or direction-changing characters, which
    would show a browser's user another name than the file's.
    """
    leaf = path.rpartition("/")[2]
    simple = secure_filename(leaf) or "download"
    if simple == leaf or has_hidden_characters(leaf):
        return {"filename": simple}
    exact = quote(unicodedata.normalize("NFC", leaf), safe="!#$&+-.^_`|~")
    return {"filename": simple, "filename*": f"UTF-8''{exact}"}


class _Body:
    """A file's bytes as a WSGI body; the server closes it (and with it the archive)."""

    def __init__(self, stream: MemberStream, first: bytes, where: str) -> None:
        self.stream, self.first, self.where = stream, first, where

    def __iter__(self) -> Iterator[bytes]:
        if self.first:
            yield self.first
        try:
            yield from self.stream.chunks(PIECE)
        except InvalidArchive as exc:
            # Bytes are out already: raising makes the server cut the connection, so the
            # client sees a short body instead of a whole-looking wrong file.
            log.warning("damage found while sending %s: %s", self.where, exc)
            raise

    def close(self) -> None:
        self.stream.close()
