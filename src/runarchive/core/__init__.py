"""The archive engine: create, list, verify, restore, delete and recover run snapshots.

This package knows nothing of Flask, RQ or Redis (an import-linter contract enforces it); the
job and web layers, and the CLI, are thin adapters over these functions.
"""

from .catalog import ArchiveInfo, delete_archive, list_archives
from .create import CreateResult, create_archive
from .errors import (
    Busy,
    DamagedArchive,
    InvalidArchive,
    InvalidInput,
    LimitExceeded,
    Locked,
    NoSpace,
    NotFound,
    ReadOnlyRun,
    RunArchiveError,
    UnsafeArchive,
    UnsafeRun,
)
from .fsutil import human_bytes
from .isotime import iso_utc
from .journal import RecoverResult, check_run, purge_trash, recover_run
from .limits import Limits
from .links import LinkMode, parse_link_mode
from .names import (
    MAX_COMMENT_CHARS,
    RUNID_RE,
    SAFE_ARCHIVE_RE,
    ArchiveRef,
    Comment,
    archive_ref,
    display_comment,
    has_control_characters,
    has_hidden_characters,
    is_archive_name,
    is_dot_component,
    normalize_comment,
    parse_comment,
    validate_archive_name,
    validate_runid,
)
from .progress import Phase, ProgressCallback, ProgressEvent
from .reader import ArchiveReader, VerifyReport, open_archive, open_archive_fd, verify_archive
from .restore import RestorePreview, RestoreResult, preview_restore, restore_archive
from .rundir import Folder, RunDir, RunRef, open_run
from .runlock import run_lock
from .tree import Tree, find_nodb_files, nodb_files, scan_run

__all__ = [
    "MAX_COMMENT_CHARS",
    "RUNID_RE",
    "SAFE_ARCHIVE_RE",
    "ArchiveInfo",
    "ArchiveReader",
    "ArchiveRef",
    "Busy",
    "Comment",
    "CreateResult",
    "DamagedArchive",
    "Folder",
    "InvalidArchive",
    "InvalidInput",
    "LimitExceeded",
    "Limits",
    "LinkMode",
    "Locked",
    "NoSpace",
    "NotFound",
    "Phase",
    "ProgressCallback",
    "ProgressEvent",
    "ReadOnlyRun",
    "RecoverResult",
    "RestorePreview",
    "RestoreResult",
    "RunArchiveError",
    "RunDir",
    "RunRef",
    "Tree",
    "UnsafeArchive",
    "UnsafeRun",
    "VerifyReport",
    "archive_ref",
    "check_run",
    "create_archive",
    "delete_archive",
    "display_comment",
    "find_nodb_files",
    "has_control_characters",
    "has_hidden_characters",
    "human_bytes",
    "is_archive_name",
    "is_dot_component",
    "iso_utc",
    "list_archives",
    "nodb_files",
    "normalize_comment",
    "open_archive",
    "open_archive_fd",
    "open_run",
    "parse_comment",
    "parse_link_mode",
    "preview_restore",
    "purge_trash",
    "recover_run",
    "restore_archive",
    "run_lock",
    "scan_run",
    "validate_archive_name",
    "validate_runid",
    "verify_archive",
]
