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
        Pinned,
        ReadOnlyRun,
        RunArchiveError,
        UnsafeArchive,
        UnsafeRun,
    )
    from .fsutil import human_bytes
    from .inside import (
        Contents,
        Entry,
        Listing,
        list_entries,
        open_contents,
        read_contents,
        stat_entry,
    )
    from .isotime import iso_utc
    from .journal import RecoverResult, check_run, purge_trash, recover_run
    from .limits import Limits
    from .linkmode import LinkMode, parse_link_mode
    from .member import Extracted, MemberStream, extract_files, open_member
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
    from .pins import pinned_names, set_pinned
    from .progress import Phase, ProgressCallback, ProgressEvent
    from .prune import plan_prune, prune_archives
    from .reader import ArchiveReader, VerifyReport, open_archive, open_archive_fd, verify_archive
    from .restore import RestorePreview, RestoreResult, preview_restore, restore_archive
    from .retention import (
        MAX_KEEP,
        POLICY_ENV,
        Candidate,
        Kept,
        Plan,
        Policy,
        parse_policy,
        plan_retention,
        policy_from_env,
    )
    from .retention import RULES as RETENTION_RULES
    from .rundir import Folder, RunDir, RunRef, open_run
    from .runlock import run_lock
    from .runpolicy import effective_policy, run_policy, set_run_policy
    from .tree import Tree, find_nodb_files, nodb_files, scan_run

# Every public name and the submodule that defines it.
_EXPORTS = {
    "Pinned": "errors",
    "pinned_names": "pins",
    "set_pinned": "pins",
    "plan_prune": "prune",
    "prune_archives": "prune",
    "MAX_KEEP": "retention",
    "POLICY_ENV": "retention",
    "Candidate": "retention",
    "Kept": "retention",
    "Plan": "retention",
    "Policy": "retention",
    "parse_policy": "retention",
    "plan_retention": "retention",
    "policy_from_env": "retention",
    "RETENTION_RULES": "retention:RULES",
    "effective_policy": "runpolicy",
    "run_policy": "runpolicy",
    "set_run_policy": "runpolicy",
    "ArchiveInfo": "catalog",
    "ArchiveReader": "reader",
    "ArchiveRef": "names",
    "Busy": "errors",
    "Change": "compare",
    "Comment": "names",
    "Contents": "inside",
    "CreateResult": "create",
    "DamagedArchive": "errors",
    "Diff": "compare",
    "Entry": "inside",
    "EntryNotFound": "errors",
    "Extracted": "member",
    "Folder": "rundir",
    "InvalidArchive": "errors",
    "InvalidCursor": "errors",
    "InvalidInput": "errors",
    "LimitExceeded": "errors",
    "Limits": "limits",
    "LinkMode": "linkmode",
    "Listing": "inside",
    "Locked": "errors",
    "MAX_COMMENT_CHARS": "names",
    "MemberStream": "member",
    "NoSpace": "errors",
    "NotFound": "errors",
    "NotText": "errors",
    "Phase": "progress",
    "ProgressCallback": "progress",
    "ProgressEvent": "progress",
    "Proof": "compare",
    "RUNID_RE": "names",
    "ReadOnlyRun": "errors",
    "Reason": "compare",
    "RecoverResult": "journal",
    "RestorePreview": "restore",
    "RestoreResult": "restore",
    "RunArchiveError": "errors",
    "RunDir": "rundir",
    "RunRef": "rundir",
    "SAFE_ARCHIVE_RE": "names",
    "TextDiff": "compare",
    "Tree": "tree",
    "UnsafeArchive": "errors",
    "UnsafeRun": "errors",
    "VerifyReport": "reader",
    "archive_ref": "names",
    "check_run": "journal",
    "create_archive": "create",
    "delete_archive": "catalog",
    "diff_against_run": "compare",
    "diff_archives": "compare",
    "diff_text": "compare",
    "display_comment": "names",
    "extract_files": "member",
    "find_nodb_files": "tree",
    "has_control_characters": "names",
    "has_hidden_characters": "names",
    "human_bytes": "fsutil",
    "is_archive_name": "names",
    "is_dot_component": "names",
    "iso_utc": "isotime",
    "list_archives": "catalog",
    "list_entries": "inside",
    "nodb_files": "tree",
    "normalize_comment": "names",
    "open_archive": "reader",
    "open_archive_fd": "reader",
    "open_contents": "inside",
    "open_member": "member",
    "open_run": "rundir",
    "page_diff": "compare",
    "parse_comment": "names",
    "parse_link_mode": "linkmode",
    "preview_restore": "restore",
    "purge_trash": "journal",
    "read_contents": "inside",
    "recover_run": "journal",
    "restore_archive": "restore",
    "run_lock": "runlock",
    "scan_run": "tree",
    "stat_entry": "inside",
    "validate_archive_name": "names",
    "validate_runid": "names",
    "verify_archive": "reader",
}

__all__ = [
    "MAX_COMMENT_CHARS",
    "MAX_KEEP",
    "POLICY_ENV",
    "RETENTION_RULES",
    "RUNID_RE",
    "SAFE_ARCHIVE_RE",
    "ArchiveInfo",
    "ArchiveReader",
    "ArchiveRef",
    "Busy",
    "Candidate",
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
    "Kept",
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
    "Pinned",
    "Plan",
    "Policy",
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
    "RunRef",
    "TextDiff",
    "Tree",
    "UnsafeArchive",
    "UnsafeRun",
    "VerifyReport",
    "archive_ref",
    "check_run",
    "create_archive",
    "delete_archive",
    "diff_against_run",
    "diff_archives",
    "diff_text",
    "display_comment",
    "effective_policy",
    "extract_files",
    "find_nodb_files",
    "has_control_characters",
    "has_hidden_characters",
    "human_bytes",
    "is_archive_name",
    "is_dot_component",
    "iso_utc",
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
    "parse_policy",
    "pinned_names",
    "plan_prune",
    "plan_retention",
    "policy_from_env",
    "preview_restore",
    "prune_archives",
    "purge_trash",
    "read_contents",
    "recover_run",
    "restore_archive",
    "run_lock",
    "run_policy",
    "scan_run",
    "set_pinned",
    "set_run_policy",
    "stat_entry",
    "validate_archive_name",
    "validate_runid",
    "verify_archive",
]


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first use, and keep the name here."""
    spec = _EXPORTS.get(name)
    if spec is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attr = spec.partition(":")  # "module:name" when exported under another name
    value = getattr(importlib.import_module(f".{module}", __name__), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
