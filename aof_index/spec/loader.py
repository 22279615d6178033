"""Reading manifests: YAML files, directories or text in, validated resources out.

Every problem becomes a :class:`~aof_index.errors.ManifestError` whose issues name the file,
the document (in multi-document files), the line, the camelCase field path
(``spec.sources[2].type``), the bad value (never a secret) and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from aof_index.errors import ManifestError, ManifestIssue
from aof_index.spec.agent import Agent, AgentFleet, AgentFlow
from aof_index.spec.base import API_VERSION, SPEC_ERROR_TYPE, Resource
from aof_index.spec.knowledge_base import KnowledgeBase
from aof_index.spec.memory import Memory

__all__ = [
    "KINDS",
    "load_knowledge_base",
    "load_memory",
    "load_resources",
    "manifest_files",
    "parse_resource",
]

R = TypeVar("R", bound=Resource)

KINDS: dict[str, type[Resource]] = {
    cls.model_fields["kind"].default: cls
    for cls in (Memory, KnowledgeBase, Agent, AgentFleet, AgentFlow)
}
"""The resource classes by ``kind``."""

_SUFFIXES = (".yaml", ".yml")
_REDACTED = "**********"
_SENSITIVE_RE = re.compile(r"secret|password|passwd|token|apikey|credential|privatekey")
_QUOTED_RE = re.compile(r"'((?:[^'\\]|\\.)*)'")


# --- public API -------------------------------------------------------------------------


def manifest_files(directory: Path) -> list[Path]:
    """The ``*.yaml`` and ``*.yml`` files directly in ``directory``, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in _SUFFIXES)


def load_resources(
    path_or_text: str | os.PathLike[str], *, source: str | None = None
) -> list[Resource]:
    """Load every resource from a file, a directory or YAML text.

    A :class:`~os.PathLike` is always a path. A ``str`` is a path when it is one line that
    ends in ``.yaml``/``.yml`` or names an existing file or directory; otherwise it is YAML
    text. A directory loads its ``*.yaml``/``*.yml`` files in name order. Documents may be
    separated by ``---``; empty documents are skipped. ``source`` names the input in errors
    (default: the path, or ``<string>``).

    Raises :class:`ManifestError` listing every problem found.
    """
    path = _as_path(path_or_text)
    if path is None:
        return _load_text(str(path_or_text), source or "<string>")
    if not path.is_dir():
        return _load_file(path, source or str(path))
    files = manifest_files(path)
    if not files:
        raise ManifestError(
            source or str(path), [ManifestIssue("", "no *.yaml or *.yml files in this directory")]
        )
    resources: list[Resource] = []
    issues: list[ManifestIssue] = []
    for file in files:
        try:
            resources += _load_file(file, str(file))
        except ManifestError as exc:
            issues += [replace(issue, file=exc.source) for issue in exc.issues]
    if issues:
        raise ManifestError(source or str(path), issues)
    return resources


def load_memory(path_or_text: str | os.PathLike[str], name: str | None = None) -> Memory:
    """Load the one ``Memory`` in a file/directory/text, or the one named ``name``."""
    return _load_one(path_or_text, Memory, name)


def load_knowledge_base(
    path_or_text: str | os.PathLike[str], name: str | None = None
) -> KnowledgeBase:
    """Load the one ``KnowledgeBase`` in a file/directory/text, or the one named ``name``."""
    return _load_one(path_or_text, KnowledgeBase, name)


def parse_resource(data: Mapping[str, Any], *, source: str = "<data>") -> Resource:
    """Validate one manifest already parsed into a mapping (e.g. from the Kubernetes API)."""
    try:
        return _build(data, None)
    except _DocumentError as exc:
        raise ManifestError(source, exc.issues) from None


# --- files and YAML ---------------------------------------------------------------------


class _DocumentError(Exception):
    def __init__(self, issues: list[ManifestIssue]) -> None:
        super().__init__(issues)
        self.issues = issues


def _as_path(path_or_text: str | os.PathLike[str]) -> Path | None:
    if not isinstance(path_or_text, str):
        return Path(path_or_text)
    if "\n" in path_or_text or not path_or_text.strip():
        return None
    path = Path(path_or_text)
    if path_or_text.endswith(_SUFFIXES):
        return path
    try:
        return path if path.exists() else None
    except OSError:  # e.g. a long line of YAML is "File name too long"
        return None


