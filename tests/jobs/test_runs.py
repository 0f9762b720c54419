from __future__ import annotations

from pathlib import Path

import pytest

from runarchive.core import InvalidInput, NotFound
from runarchive.jobs.runs import find_run, resolve_run
from runarchive.jobs.settings import Settings


def _settings(root: Path, layout: str = "auto") -> Settings:
    return Settings(runs_root=root, run_layout=layout)


def test_it_finds_flat_and_sharded_runs(tmp_path: Path) -> None:
    (tmp_path / "flat-run").mkdir()
    (tmp_path / "sh" / "sharded-run").mkdir(parents=True)
    assert resolve_run(_settings(tmp_path), "flat-run") == tmp_path / "flat-run"
    assert resolve_run(_settings(tmp_path), "sharded-run") == tmp_path / "sh" / "sharded-run"
    assert resolve_run(_settings(tmp_path, "sharded"), "sharded-run").parent.name == "sh"
    with pytest.raises(NotFound):
        resolve_run(_settings(tmp_path, "sharded"), "flat-run")
    with pytest.raises(NotFound):
        resolve_run(_settings(tmp_path, "flat"), "sharded-run")


@pytest.mark.parametrize("runid", ["..", ".", "../x", "a/b", "", "a b", "x\x00"])
def test_it_refuses_run_ids_that_could_leave_the_root(tmp_path: Path, runid: str) -> None:
    with pytest.raises(InvalidInput):
        resolve_run(_settings(tmp_path), runid)


def test_a_dotted_run_id_cannot_use_the_parent_as_its_shard(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "..evil").mkdir()  # would be <root>/../..evil with a ".." shard
    assert find_run(_settings(root, "sharded"), "..evil") is None
    assert find_run(_settings(root), "..evil") is None


def test_it_needs_a_runs_root() -> None:
    with pytest.raises(InvalidInput, match="RUNARCHIVE_RUNS_ROOT"):
        resolve_run(Settings(), "abc")


def test_a_two_character_run_id_is_never_taken_for_the_shard_folder_of_other_runs(
    tmp_path: Path,
) -> None:
    # <root>/ab is the shard of every run whose id starts with "ab" (auto layout).
    (tmp_path / "ab" / "abcdef-other").mkdir(parents=True)
    assert find_run(_settings(tmp_path), "ab") is None
    (tmp_path / "ab" / "ab").mkdir()
    assert resolve_run(_settings(tmp_path), "ab") == tmp_path / "ab" / "ab"
    assert resolve_run(_settings(tmp_path, "flat"), "ab") == tmp_path / "ab"  # flat: no shards


def test_a_link_in_the_runs_root_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked-run").symlink_to(tmp_path / "elsewhere")
    assert find_run(_settings(tmp_path / "root"), "linked-run") is None
