"""The archive engine: create, list, verify, restore, delete and recover run snapshots.

This package knows nothing of Flask, RQ or Redis (an import-linter contract enforces it); the
job and web layers, and the CLI, are thin adapters over these functions.

Exports load lazily (PEP 562): ``import runarchive.core`` loads nothing but this table, and
the first use of a name imports the one module that defines it. Start-up is part of every
CLI command's time, and ``list`` need not pay for ``create``'s deflate library and thread
pool, or ``restore``'s journal, to read a few central directories.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what mypy and readers see; at run time ``__getattr__`` imports on use
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
    from .journal import RecoverResult, check_run, purge_trash, recover_run
    from .limits import Limits
    from .links import LinkMode, parse_link_mode
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

# Every public name and the submodule that defines it.
_EXPORTS = {
    "ArchiveInfo": "catalog",
    "ArchiveReader": "reader",
    "Busy": "errors",
    "Comment": "names",
    "CreateResult": "create",
    "DamagedArchive": "errors",
    "Folder": "rundir",
    "InvalidArchive": "errors",
    "InvalidInput": "errors",
    "LimitExceeded": "errors",
    "Limits": "limits",
    "LinkMode": "links",
    "Locked": "errors",
    "NoSpace": "errors",
    "NotFound": "errors",
    "Phase": "progress",
    "ProgressCallback": "progress",
    "ProgressEvent": "progress",
    "ReadOnlyRun": "errors",
    "RecoverResult": "journal",
    "RestorePreview": "restore",
    "RestoreResult": "restore",
    "RunArchiveError": "errors",
    "RunDir": "rundir",
    "UnsafeArchive": "errors",
    "UnsafeRun": "errors",
    "VerifyReport": "reader",
    "check_run": "journal",
    "create_archive": "create",
    "delete_archive": "catalog",
    "find_nodb_files": "tree",
    "has_hidden_characters": "names",
    "is_archive_name": "names",
    "list_archives": "catalog",
    "nodb_files": "tree",
    "normalize_comment": "names",
    "open_archive": "reader",
    "open_archive_fd": "reader",
    "open_run": "rundir",
    "parse_comment": "names",
    "parse_link_mode": "links",
    "preview_restore": "restore",
    "purge_trash": "journal",
    "recover_run": "journal",
    "restore_archive": "restore",
    "run_lock": "runlock",
    "scan_run": "tree",
    "validate_archive_name": "names",
    "validate_runid": "names",
    "verify_archive": "reader",
}

__all__ = [
    "ArchiveInfo",
    "ArchiveReader",
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
    "UnsafeArchive",
    "UnsafeRun",
    "VerifyReport",
    "check_run",
    "create_archive",
    "delete_archive",
    "find_nodb_files",
    "has_hidden_characters",
    "is_archive_name",
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


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first use, and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