def _load_file(path: Path, source: str) -> list[Resource]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(source, [ManifestIssue("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(source, [ManifestIssue("", f"cannot read the file: {exc}")]) from None
    return _load_text(text, source)


def _load_text(text: str, source: str) -> list[Resource]:
    documents = _read_documents(text, source)
    present = [(position, node, data) for position, node, data in documents if data is not None]
    if not present:
        raise ManifestError(
            source,
            [
                ManifestIssue(
                    "",
                    "no manifest found (the input is empty); expected a YAML mapping with "
                    f"apiVersion: {API_VERSION}, kind, metadata and spec",
                )
            ],
        )
    several = len(documents) > 1
    resources: list[Resource] = []
    issues: list[ManifestIssue] = []
    for position, node, data in present:
        try:
            resources.append(_build(data, node))
        except _DocumentError as exc:
            issues += [replace(i, document=position if several else None) for i in exc.issues]
    if issues:
        raise ManifestError(source, issues)
    return resources


def _read_documents(text: str, source: str) -> list[tuple[int, yaml.Node, Any]]:
    """Each document as (1-based position, node tree for line numbers, Python data)."""
    loader = yaml.SafeLoader(text)
    documents: list[tuple[int, yaml.Node, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node() said there is one
                break
            documents.append((len(documents) + 1, node, loader.construct_document(node)))
    except yaml.YAMLError as exc:
        raise ManifestError(source, [_yaml_issue(exc, len(documents) + 1)]) from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
    return documents


def _yaml_issue(exc: yaml.YAMLError, position: int) -> ManifestIssue:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}"
    if context:
        message += f" ({context})"
    if mark is not None:
        message += f" at line {mark.line + 1}, column {mark.column + 1}"
    if context and "alias" in context:
        message += "; values that start with `*`, such as cron expressions, must be quoted"
    return ManifestIssue(
        "",
        message,
        line=mark.line + 1 if mark is not None else None,
        document=position if position > 1 else None,
    )


# --- validation -------------------------------------------------------------------------


def _build(data: Any, node: yaml.Node | None) -> Resource:
    if not isinstance(data, Mapping):
        raise _DocumentError(
            [
                ManifestIssue(
                    "",
                    f"expected a mapping with apiVersion, kind, metadata and spec, "
                    f"got {_describe(data)}",
                    line=_line_of(node, ()),
                )
            ]
        )
    kind = data.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise _DocumentError([_kind_issue(kind, node)])
    issues = _duplicate_keys(node, ())
    if "apiVersion" not in data:
        issues.append(
            ManifestIssue(
                "apiVersion",
                f"required field is missing; expected {API_VERSION}",
                line=_line_of(node, ()),
            )
        )
    try:
        resource = cls.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        issues += [_issue(error, cls, node) for error in exc.errors()]
        raise _DocumentError(issues) from None
    if issues:
        raise _DocumentError(issues)
    return resource


def _kind_issue(kind: object, node: yaml.Node | None) -> ManifestIssue:
    known = ", ".join(sorted(KINDS))
    if kind is None:
        message = f"required field is missing; known kinds: {known}"
    else:
        message = f"unknown kind `{kind}`{_suggest(str(kind), KINDS)}; known kinds: {known}"
    return ManifestIssue("kind", message, value=kind, line=_line_of(node, ("kind",)))


def _issue(error: ErrorDetails, model: type[BaseModel], node: yaml.Node | None) -> ManifestIssue:
    loc = tuple(error["loc"])
    error_type = error["type"]
    ctx = error.get("ctx") or {}
    value: Any = error.get("input")
    secret = _is_sensitive(loc)
    message = error["msg"]
    if error_type == SPEC_ERROR_TYPE:
        loc += (ctx["field"],)
        value = None
    elif error_type == "extra_forbidden":
        message = _unknown_field_message(loc, model)
    elif error_type == "literal_error":
        allowed = _QUOTED_RE.findall(str(ctx.get("expected", "")))
        hint = "" if secret else _suggest(str(value), allowed)
        message = f"`{_REDACTED if secret else value}` is not allowed{hint}; "
        message += f"allowed values: {', '.join(allowed)}"
    elif error_type == "missing":
        message, value = "required field is missing", None
    elif error_type in {"model_type", "model_attributes_type", "dict_type"}:
        message = f"expected a mapping of fields, got {_describe(value, secret)}"
        if str(loc[-1]).lower().endswith("secretref"):
            message += (
                "; a secret reference names a Kubernetes Secret and a key in it "
                "({name: ..., key: ...}), never the secret itself (see docs/secrets.md)"
            )
    elif error_type == "list_type":
        message = f"expected a list, got {_describe(value, secret)}"
    if isinstance(value, Mapping | list):
        value = None  # not echoed: a whole section is noise, and may hold secrets
    shown = _REDACTED if secret and value is not None else value
    return ManifestIssue(_dotted(loc), message, shown, line=_line_of(node, loc))


def _unknown_field_message(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    key = str(loc[-1])
    model = _model_at(root, loc[:-1])
    if model is None:
        return f"unknown field `{key}`"
    allowed = [field.alias or name for name, field in model.model_fields.items()]
    hint = f" (did you mean `{to_camel(key)}`?)" if to_camel(key) in allowed else ""
    hint = hint or _suggest(key, allowed)
    return f"unknown field `{key}`{hint}; allowed here: {', '.join(allowed)}"


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc`` (None below a plain mapping)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        field = next(
            (f for n, f in model.model_fields.items() if part in (f.alias, n)),
            None,
        )
        if field is None:
            return None
        model = _model_in(field.annotation)
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _suggest(word: str, choices: Sequence[str] | Mapping[str, Any]) -> str:
    options = list(choices)
    folded = [c for c in options if c.lower() == word.lower()]
    close = folded or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _dotted(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _describe(value: object, secret: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}" if secret else f"{type(value).__name__} {value!r}"


def _is_sensitive(loc: Sequence[int | str]) -> bool:
    """Whether the value at ``loc`` may be a credential (its key names a secret)."""
    names = [p for p in loc if isinstance(p, str)]
    return bool(names) and _SENSITIVE_RE.search(names[-1].lower().replace("_", "")) is not None


# --- YAML nodes: line numbers and duplicate keys -----------------------------------------


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the deepest part of ``loc`` present in the node tree."""
    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            # The last of duplicate keys is the one PyYAML keeps.
            match = next(
                ((k, v) for k, v in reversed(node.value) if getattr(k, "value", None) == part),
                None,
            )
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_keys(node: yaml.Node | None, loc: tuple[int | str, ...]) -> list[ManifestIssue]:
    """Keys repeated in one mapping: YAML keeps only the last, which hides mistakes."""
    issues: list[ManifestIssue] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if isinstance(name, str) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if name in seen:
                    issues.append(
                        ManifestIssue(
                            _dotted((*loc, name)),
                            f"key `{name}` appears twice in one mapping (lines {seen[name]} "
                            f"and {line}); YAML keeps only the last, remove one",
                            line=line,
                        )
                    )
                seen.setdefault(name, line)
                issues += _duplicate_keys(value, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            issues += _duplicate_keys(item, (*loc, index))
    return issues


def _load_one(path_or_text: str | os.PathLike[str], cls: type[R], name: str | None) -> R:
    kind = cls.model_fields["kind"].default
    resources = load_resources(path_or_text)
    path = _as_path(path_or_text)
    source = str(path) if path is not None else "<string>"
    found = [r for r in resources if isinstance(r, cls)]
    if name is not None:
        named = [r for r in found if r.metadata.name == name]
        if len(named) == 1:
            return named[0]
        names = ", ".join(r.metadata.name for r in found) or "none"
        message = (
            f"no {kind} named `{name}`; {kind} names found: {names}"
            if not named
            else f"{len(named)} {kind} resources are named `{name}` (in different namespaces)"
        )
        raise ManifestError(source, [ManifestIssue("metadata.name", message, value=name)])
    if len(found) == 1:
        return found[0]
    if not found:
        kinds = ", ".join(r.ref for r in resources)
        message = f"no {kind} found; the input holds: {kinds}"
        raise ManifestError(source, [ManifestIssue("kind", message)])
    names = ", ".join(r.metadata.name for r in found)
    message = f"{len(found)} {kind} resources found ({names}); pass name= to choose one"
    raise ManifestError(source, [ManifestIssue("metadata.name", message)])
