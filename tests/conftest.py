"""Test-wide settings: offline, and every test's data under its own temporary home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aof_index.offline import configure_offline

configure_offline()


@pytest.fixture(autouse=True)
def aof_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point ``$AOF_INDEX_HOME`` at a fresh folder and clear LLM settings for each test."""
    home = tmp_path / "aof-home"
    monkeypatch.setenv("AOF_INDEX_HOME", str(home))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AOF_INDEX_LLM_BASE_URL", "AOF_INDEX_MEMORY"):
        monkeypatch.delenv(var, raising=False)
    yield home
