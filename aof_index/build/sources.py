"""Reader factories registered under ``aof_index.readers``: a KnowledgeBase source → a reader.

Each ``spec.sources[]`` entry names its ``type``; the factory registered under that name
reads the type's section (``github``, ``localFiles``...), resolves its secret references
and returns a :class:`~aof_index_readers.base.SourceReader`::

    from aof_index.build.sources import build_readers

    for source, reader in build_readers("knowledge-base.yaml"):
        for ref in reader.list_documents():
            print(source.name, ref.id, ref.version)

What the manifest cannot say is decided here:

- relative ``localFiles.paths`` are relative to ``volumeRef.mountPath`` when given, else to
  the manifest's folder;
- git clones are cached under ``$AOF_INDEX_HOME/sources/<namespace>/<kb>/<source>``;
- loopback, link-local and private addresses are refused by the URL and API readers unless
  allowed explicitly: a host listed in ``url.allowedDomains``, or any host, address or
  network (CIDR) in the comma-separated annotation
  ``aof.agenticops.org/allow-private-networks``;
- ``api.headers`` values may hold ``{{.secrets.NAME.KEY}}``, replaced by that secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aof_index.errors import ManifestError, ManifestIssue
from aof_index.home import data_home
from aof_index.registry import get_factory
from aof_index.spec import KnowledgeBase
from aof_index.spec.knowledge_base import (
    APISource,
    ConfluenceSource,
    DatabaseSource,
    GitHubSource,
    GitLabSource,
    GitSource,
    KnowledgeSource,
    LocalFilesSource,
    NotionSource,
    S3Source,
    URLSource,
)
from aof_index.spec.loader import load_knowledge_base
from aof_index.spec.secrets import SecretRef, resolve_secret

if TYPE_CHECKING:
    from aof_index_readers.base import SourceReader

__all__ = [
    "ALLOW_PRIVATE_ANNOTATION",
    "SourceContext",
    "build_api",
    "build_confluence",
    "build_database",
    "build_git",
    "build_github",
    "build_gitlab",
    "build_local_files",
    "build_notion",
    "build_reader",
    "build_readers",
    "build_s3",
    "build_url",
    "render_secrets",
    "select_sources",
    "source_label",
]

ALLOW_PRIVATE_ANNOTATION = "aof.agenticops.org/allow-private-networks"
"""Annotation listing hosts, addresses or CIDR networks the readers may reach though private."""

_SECRET_TEMPLATE = re.compile(r"\{\{\s*\.secrets\.([A-Za-z0-9_.-]+?)\s*\}\}")

Section = TypeVar("Section")


@dataclass(frozen=True)
class SourceContext:
    """What a reader factory receives.

    Attributes:
        knowledge_base: the KnowledgeBase resource.
        source: the ``spec.sources[]`` entry.
        index: its position in ``spec.sources`` (for field paths in errors).
        base_dir: folder relative local paths start from (the manifest's folder).
        home: the data folder (``$AOF_INDEX_HOME``); caches live below it.
    """

    knowledge_base: KnowledgeBase
    source: KnowledgeSource
    index: int
    base_dir: Path
    home: Path

    @property
    def name(self) -> str:
        """The source's name (``sources[].name``, else its type and position)."""
        return self.source.name or f"{self.source.type}-{self.index}"

    @property
    def field(self) -> str:
        """``spec.sources[i]``, the prefix of this source's fields in messages."""
        return f"spec.sources[{self.index}]"

    @property
    def cache_dir(self) -> Path:
        """Folder for this source's local copies (git clones)."""
        meta = self.knowledge_base.metadata
        return self.home / "sources" / meta.namespace / meta.name / self.name

    @property
    def allow_private(self) -> list[str]:
        """Hosts, addresses and networks allowed by the KnowledgeBase's annotation."""
        annotations = self.knowledge_base.metadata.annotations or {}
        raw = annotations.get(ALLOW_PRIVATE_ANNOTATION, "")
        return [entry.strip() for entry in raw.split(",") if entry.strip()]

    def section(self, kind: type[Section]) -> Section:
        """The source's type-specific section (the spec guarantees it is there)."""
        settings = self.source.settings
        assert isinstance(settings, kind)
        return settings

    def required(self, value: Any, field: str) -> Any:
        """``value``, or a :class:`ManifestError` naming the missing ``field``."""
        if value is None or value == "" or value == []:
            raise self.error(field, "is required for this source type", None)
        return value

    def error(self, field: str, message: str, value: object) -> ManifestError:
        """A :class:`ManifestError` about ``spec.sources[i].<field>``."""
        where = f"KnowledgeBase/{self.knowledge_base.metadata.name}"
        return ManifestError(where, [ManifestIssue(f"{self.field}.{field}", message, value)])

    def secret(self, ref: SecretRef | None) -> str | None:
        """The value of ``ref``, resolved now (``None`` when there is no reference)."""
        return ref.resolve().get_secret_value() if ref is not None else None

    def common(self) -> dict[str, Any]:
        """Keyword arguments every reader takes."""
        return {"source_name": self.name}


def render_secrets(value: str, *, field: str, ctx: SourceContext) -> str:
    """Replace ``{{.secrets.NAME.KEY}}`` in ``value`` by the secret's value."""

    def replace(match: re.Match[str]) -> str:
        name, dot, key = match.group(1).rpartition(".")
        if not dot or not name:
            raise ctx.error(
                field,
                f"{match.group(0)} names no key; write {{{{.secrets.NAME.KEY}}}} (Secret NAME, "
                "key KEY)",
                None,
            )
        return resolve_secret(name, key).get_secret_value()

    return _SECRET_TEMPLATE.sub(replace, value)


# --- factories ----------------------------------------------------------------------------


def build_local_files(ctx: SourceContext) -> SourceReader:
    """``LocalFiles``: ``paths`` (globs), ``exclude``, ``volumeRef.mountPath`` as the root."""
    from aof_index_readers.local_files import LocalFilesReader

    cfg = ctx.section(LocalFilesSource)
    mount = cfg.volume_ref.mount_path if cfg.volume_ref is not None else None
    root = Path(mount) if mount else ctx.base_dir
    paths = ctx.required(cfg.paths, "localFiles.paths")
    resolved = [p if Path(p).is_absolute() else str(root / p) for p in paths]
    return LocalFilesReader(
        resolved,
        exclude=cfg.exclude or (),
        root=root if mount else None,
        **ctx.common(),
    )


def build_git(ctx: SourceContext) -> SourceReader:
    """``Git``: ``url`` at ``ref``, SSH key or username/password from secrets."""
    from aof_index_readers.git import GitReader

    cfg = ctx.section(GitSource)
    credentials = (
        cfg.credentials_secret_ref.resolve() if cfg.credentials_secret_ref is not None else None
    )
    return GitReader(
        url=ctx.required(cfg.url, "git.url"),
        ref=cfg.ref,
        cache_dir=ctx.cache_dir,
        ssh_key=ctx.secret(cfg.ssh_key_secret_ref),
        username=credentials.username.get_secret_value() if credentials else None,
        password=credentials.password.get_secret_value() if credentials else None,
        **ctx.common(),
    )


def build_github(ctx: SourceContext) -> SourceReader:
    """``GitHub``: files of ``owner/repo`` at ``branch``, optionally issues, PRs, discussions."""
    from aof_index_readers.github import GitHubReader

    cfg = ctx.section(GitHubSource)
    return GitHubReader(
        owner=ctx.required(cfg.owner, "github.owner"),
        repo=ctx.required(cfg.repo, "github.repo"),
        branch=cfg.branch,
        paths=cfg.paths,
        token=ctx.secret(cfg.token_secret_ref),
        include_issues=cfg.include_issues,
        include_prs=cfg.include_prs,
        include_discussions=cfg.include_discussions,
        **ctx.common(),
    )


def build_gitlab(ctx: SourceContext) -> SourceReader:
    """``GitLab``: files of ``projectId`` at ``ref`` on ``baseUrl``."""
    from aof_index_readers.gitlab import GitLabReader

    cfg = ctx.section(GitLabSource)
    return GitLabReader(
        project_id=ctx.required(cfg.project_id, "gitlab.projectId"),
        ref=cfg.ref,
        paths=cfg.paths,
        token=ctx.secret(cfg.token_secret_ref),
        base_url=cfg.base_url,
        **ctx.common(),
    )


def build_confluence(ctx: SourceContext) -> SourceReader:
    """``Confluence``: pages of ``spaceKey`` (and/or ``cql``), optionally attachments."""
    from aof_index_readers.confluence import ConfluenceReader

    cfg = ctx.section(ConfluenceSource)
    if cfg.space_key is None and cfg.cql is None:
        raise ctx.error("confluence", "set spaceKey, cql or both to choose the pages", None)
    return ConfluenceReader(
        base_url=ctx.required(cfg.base_url, "confluence.baseUrl"),
        space_key=cfg.space_key,
        username=cfg.username,
        api_token=ctx.secret(cfg.api_token_secret_ref),
        cql=cfg.cql,
        include_attachments=cfg.include_attachments,
        **ctx.common(),
    )


def build_notion(ctx: SourceContext) -> SourceReader:
    """``Notion``: pages of ``databaseIds`` and ``pageIds``."""
    from aof_index_readers.notion import NotionReader

    cfg = ctx.section(NotionSource)
    if not cfg.database_ids and not cfg.page_ids:
        raise ctx.error("notion", "set databaseIds, pageIds or both to choose the pages", None)
    return NotionReader(
        api_token=ctx.required(ctx.secret(cfg.api_token_secret_ref), "notion.apiTokenSecretRef"),
        database_ids=cfg.database_ids or [],
        page_ids=cfg.page_ids or [],
        **ctx.common(),
    )


def build_url(ctx: SourceContext) -> SourceReader:
    """``URL``: ``urls``, crawled to ``maxDepth`` within ``allowedDomains`` when ``crawl``."""
    from aof_index_readers.url import URLReader

    cfg = ctx.section(URLSource)
    return URLReader(
        urls=ctx.required(cfg.urls, "url.urls"),
        crawl=cfg.crawl,
        max_depth=cfg.max_depth,
        allowed_domains=cfg.allowed_domains,
        selector=cfg.selector,
        allow_private=[*(cfg.allowed_domains or ()), *ctx.allow_private],
        **ctx.common(),
    )


def build_s3(ctx: SourceContext) -> SourceReader:
    """``S3``: objects of ``bucket`` under ``prefix`` (any S3-compatible ``endpoint``)."""
    from aof_index_readers.s3 import S3Reader

    cfg = ctx.section(S3Source)
    return S3Reader(
        bucket=ctx.required(cfg.bucket, "s3.bucket"),
        prefix=cfg.prefix or "",
        region=cfg.region,
        endpoint=cfg.endpoint,
        access_key=ctx.secret(cfg.access_key_secret_ref),
        secret_key=ctx.secret(cfg.secret_key_secret_ref),
        include_patterns=cfg.include_patterns,
        exclude_patterns=cfg.exclude_patterns,
        **ctx.common(),
    )


def build_api(ctx: SourceContext) -> SourceReader:
    """``API``: records selected by ``jsonPath`` from ``endpoint``'s JSON."""
    from aof_index_readers.api import APIReader

    cfg = ctx.section(APISource)
    headers = {
        name: render_secrets(str(value), field=f"api.headers.{name}", ctx=ctx)
        for name, value in (cfg.headers or {}).items()
    }
    return APIReader(
        endpoint=ctx.required(cfg.endpoint, "api.endpoint"),
        method=cfg.method,
        headers=headers,
        auth_token=ctx.secret(cfg.auth_secret_ref),
        json_path=cfg.json_path,
        allow_private=ctx.allow_private,
        **ctx.common(),
    )


def build_database(ctx: SourceContext) -> SourceReader:
    """``Database``: rows of ``query`` (PostgreSQL, MySQL, MongoDB) as documents."""
    from aof_index_readers.database import DatabaseReader

    cfg = ctx.section(DatabaseSource)
    connection = ctx.secret(cfg.connection_secret_ref)
    return DatabaseReader(
        type=ctx.required(cfg.type, "database.type"),
        connection=ctx.required(connection, "database.connectionSecretRef"),
        query=ctx.required(cfg.query, "database.query"),
        columns=cfg.columns,
        **ctx.common(),
    )


# --- assembling ---------------------------------------------------------------------------


def build_reader(
    knowledge_base: KnowledgeBase,
    source: KnowledgeSource | str,
    *,
    base_dir: Path | None = None,
    home: Path | None = None,
) -> SourceReader:
    """The reader of one source of ``knowledge_base`` (by entry or by ``name``)."""
    sources = knowledge_base.spec.sources or []
    if isinstance(source, str):
        index = _source_index(knowledge_base, source)
    else:
        index = next(i for i, s in enumerate(sources) if s is source)
    entry = sources[index]
    if entry.type is None:
        raise ManifestError(
            knowledge_base.ref,
            [ManifestIssue(f"spec.sources[{index}].type", "is required", None)],
        )
    ctx = SourceContext(
        knowledge_base=knowledge_base,
        source=entry,
        index=index,
        base_dir=base_dir or Path.cwd(),
        home=home or data_home(),
    )
    factory: Callable[[SourceContext], SourceReader] = get_factory(
        "readers", entry.type, field=f"{ctx.field}.type"
    )
    try:
        return factory(ctx)
    except ValueError as exc:  # a reader refusing its settings names the field itself
        raise ctx.error(entry.settings_field or "", str(exc), None) from None


def select_sources(
    knowledge_base: KnowledgeBase | str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    name: str | None = None,
) -> tuple[KnowledgeBase, Path | None, list[KnowledgeSource]]:
    """The KnowledgeBase, its folder, and its enabled sources (or just ``names``, enabled or not).

    ``knowledge_base`` is a model, or a manifest file or directory (then ``name`` picks the
    KnowledgeBase when it holds several, and relative paths start from its folder).
    """
    base_dir: Path | None = None
    if isinstance(knowledge_base, KnowledgeBase):
        resource = knowledge_base
    else:
        path = Path(knowledge_base)
        resource = load_knowledge_base(path, name)
        base_dir = (path if path.is_dir() else path.parent).resolve()
    sources = resource.spec.sources or []
    if names is None:
        return resource, base_dir, [s for s in sources if s.enabled]
    return resource, base_dir, [sources[_source_index(resource, wanted)] for wanted in names]


def build_readers(
    knowledge_base: KnowledgeBase | str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    name: str | None = None,
    home: Path | None = None,
) -> Iterator[tuple[KnowledgeSource, SourceReader]]:
    """``(source, reader)`` for each source :func:`select_sources` picks.

    Readers are built lazily, one per iteration, so a bad source fails when reached.
    """
    resource, base_dir, sources = select_sources(knowledge_base, names=names, name=name)
    for source in sources:
        yield source, build_reader(resource, source, base_dir=base_dir, home=home)


def source_label(source: KnowledgeSource, index: int) -> str:
    """A source's name in reports, the sync state and ``--source``: ``spec.sources[].name``,
    or ``<type>-<index>`` for an unnamed one (e.g. ``GitHub-2``)."""
    return source.name or f"{source.type}-{index}"


def _source_index(resource: KnowledgeBase, name: str) -> int:
    names = [source_label(s, i) for i, s in enumerate(resource.spec.sources or [])]
    if name not in names:
        listed = ", ".join(str(n) for n in names) or "none"
        raise ManifestError(
            resource.ref,
            [ManifestIssue("spec.sources", f"no source named {name!r}; sources: {listed}")],
        )
    return names.index(name)
