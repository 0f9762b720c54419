"""The archive engine: create, list, verify, restore, delete and recover run snapshots.

This package knows nothing of Flask, RQ or Redis (an import-linter contract enforces it); the
job and web layers, and the CLI, are thin adapters over these functions.
"""

from .catalog import ArchiveInfo, delete_archive, describe_archive, list_archives
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
    RunArchiveError,
    UnsafeArchive,
)
from .journal import RecoverResult, purge_trash, recover_run
from .limits import Limits
from .names import (
    archive_path,
    is_archive_name,
    normalize_comment,
    validate_archive_name,
    validate_runid,
)
from .progress import Phase, ProgressCallback, ProgressEvent
from .reader import ArchiveReader, VerifyReport, verify_archive
from .restore import RestoreResult, restore_archive
from .runlock import run_lock
from .tree import find_nodb_files

__all__ = [
    "ArchiveInfo",
    "ArchiveReader",
    "Busy",
    "CreateResult",
    "DamagedArchive",
    "InvalidArchive",
    "InvalidInput",
    "LimitExceeded",
    "Limits",
    "Locked",
    "NoSpace",
    "NotFound",
    "Phase",
    "ProgressCallback",
    "ProgressEvent",
    "RecoverResult",
    "RestoreResult",
    "RunArchiveError",
    "UnsafeArchive",
    "VerifyReport",
    "archive_path",
    "create_archive",
    "delete_archive",
    "describe_archive",
    "find_nodb_files",
    "is_archive_name",
    "list_archives",
    "normalize_comment",
    "purge_trash",
    "recover_run",
    "restore_archive",
    "run_lock",
    "validate_archive_name",
    "validate_runid",
    "verify_archive",
]
