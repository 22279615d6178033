"""The exception tree of aof-index.

Every error raised on purpose by the package derives from :class:`AofIndexError`, so an
application can catch one type.  Errors about a manifest name the file, the field path and
the bad value; errors about a backend name the backend and what to check.
"""

from __future__ import annotations

__all__ = [
    "AofIndexError",
    "BackendUnavailableError",
    "IngestError",
    "LLMError",
    "ManifestError",
    "ManifestIssue",
    "SecretNotFoundError",
    "UnknownBackendError",
]

from dataclasses import dataclass


class AofIndexError(Exception):
    """Base class of every error aof-index raises on purpose."""


@dataclass(frozen=True)
class ManifestIssue:
    """One problem found in a manifest: where it is, what was found, what is allowed."""

    path: str
    """Dotted field path, e.g. ``spec.semantic.retrieval.defaultTopK``."""
    message: str
    """What is wrong and what is allowed."""
    value: object = None
    """The offending value, when there is one (never a secret)."""
    line: int | None = None
    """1-based line in the YAML file, when known."""
    document: int | None = None
    """1-based position of the YAML document in a multi-document file, when there are several."""
    file: str | None = None
    """The file the issue is in, when the error covers several files (a directory)."""

    def __str__(self) -> str:
        where = [self.file] if self.file else []
        if self.document is not None:
            where.append(f"document {self.document}")
        if self.line is not None:
            where.append(f"line {self.line}")
        prefix = f"[{', '.join(where)}] " if where else ""
        text = f"{prefix}{self.path}: {self.message}" if self.path else prefix + self.message
        if self.value is not None:
            shown = repr(self.value)
            text += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
        return text


class ManifestError(AofIndexError):
    """A manifest could not be read or does not match the resource schema."""

    def __init__(self, source: str, issues: list[ManifestIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = [f"{source}: {len(issues)} problem(s)"]
        lines += [f"  - {issue}" for issue in issues]
        super().__init__("\n".join(lines))


class SecretNotFoundError(AofIndexError):
    """A secret reference could not be resolved from the environment or secrets directory."""


class UnknownBackendError(AofIndexError):
    """A manifest names a backend that no installed package registers."""


class BackendUnavailableError(AofIndexError):
    """A backend is registered but cannot be used: its extra is missing or its server is down."""


class IngestError(AofIndexError):
    """Documents could not be ingested; the index is left as it was before the run."""


class LLMError(AofIndexError):
    """The configured LLM failed, timed out, or none is configured where one is required."""
