"""A KnowledgeBase over a LocalFiles folder and a git repository made by the tests, and
snapshots of everything a sync leaves behind (shared by the sync, worker and scheduler
tests)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from aof_index.knowledge.sync import KnowledgeBaseSync

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=GIT_ENV, capture_output=True)


def doc(title: str, *sections: str) -> str:
    """A Markdown document with one heading per section (one chunk each)."""
    body = "".join(f"## {title} part {i}\n\n{text}\n\n" for i, text in enumerate(sections, 1))
    return f"# {title}\n\n{body}"


def section(topic: str, n: int = 1) -> str:
    return " ".join(
        f"The {topic} runbook step {i} explains how to check {topic}." for i in range(n)
    )


class Corpus:
    """A LocalFiles folder and a git repository, and the manifest syncing both."""

    def __init__(self, root: Path, batch_size: int = 4) -> None:
        self.files = root / "files"
        self.repo = root / "repo"
        self.files.mkdir(parents=True)
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "main")
        self.manifest = root / "kb.yaml"
        self.manifest.write_text(
            "apiVersion: aof.agenticops.org/v1alpha1\nkind: KnowledgeBase\n"
            "metadata: {name: ops}\nspec:\n  sources:\n"
            "    - {name: files, type: LocalFiles, localFiles: {paths: [files]}}\n"
            f"    - {{name: repo, type: Git, git: {{url: 'file://{self.repo}', ref: main}}}}\n"
            f"  indexing: {{batchSize: {batch_size}}}\n"
        )

    def write(self, name: str, text: str) -> None:
        (self.files / name).write_text(text)

    def commit(self, files: dict[str, str | None]) -> None:
        for name, text in files.items():
            if text is None:
                (self.repo / name).unlink()
            else:
                (self.repo / name).write_text(text)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", "change")


def snapshot(kb: KnowledgeBaseSync) -> dict[str, Any]:
    """Everything a sync leaves behind: chunks in the vector store and the keyword index,
    state rows, the Memory's ingest state and the journal."""
    collection = kb.memory.vector_store.client  # the Chroma collection
    got = collection.get(include=["documents"])
    keywords = kb.memory.keyword_index
    return {
        "vectors": dict(zip(got["ids"], got["documents"], strict=True)),
        "keywords": {i: keywords.get(i).get_content() for i in keywords.node_ids()},  # type: ignore[union-attr]
        "state": sorted(
            (r.source, r.doc_id, r.listing_version, r.content_version, r.location, r.node_ids)
            for r in kb.state.documents()
        ),
        "ingest": sorted(
            (r.doc_id, r.version, r.node_ids) for r in kb.memory.ingest_state.records()
        ),
        "journal": kb.state.pending(),
    }


def consistent(snap: dict[str, Any]) -> set[str]:
    """Check the stores agree with the state; returns the chunk ids."""
    ids = {node_id for row in snap["state"] for node_id in row[5]}
    assert set(snap["vectors"]) == ids == set(snap["keywords"])
    assert snap["journal"] == []
    assert {(d, n) for d, _, n in snap["ingest"]} == {(r[1], r[5]) for r in snap["state"]}
    return ids
