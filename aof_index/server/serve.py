"""``aof-index kb serve``: open KnowledgeBases, schedule their syncs, serve the HTTP API.

:func:`open_knowledge_bases` opens every KnowledgeBase of the given files and directories
(KnowledgeBases writing to the same Memory share one set of Memory components, and their
syncs are serialised: the keyword index of a Memory is written by one sync at a time),
:func:`build_schedulers` makes a :class:`~aof_index.knowledge.scheduler.SyncScheduler` per
KnowledgeBase from its ``spec.indexing.schedule`` and ``spec.sync.onStartup``,
:func:`build_webhooks` a webhook receiver for each KnowledgeBase with
``schedule.type: webhook`` or ``sync.webhook.enabled: true``, and :func:`serve` runs them
under uvicorn until SIGINT or SIGTERM, then lets each sync in progress finish.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from aof_index.build.memory import MemoryComponents, build_memory
from aof_index.errors import BackendUnavailableError, ManifestError, ManifestIssue
from aof_index.home import knowledge_dir
from aof_index.knowledge.pipeline import resolve_memory
from aof_index.knowledge.scheduler import DEFAULT_INTERVAL, SyncScheduler
from aof_index.knowledge.sync import Dispatcher, KnowledgeBaseSync, open_sync
from aof_index.server.app import WebhookReceiverLike, create_app
from aof_index.spec.knowledge_base import KnowledgeBase
from aof_index.spec.loader import load_resources

__all__ = [
    "ServerStopped",
    "build_schedulers",
    "build_webhooks",
    "open_knowledge_bases",
    "serve",
    "webhooks_wanted",
]

logger = logging.getLogger(__name__)


class ServerStopped(Exception):
    """Raised in the main thread by SIGTERM while serving, so clean-up code runs."""


def open_knowledge_bases(
    files: Sequence[Path],
    *,
    memory: Path | None = None,
    home: Path | None = None,
    dispatcher: Dispatcher | None = None,
) -> tuple[dict[str, KnowledgeBaseSync], dict[str, threading.Lock]]:
    """Open the sync of every KnowledgeBase in ``files`` (files or directories).

    Returns ``(syncs by KnowledgeBase name, one lock per KnowledgeBase name)``; the locks of
    KnowledgeBases writing to the same Memory are the same lock object.

    Args:
        files: manifest files or directories.
        memory: a Memory manifest used by all of them (default: each one's ``memoryRef``).
        home: data root (default ``$AOF_INDEX_HOME``).
        dispatcher: hand documents to worker processes
            (:class:`~aof_index.knowledge.workers.RedisDispatcher`).

    Raises:
        ManifestError: a file holds no KnowledgeBase, two share a name, or a manifest is
            invalid.
    """
    shared = build_memory(memory) if memory is not None else None
    memories: dict[tuple[str, str], tuple[MemoryComponents, threading.Lock]] = {}
    syncs: dict[str, KnowledgeBaseSync] = {}
    locks: dict[str, threading.Lock] = {}
    origin: dict[str, Path] = {}
    for file in files:
        found = [r for r in load_resources(file) if isinstance(r, KnowledgeBase)]
        if not found:
            raise ManifestError(
                str(file), [ManifestIssue("kind", "no KnowledgeBase in this file or directory")]
            )
        for resource in found:
            name = resource.metadata.name
            if name in syncs:
                raise ManifestError(
                    str(file),
                    [
                        ManifestIssue(
                            "metadata.name",
                            f"a KnowledgeBase named {name!r} is also in {origin[name]}; the "
                            "API addresses KnowledgeBases by name, so serve them separately "
                            "or rename one",
                            value=name,
                        )
                    ],
                )
            if shared is not None:
                target = shared
                key = ("", "--memory")
            else:
                spec = resolve_memory(resource, Path(file))
                key = (spec.metadata.namespace, spec.metadata.name)
                target = memories[key][0] if key in memories else MemoryComponents(spec, home)
            if key not in memories:
                memories[key] = (target, threading.Lock())
            sync = open_sync(file, name=name, memory=target, home=home, dispatcher=dispatcher)
            if memory is not None and sync.origin is not None:  # workers open it by path
                sync.origin = replace(sync.origin, memory=str(memory.resolve()))
            syncs[name] = sync
            locks[name] = memories[key][1]
            origin[name] = Path(file)
    return syncs, locks


def build_schedulers(
    syncs: Mapping[str, KnowledgeBaseSync],
    locks: Mapping[str, threading.Lock] | None = None,
    *,
    interval: float = DEFAULT_INTERVAL,
    jitter: float | None = None,
) -> dict[str, SyncScheduler]:
    """A scheduler per KnowledgeBase, from its ``spec.indexing.schedule`` (not started).

    Raises:
        ValueError: a ``cron`` schedule has no expression (names the field).
    """
    return {
        name: SyncScheduler(
            sync,
            interval=interval,
            jitter=jitter,
            exclusive=(locks or {}).get(name),
        )
        for name, sync in syncs.items()
    }


def webhooks_wanted(resource: KnowledgeBase) -> bool:
    """Whether the KnowledgeBase takes webhooks: ``indexing.schedule.type: webhook`` or
    ``sync.webhook.enabled: true``."""
    spec = resource.spec
    schedule = spec.indexing.schedule if spec.indexing is not None else None
    hook = spec.sync.webhook if spec.sync is not None else None
    return (schedule is not None and schedule.type == "webhook") or (
        hook is not None and hook.enabled is True
    )


def build_webhooks(syncs: Mapping[str, KnowledgeBaseSync]) -> dict[str, WebhookReceiverLike]:
    """A webhook receiver for each KnowledgeBase that takes webhooks (see
    :func:`webhooks_wanted`); delivery ids are kept in its data folder (``webhooks.db``).

    Raises:
        ManifestError: such a KnowledgeBase has no webhook secret
            (``spec.indexing.schedule.webhook.secret``).
        BackendUnavailableError: the webhooks module is not available.
    """
    wanted = {name: s for name, s in syncs.items() if webhooks_wanted(s.resource)}
    if not wanted:
        return {}
    try:
        from aof_index.knowledge.webhooks import WebhookReceiver
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        raise BackendUnavailableError(
            f"KnowledgeBases {', '.join(wanted)} take webhooks, but the webhook receiver "
            f"cannot be imported ({exc})"
        ) from exc
    receivers: dict[str, WebhookReceiverLike] = {}
    for name, sync in wanted.items():
        meta = sync.resource.metadata
        db = knowledge_dir(meta.namespace, meta.name, sync.home) / "webhooks.db"
        receivers[name] = WebhookReceiver(sync.resource, db)
    return receivers


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While serving, SIGTERM raises :class:`ServerStopped` in the main thread (uvicorn
    re-raises the signal it caught once it has shut down; with the default handler the
    process would end before the schedulers are stopped)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise ServerStopped(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(
    schedulers: Mapping[str, SyncScheduler],
    *,
    webhooks: Mapping[str, WebhookReceiverLike] | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    stop_timeout: float | None = None,
) -> None:
    """Start the schedulers, serve the API until SIGINT/SIGTERM, then stop the schedulers
    (each sync in progress finishes first; a second Ctrl-C abandons it, which is safe: the
    sync is crash-safe).

    Raises:
        BackendUnavailableError: uvicorn or Starlette is not installed.
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise BackendUnavailableError(
            "the HTTP server needs Starlette and uvicorn: pip install 'aof-index[server]'"
        ) from exc
    app = create_app(schedulers, webhooks=webhooks)
    for name, receiver in (webhooks or {}).items():
        logger.info("%s: webhooks at POST http://%s:%d%s", name, host, port, receiver.path)
    config: Any = uvicorn.Config(app, host=host, port=port, log_level=log_level)
    server = uvicorn.Server(config)
    started: list[SyncScheduler] = []
    try:
        with _sigterm_raises():
            for scheduler in schedulers.values():
                scheduler.start()
                started.append(scheduler)
            server.run()
    except (KeyboardInterrupt, ServerStopped):
        pass
    finally:
        for scheduler in started:
            if scheduler.running:
                logger.info(
                    "%s: waiting for the sync in progress to finish (Ctrl-C again to abandon "
                    "it; the next sync resumes safely)",
                    scheduler.name,
                )
            scheduler.stop(stop_timeout)
        logger.info("stopped")
