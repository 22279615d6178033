"""``aof-index chunk`` on a real Kubernetes page with the real all-MiniLM-L6-v2 window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aof_index.cli.main import app

K8S_DOCS = Path(__file__).resolve().parents[3] / "shared" / "data" / "k8s-docs"
PAGE = K8S_DOCS / "concepts" / "workloads" / "pods" / "pod-lifecycle.md"
WINDOW = 254  # all-MiniLM-L6-v2 reads 256 word pieces, two of them [CLS] and [SEP]
KEYS = {"id", "file", "strategy", "text", "start", "end", "tokens", "start_line", "end_line"}

runner = CliRunner()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page() -> str:
    """The page as the reader sees it (bytes decoded as UTF-8, line ends untouched)."""
    if not PAGE.is_file():
        pytest.fail(f"evaluation data missing: {PAGE} (../shared/data must be beside the repo)")
    return PAGE.read_bytes().decode("utf-8")


def chunk(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["chunk", *args])
    return result.exit_code, result.stdout, result.stderr


def chunk_json(*args: str) -> list[dict[str, Any]]:
    code, out, err = chunk(str(PAGE), "--json", *args)
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    assert rows
    return rows


def test_json_chunks_slice_the_file_and_fit_the_window(page: str) -> None:
    rows = chunk_json()
    assert len({r["id"] for r in rows}) == len(rows)
    previous = (-1, -1)
    for row in rows:
        assert row.keys() >= KEYS and "heading" in row
        assert Path(row["file"]).resolve() == PAGE.resolve()  # ../shared may be a link
        assert row["strategy"] == "markdown"  # auto routes a .md file to the Markdown chunker
        raw = page[row["start"] : row["end"]]
        assert raw.strip() and row["text"].endswith(raw)  # metadata header, then the slice
        assert 0 < row["tokens"] <= WINDOW
        assert row["start_line"] == page.count("\n", 0, row["start"]) + 1
        assert row["end_line"] == page.count("\n", 0, row["end"] - 1) + 1
        assert (row["start"], row["end"]) > previous  # document order
        previous = (row["start"], row["end"])
    headings = {r["heading"] for r in rows}
    assert "Pod lifetime" in headings
    assert all(r["text"].startswith("title: Pod Lifecycle\n") for r in rows)  # front matter
    assert not any(page[r["start"] : r["end"]].startswith("---\ntitle") for r in rows)


def test_nothing_after_the_front_matter_is_lost(page: str) -> None:
    rows = chunk_json()
    body = page.index("\n---\n", 4) + len("\n---\n")
    covered = bytearray(len(page))
    for row in rows:
        covered[row["start"] : row["end"]] = b"\x01" * (row["end"] - row["start"])
    lost = [i for i in range(body, len(page)) if not covered[i] and not page[i].isspace()]
    assert not lost


def test_strategy_option_changes_the_chunker(page: str) -> None:
    rows = chunk_json("--strategy", "fixed")
    assert {r["strategy"] for r in rows} == {"fixed"}
    assert all(r["tokens"] <= WINDOW for r in rows)
    assert rows[0]["start"] == 0  # fixed windows index the front matter as text too
    for row in rows:
        assert row["text"].endswith(page[row["start"] : row["end"]])


def test_semantic_strategy_uses_the_memory_embedding_model(page: str) -> None:
    rows = chunk_json("--strategy", "semantic")
    assert {r["strategy"] for r in rows} == {"semantic"}
    for row in rows:
        assert 0 < row["tokens"] <= WINDOW
        assert row["text"].endswith(page[row["start"] : row["end"]])


def test_chunk_size_option_makes_smaller_chunks() -> None:
    default = chunk_json("--strategy", "recursive")
    small = chunk_json("--strategy", "recursive", "--chunk-size", "64")
    assert len(small) > len(default)
    assert all(r["tokens"] <= 64 for r in small)


def test_table_output_lists_every_chunk() -> None:
    code, out, err = chunk(str(PAGE))
    assert code == 0, err
    assert "chunks from 1 files" in out
    assert "markdown" in out and f"/{WINDOW}" in out


def test_an_unknown_strategy_exits_2_naming_the_allowed_ones() -> None:
    code, _, err = chunk(str(PAGE), "--strategy", "sentences")
    assert code == 2
    assert "'sentences'" in err
    for name in ("auto", "fixed", "recursive", "markdown", "semantic"):
        assert name in err


def test_custom_strategy_is_reported_as_not_implemented() -> None:
    code, _, err = chunk(str(PAGE), "--strategy", "custom")
    assert code == 1
    assert "spec.chunking.strategy" in err and "LLM" in err


def test_a_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    code, _, err = chunk(str(tmp_path / "nope.md"))
    assert code == 1
    assert "does not exist" in err
