"""Integration fixtures: real stores on disk, real servers on 127.0.0.1."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

import pytest
from beir_cut import cut_scifact

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def runbooks(tmp_path: Path) -> Path:
    """A writable copy of the runbooks shipped for the demo."""
    target = tmp_path / "runbooks"
    shutil.copytree(str(files("aof_index.demo") / "corpus"), target)
    return target


@pytest.fixture(scope="session")
def mini_scifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BEIR folder cut from the real SciFact data: 40 judged queries, their
    relevant documents and 300 other documents as distractors."""
    return cut_scifact(
        tmp_path_factory.mktemp("mini-scifact"), split="test", queries=40, distractors=300
    )
