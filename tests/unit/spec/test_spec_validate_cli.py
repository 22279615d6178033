"""``aof-index validate`` through typer's CliRunner."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from typer.testing import CliRunner

from aof_index.cli.validate import validate

MANIFESTS = Path(__file__).parent / "manifests"

app = typer.Typer()
app.command()(validate)


@app.callback()
def _main() -> None:
    """Keep ``validate`` a named subcommand, as in ``aof-index validate``."""


runner = CliRunner()


def test_ok_lines_per_resource() -> None:
    result = runner.invoke(
        app, ["validate", str(MANIFESTS / "memory-full.yaml"), str(MANIFESTS / "agents.yaml")]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines == [
        f"OK  {MANIFESTS / 'memory-full.yaml'}  Memory/incident-memory",
        f"OK  {MANIFESTS / 'agents.yaml'}  Agent/k8s-expert",
        f"OK  {MANIFESTS / 'agents.yaml'}  AgentFleet/sre-team",
        f"OK  {MANIFESTS / 'agents.yaml'}  AgentFlow/incident-response-flow",
    ]


def test_directory_is_expanded(tmp_path: Path) -> None:
    shutil.copy(MANIFESTS / "knowledgebase-full.yaml", tmp_path / "kb.yaml")
    shutil.copy(MANIFESTS / "memory-full.yaml", tmp_path / "a-memory.yml")
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Memory/incident-memory" in result.stdout.splitlines()[0]
    assert "KnowledgeBase/sre-runbooks" in result.stdout.splitlines()[1]


def test_errors_are_listed_and_exit_code_is_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: Memory\nmetadata: {name: m}\n"
        "spec:\n  semantic:\n    retrieval:\n      hybridSerch: {enabled: true}\n"
    )
    result = runner.invoke(app, ["validate", str(MANIFESTS / "memory-full.yaml"), str(bad)])
    assert result.exit_code == 1
    assert "OK  " in result.stdout  # the good file is still reported
    assert f"FAIL  {bad}" in result.stderr
    assert "[line 7] spec.semantic.retrieval.hybridSerch" in result.stderr
    assert "did you mean `hybridSearch`?" in result.stderr
    assert "1 file(s) failed validation" in result.stderr


def test_nonexistent_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = runner.invoke(app, ["validate", str(missing)])
    assert result.exit_code == 1
    assert f"FAIL  {missing}" in result.stderr
    assert "file not found" in result.stderr


def test_empty_directory_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "no *.yaml or *.yml files" in result.stderr


def test_help_describes_the_command() -> None:
    result = runner.invoke(app, ["validate", "--help"])
    assert result.exit_code == 0
    assert "Validate Memory, KnowledgeBase" in result.stdout
