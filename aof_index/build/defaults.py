"""The embedded default Memory: the example manifest shipped as ``examples/memory.yaml``."""

from __future__ import annotations

from importlib.resources import files

from aof_index.spec import Memory, load_resources

__all__ = ["default_memory", "example_manifest"]


def example_manifest(name: str) -> str:
    """Text of a shipped example manifest (``memory.yaml``, ``knowledge-base.yaml``...)."""
    return files("aof_index.examples").joinpath(name).read_text(encoding="utf-8")


def default_memory() -> Memory:
    """The Memory used when no ``--memory`` manifest is given."""
    (resource,) = load_resources(example_manifest("memory.yaml"), source="<embedded default>")
    assert isinstance(resource, Memory)
    return resource
