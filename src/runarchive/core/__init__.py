"""The archive engine: create, list, verify, restore, delete and recover run snapshots.

This package knows nothing of Flask, RQ or Redis (an import-linter contract enforces it); the
job and web layers, and the CLI, are thin adapters over these functions.
"""

from .catalog import ArchiveInfo, delete_archive, list_archives
from .compare import (
    Change,
    Diff,
    Proof,
    Reason,
    TextDiff,
    diff_against_run,
    diff_archives,
    diff_text,
    page_diff,
)
from .create import CreateResult, create_archive
from .errors import (
    Busy,
    DamagedArchive,
    EntryNotFound,
    InvalidArchive,
    InvalidCursor,
    InvalidInput,
    LimitExceeded,
    Locked,
    NoSpace,
    NotFound,
    NotText,
    ReadOnlyRun,
    RunArchiveError,
    UnsafeArchive,
    UnsafeRun,
)
from .inside import (
    Contents,
    Entry,
    Listing,
    list_entries,
    open_contents,
    read_contents,
    stat_entry,
)
from .journal import RecoverResult, check_run, purge_trash, recover_run
from .limits import Limits
from .links import LinkMode, parse_link_mode
from .member import Extracted, MemberStream, extract_files, open_member
from .names import (
    Comment,
    has_hidden_characters,
    is_archive_name,
    normalize_comment,
    parse_comment,
    validate_archive_name,
    validate_runid,
)
from .progress import Phase, ProgressCallback, ProgressEvent
from .reader import ArchiveReader, VerifyReport, open_archive, open_archive_fd, verify_archive
from .restore import RestorePreview, RestoreResult, preview_restore, restore_archive
from .rundir import Folder, RunDir, open_run
from .runlock import run_lock
from .tree import find_nodb_files, nodb_files, scan_run

__all__ = [
    "ArchiveInfo",
    "ArchiveReader",
    "Busy",
    "Change",
    "Comment",
    "Contents",
    "CreateResult",
    "DamagedArchive",
    "Diff",
    "Entry",
    "EntryNotFound",
    "Extracted",
    "Folder",
    "InvalidArchive",
    "InvalidCursor",
    "InvalidInput",
    "LimitExceeded",
    "Limits",
    "LinkMode",
    "Listing",
    "Locked",
    "MemberStream",
    "NoSpace",
    "NotFound",
    "NotText",
    "Phase",
    "ProgressCallback",
    "ProgressEvent",
    "Proof",
    "ReadOnlyRun",
    "Reason",
    "RecoverResult",
    "RestorePreview",
    "RestoreResult",
    "RunArchiveError",
    "RunDir",
    "TextDiff",
    "UnsafeArchive",
    "UnsafeRun",
    "VerifyReport",
    "check_run",
    "create_archive",
    "delete_archive",
    "diff_against_run",
    "diff_archives",
    "diff_text",
    "extract_files",
    "find_nodb_files",
    "has_hidden_characters",
    "is_archive_name",
    "list_archives",
    "list_entries",
    "nodb_files",
    "normalize_comment",
    "open_archive",
    "open_archive_fd",
    "open_contents",
    "open_member",
    "open_run",
    "page_diff",
    "parse_comment",
    "parse_link_mode",
    "preview_restore",
    "purge_trash",
    "read_contents",
    "recover_run",
    "restore_archive",
    "run_lock",
    "scan_run",
    "stat_entry",
    "validate_archive_name",
    "validate_runid",
    "verify_archive",
]
