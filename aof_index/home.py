"""Where aof-index keeps its data: ``$AOF_INDEX_HOME``, else the per-user data folder."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir

__all__ = ["data_home", "knowledge_dir", "memory_dir"]


def data_home() -> Path:
    """The root data folder: ``$AOF_INDEX_HOME`` or e.g. ``~/.local/share/aof-index``."""
    env = os.environ.get("AOF_INDEX_HOME")
    return Path(env).expanduser() if env else Path(user_data_dir("aof-index"))


def memory_dir(namespace: str, name: str, home: Path | None = None) -> Path:
    """The folder of one Memory resource's embedded stores (not created here)."""
    return (home or data_home()) / "memories" / namespace / name


def knowledge_dir(namespace: str, name: str, home: Path | None = None) -> Path:
    """The folder of one KnowledgeBase's sync state (not created here)."""
    return (home or data_home()) / "knowledge" / namespace / name
