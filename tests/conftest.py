"""Shared fixtures: a fresh run directory per test, named like a real run id."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs" / "ambitious-pinecone"
    path.mkdir(parents=True)
    return path
