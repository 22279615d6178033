"""LocalFilesReader: stable ids, versions, skipped binaries, no escape from the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aof_index_readers import LocalFilesReader, document_id


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# A\n\nalpha")
    (root / "sub" / "b.txt").write_text("bravo")
    (root / "page.html").write_text(
        "<html><script>x()</script><body><h1>Hi</h1><p>there</p></body>"
    )
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "blob.txt").write_bytes(b"text\x00with nul")
    (root / "empty.md").write_text("  \n")
    return root


def test_reads_text_files_and_reports_skipped(tree: Path) -> None:
    reader = LocalFilesReader([tree])
    docs = {Path(d.metadata["source"]).name: d for d in reader.load_data()}
    assert set(docs) == {"a.md", "b.txt", "page.html"}
    assert docs["page.html"].text.split() == ["Hi", "there"]
    reasons = {s.path.name: s.reason for s in reader.skipped}
    assert reasons["image.png"].startswith("unsupported file type")
    assert "NUL" in reasons["blob.txt"]
    assert reasons["empty.md"] == "empty"


def test_ids_are_stable_and_versions_follow_content(tree: Path) -> None:
    first = {d.doc_id: d.metadata["version"] for d in LocalFilesReader([tree]).load_data()}
    (tree / "a.md").write_text("# A\n\nalpha, edited")
    second = {d.doc_id: d.metadata["version"] for d in LocalFilesReader([tree]).load_data()}
    assert first.keys() == second.keys()
    changed = [k for k in first if first[k] != second[k]]
    assert changed == [document_id(tree.resolve(), (tree / "a.md").resolve())]


def test_exclude_patterns(tree: Path) -> None:
    docs = LocalFilesReader([tree], exclude=["sub", "*.html"]).load_data()
    assert sorted(Path(d.metadata["source"]).name for d in docs) == ["a.md"]


def test_symlink_outside_root_is_skipped(tree: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not index")
    os.symlink(secret, tree / "link.txt")
    reader = LocalFilesReader([tree])
    texts = [d.text for d in reader.load_data()]
    assert "do not index" not in texts
    assert any("outside the root" in s.reason for s in reader.skipped)


def test_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        LocalFilesReader([tmp_path / "nope"]).load_data()
