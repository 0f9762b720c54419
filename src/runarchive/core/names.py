"""Names that come from outside: run ids, archive names, comments.

Every name is validated here before it reaches the filesystem, so a caller never has to think
about ``../``, absolute paths or odd extensions.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import InvalidInput

ARCHIVES_DIR = "archives"
# Our state that persists between operations (lock, journal) lives in ``archives/.runarchive``:
# WEPPcloud's own archiver takes everything but ``archives/``, so nothing of ours gets into its
# archives. Only a restore's transient folders sit at the run's top (same filesystem as the
# run, for atomic renames), named ``.runarchive-(stage|old|trash)-<id>``.
STATE_DIR = ".runarchive"
LEGACY_WORK_DIR = ".runarchive"  # at the run's top: where versions before 0.2 kept it
# The manifest's entry in every archive (``manifest``), named here: listing archives skips it
# without loading the manifest's code.
MANIFEST_NAME = ".runarchive/manifest.json"
TRANSIENT_RE = re.compile(r"\.runarchive-(stage|old|trash)-([0-9a-f]{12})(\.scratch)?")
MAX_COMMENT_CHARS = 40

# Matched with ``fullmatch``: ``$`` would also accept a trailing newline.
RUNID_RE = re.compile(r"[A-Za-z0-9_.;-]+")
ARCHIVE_NAME_RE = re.compile(
    r"(?P<runid>[A-Za-z0-9_.;-]+)\.(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<seq>[1-9][0-9]{0,5}))?\.zip"
)
# Any zip a person or another tool put in ``archives/`` is listed when its name is safe to put
# in a URL path and on a command line unquoted: no leading dot (our temp files, hidden files)
# or dash (option-like), no spaces, no path separators. Names we generate match both.
SAFE_ARCHIVE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.;+-]{0,250}\.[Zz][Ii][Pp]")
# Control, format (bidi overrides, zero-width), surrogate, private-use and line/paragraph
# separator characters: invisible or reordering text has no place in a name people read.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def validate_runid(runid: str) -> str:
    """Return ``runid`` if it is a safe run id, else raise InvalidInput."""
    if not isinstance(runid, str) or not RUNID_RE.fullmatch(runid) or is_dot_component(runid):
        raise InvalidInput(f"Invalid run id {runid!r}: use letters, digits and _ . ; - only.")
    if len(runid) > 200:
        raise InvalidInput("Invalid run id: longer than 200 characters.")
    return runid


GENERATED_RUNID_CHARS = "abcdefghijkmnpqrstuvwxyz23456789"  # no l, o, 0, 1: read aloud safely
GENERATED_RUNID_LENGTH = 10


def generate_runid() -> str:
    """Return a fresh run id for a fork that was not given one: a short random token.

    Ten lowercase letters and digits (50 bits; no ``l``/``o``/``0``/``1``), starting with a
    letter: WEPPcloud's own alphabet, valid under ``validate_runid``, longer than a shard.
    """
    import secrets

    first = secrets.choice(GENERATED_RUNID_CHARS[:24])
    rest = "".join(secrets.choice(GENERATED_RUNID_CHARS) for _ in range(GENERATED_RUNID_LENGTH - 1))
    return validate_runid(first + rest)


def validate_archive_name(name: str) -> str:
    """Return ``name`` if it is a safe ``*.zip`` file name, else raise InvalidInput."""
    if not isinstance(name, str) or not is_archive_name(name):
        raise InvalidInput(
            f"Invalid archive name {name!r}: expected a file name ending in .zip made of "
            "letters, digits and _ . ; + - (not starting with . or -), as `runarchive list` "
            "shows them."
        )
    return name


@dataclass(frozen=True, slots=True)
class ArchiveRef:
    """An archive name validated once, at the edge (``archive_ref``), then handed down as is.

    Functions that take ``str | ArchiveRef`` validate a string and trust a reference, so a name
    that crossed the API, the queue or the command line is checked exactly once per process.
    """

    name: str

    def __str__(self) -> str:
        return self.name


def archive_ref(name: str | ArchiveRef) -> ArchiveRef:
    """Return ``name`` as a validated reference (InvalidInput for a bad name)."""
    return name if isinstance(name, ArchiveRef) else ArchiveRef(validate_archive_name(name))


def is_archive_name(name: str) -> bool:
    """Tell whether ``name`` is a listable archive name (ours or any safe ``*.zip``)."""
    return len(name) <= 255 and SAFE_ARCHIVE_RE.fullmatch(name) is not None


def archive_created(name: str, mtime: float) -> datetime:
    """Return when an archive was made: the UTC time in a name we generated, else its mtime."""
    match = ARCHIVE_NAME_RE.fullmatch(name)
    if match is not None:
        # By hand, not strptime: its first call imports _strptime and compiles the format
        # (~2 ms of every ``archive`` and ``list``); the pattern fixed the digits, and
        # datetime refuses a month 13 or a second 60 as strptime does.
        s = match["stamp"]
        return datetime(int(s[:4]), int(s[4:6]), int(s[6:8]), int(s[9:11]), int(s[11:13]),
                        int(s[13:15]), tzinfo=UTC)  # fmt: skip
    return datetime.fromtimestamp(mtime, UTC)


def archive_sort_key(name: str, mtime: float) -> tuple[str, int, str]:
    """Order archives by creation time, then by collision suffix, then by name."""
    match = ARCHIVE_NAME_RE.fullmatch(name)
    if match is not None:
        return (match["stamp"], int(match["seq"] or 1), name)
    stamp = datetime.fromtimestamp(mtime, UTC).strftime(STAMP_FORMAT)
    return (stamp, 0, name)


def new_archive_name(runid: str, when: datetime, taken: set[str]) -> str:
    """Return a fresh name for ``when`` that is not in ``taken`` (``-2``, ``-3`` … on collision)."""
    stamp = when.astimezone(UTC).strftime(STAMP_FORMAT)
    name = f"{runid}.{stamp}.zip"
    seq = 2
    while name in taken:
        name = f"{runid}.{stamp}-{seq}.zip"
        seq += 1
    return name


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment as stored: trimmed, at most MAX_COMMENT_CHARS, and whether it was cut."""

    text: str
    cut: bool = False


