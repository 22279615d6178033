"""What a backend factory receives: the Memory resource and where its local data lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aof_index.spec import Memory, MemorySpec

__all__ = ["BuildContext"]


@dataclass(frozen=True)
class BuildContext:
    """Input to every registered factory.

    Attributes:
        memory: the Memory resource being built.
        data_dir: folder for embedded stores of this resource (created on first write).
    """

    memory: Memory
    data_dir: Path

    @property
    def spec(self) -> MemorySpec:
        """The resource's spec."""
        return self.memory.spec

    @property
    def name(self) -> str:
        """The resource's ``metadata.name``."""
        return self.memory.metadata.name
