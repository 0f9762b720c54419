"""Post-restore hooks: tell the host application that the run's files changed under it.

A hook is a function ``hook(HookContext) -> str | None``; a returned string is published as a
status line. Hooks are named by import path (``"package.module:function"``) in the setting
``post_restore_hooks`` (env ``RUNARCHIVE_POST_RESTORE_HOOKS``, comma-separated, ``none`` for no
hook) and run in order after the restore is in place and before ``Restore complete``.

A failing hook fails the job (``RESTORE_FAILED``): the files are restored, but the host
application may still serve (and write back) its cached pre-restore state, which an operator must
know about. The default hook, ``clear_nodb_cache``, deletes WEPPcloud's NoDb cache entries:
keys named by the absolute path of each ``.nodb`` file of the run, in the NoDb cache database
(``nodb_cache_db``, WEPPcloud: 13).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runarchive.core import InvalidInput, find_nodb_files

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