def parse_comment(comment: str | Comment | None) -> Comment:
    """Apply the one comment rule of every interface (WEPPcloud's): trim, cut to 40 characters.

    Cutting is reported, not refused; only what cannot be stored is refused — control,
    invisible or direction-changing characters and unpaired surrogates (InvalidInput).
    """
    if comment is None:
        return Comment("")
    if isinstance(comment, Comment):  # parsed at the edge already: the value is handed down
        return comment
    text = comment.strip()
    if has_hidden_characters(text):
        raise InvalidInput(
            "Comment may not contain control characters, line breaks, or invisible or "
            "direction-changing characters (such as bidi overrides and zero-width spaces)."
        )
    if len(text) > MAX_COMMENT_CHARS:
        return Comment(text[:MAX_COMMENT_CHARS].rstrip(), cut=True)
    return Comment(text)


def normalize_comment(comment: str | Comment | None) -> str:
    """Return the comment as it is stored (see ``parse_comment``)."""
    return parse_comment(comment).text


def is_reserved_top(name: str) -> bool:
    """Tell whether a top-level name of a run is ours (never archived, restored or replaced)."""
    return name in (ARCHIVES_DIR, LEGACY_WORK_DIR) or TRANSIENT_RE.fullmatch(name) is not None


def has_hidden_characters(text: str) -> bool:
    """Tell whether ``text`` holds a control, invisible, bidi or unpaired-surrogate character.

    The rule for text people read (comments): stricter than ``has_control_characters``.
    """
    return any(unicodedata.category(ch) in _HIDDEN_CATEGORIES for ch in text)


# Exactly Unicode's ``Cc``: C0, DEL and C1.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_control_character(ch: str) -> bool:
    """Tell whether ``ch`` is a control character: C0 (incl. NUL, newline), DEL or C1 (``Cc``)."""
    return unicodedata.category(ch) == "Cc"


def has_control_characters(text: str) -> bool:
    """Tell whether ``text`` holds a control character: the one rule for paths, lock names,
    redirect targets and archive entry names (text that reaches a terminal or a log)."""
    return _CONTROL_RE.search(text) is not None  # one regex search: names are checked by the 30,000


def is_dot_component(part: str) -> bool:
    """Tell whether a path component is ``.`` or ``..``: never a name, whatever the context."""
    return part in (".", "..")


def display_comment(comment: str) -> str:
    """Return a stored zip comment as lists show it: at most 40 characters (then ``…``), control
    characters replaced (U+FFFD).

    Our archives carry at most 40 (``parse_comment``), but a zip copied into ``archives/`` by
    hand may carry up to 64 KiB of anything; a list stays small and printable whatever it holds.
    """
    cut = "".join("\ufffd" if is_control_character(c) else c for c in comment[:MAX_COMMENT_CHARS])
    return cut + "\u2026" if len(comment) > MAX_COMMENT_CHARS else cut


def split_relpath(rel: str) -> list[str]:
    """Return the parts of a relative POSIX path; refuse empty, ``.``, ``..`` and NUL parts."""
    parts = rel.split("/")
    if not rel or any(not p or is_dot_component(p) or "\x00" in p for p in parts):
        raise ValueError(f"not a relative path of plain components: {rel!r}")
    return parts


MAX_RELPATH_BYTES = 4096


def is_run_relpath(path: object) -> bool:
    """Tell whether ``path`` names something of the run a restore may replace, component by
    component: plain parts (no empty, ``.``/``..``, control character or part over 255 bytes),
    at most 4096 bytes, its first part not ours (``archives/``, transient folders).

    The rule for relative paths read back from our own state (journal, undo record).
    """
    if not isinstance(path, str) or not path or has_control_characters(path):
        return False
    if len(path.encode("utf-8", "surrogateescape")) > MAX_RELPATH_BYTES:
        return False
    parts = path.split("/")
    if any(
        not p or is_dot_component(p) or len(p.encode("utf-8", "surrogateescape")) > 255
        for p in parts
    ):
        return False
    return not is_reserved_top(parts[0])


def run_id_of(run_dir: Path) -> str:
    """Return the run id of a run directory: its name, validated."""
    return validate_runid(run_dir.name)
