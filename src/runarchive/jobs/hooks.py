"""Post-restore and post-fork hooks: tell the host application what changed under it.

A hook is a function ``hook(HookContext) -> str | None``; a returned string is published as a
status line. Hooks are named by import path (``"package.module:function"``) in the setting
``post_restore_hooks`` (env ``RUNARCHIVE_POST_RESTORE_HOOKS``, comma-separated, ``none`` for no
hook) and run in order after the restore is in place and before ``Restore complete``.

A failing hook fails the job (``RESTORE_FAILED``): the files are restored, but the host
application may still serve (and write back) its cached pre-restore state, which an operator must
know about. The default hook, ``clear_nodb_cache``, deletes WEPPcloud's NoDb cache entries:
keys named by the absolute path of each ``.nodb`` file of the run, in the NoDb cache database
(``nodb_cache_db``, WEPPcloud: 13).

**Post-fork hooks** (``post_fork_hooks``, env ``RUNARCHIVE_POST_FORK_HOOKS``) are functions
``hook(ForkHookContext) -> str | None`` run by a fork job on the new run **while it is still
staged**: after every byte was extracted and verified, before the one rename that makes it
appear. So whatever a hook changes is part of the run from its first instant, and a failing
hook fails the job (``FORK_FAILED``) with no new run at all. The files are in ``stage_dir``
(reach them through ``stage``, a handle: the archive's entries may hold links); the run will
appear at ``run_dir``. The default, ``rewrite_nodb_paths``, replaces the source run's absolute
path by the new run's in the ``.nodb`` files, as WEPPcloud's fork does to a copied run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runarchive.core import Folder, ForkStage, InvalidInput, find_nodb_files, rewrite_run_paths

from .keys import Keys
from .lines import cache_cleared_line


@dataclass(frozen=True, slots=True)
class HookContext:
    """What a post-restore hook may use."""

    runid: str
    run_dir: Path
    archive_name: str
    cache_client: Any
    data_client: Any
    # The run's .nodb files after the restore, when the caller knows them (the job does: the
    # restored ones); else the hook walks the run for them.
    nodb_files: tuple[str, ...] | None = None


Hook = Callable[[HookContext], "str | None"]


@dataclass(frozen=True, slots=True)
class ForkHookContext:
    """What a post-fork hook may use: the new run while it is staged, and its source."""

    runid: str  # the new run's id
    run_dir: Path  # where the new run will appear
    stage_dir: Path  # where its files are now
    stage: Folder  # the staged run by handle: open its files beneath it
    source_runid: str
    source_dir: Path
    archive_name: str
    nodb_files: tuple[str, ...]  # the new run's .nodb files (the archive's)
    cache_client: Any
    data_client: Any

    def fork_stage(self) -> ForkStage:
        """The core's view of the staged run (what ``core.rewrite_run_paths`` takes)."""
        return ForkStage(self.runid, self.stage, self.stage_dir, self.run_dir, self.nodb_files)


ForkHook = Callable[[ForkHookContext], "str | None"]


def load_hook(spec: str) -> Hook:
    """Import the hook named ``package.module:function``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInput(f"Invalid hook {spec!r}: expected 'package.module:function'.")
    func = getattr(importlib.import_module(module_name), attr, None)
    if not callable(func):
        raise InvalidInput(f"Hook {spec!r} is not a function.")
    hook: Hook = func
    return hook


def clear_nodb_cache(ctx: HookContext) -> str:
    """Delete the NoDb cache entries of the run's ``.nodb`` files (present and cached)."""
    client = ctx.cache_client
    relpaths = ctx.nodb_files if ctx.nodb_files is not None else find_nodb_files(ctx.run_dir)
    keys: set[str] = set()
    # The host may have cached under the resolved path or the path it was configured with.
    for run in dict.fromkeys([ctx.run_dir.resolve(), ctx.run_dir.absolute()]):
        keys.update(Keys.nodb_cache(run / relpath) for relpath in relpaths)
        for key in client.scan_iter(match=Keys.nodb_cache_pattern(run), count=500):
            if str(key).endswith(".nodb"):
                keys.add(str(key))
    removed = 0
    for key in sorted(keys):
        removed += int(client.delete(key))
    return cache_cleared_line(removed)


def load_fork_hook(spec: str) -> ForkHook:
    """Import the post-fork hook named ``package.module:function``."""
    hook: ForkHook = load_hook(spec)  # type: ignore[assignment]
    return hook


def rewrite_nodb_paths(ctx: ForkHookContext) -> str:
    """Point the new run's ``.nodb`` files at the new run: the source run's absolute path (as
    configured and as resolved) becomes the new run's wherever it names a whole folder."""
    old = [str(ctx.source_dir.absolute()), str(ctx.source_dir.resolve())]
    changed = rewrite_run_paths(ctx.fork_stage(), old)
    return f"Rewrote run paths in {len(changed)} .nodb file{'s' * (len(changed) != 1)}"
