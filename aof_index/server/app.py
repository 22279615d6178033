"""The HTTP API over KnowledgeBase schedulers, as a Starlette app.

Routes (``{name}`` is the KnowledgeBase's ``metadata.name``):

- ``POST /api/v1/knowledgebases/{name}/sync``: queue a sync. Optional JSON body
  ``{"sources": ["runbooks"], "mode": "full"}``; answers 202
  ``{"accepted": true, "queued": [source names], "mode": ..., "running": bool}``. A sync
  requested while one runs is merged into one follow-up run (see
  :mod:`aof_index.knowledge.scheduler`).
- ``GET /api/v1/knowledgebases/{name}/status``: the KnowledgeBase ``status`` block in the
  manifest's camelCase, exactly as ``aof-index kb status --json`` prints it.
- ``GET /api/v1/knowledgebases/{name}/documents``: the indexed documents, as
  ``aof-index kb documents --json`` prints them.
- ``GET /healthz``: ``{"status": "ok", "knowledgeBases": {name: {...}}}``.
- ``POST <receiver.path>`` for each webhook receiver (default
  ``/webhooks/<namespace>/<name>``): verified deliveries queue an incremental sync of the
  sources they affect.

Errors are JSON ``{"error": message}``: 404 for an unknown KnowledgeBase (with the known
names), 400 for a bad body (with ``field`` and, where there is a fixed set, ``allowed``).
Blocking calls (SQLite reads, webhook verification) run in Starlette's thread pool.

Needs the ``server`` extra: ``pip install 'aof-index[server]'``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast, get_args

from aof_index.errors import AofIndexError, BackendUnavailableError
from aof_index.knowledge.sync import SyncMode

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from aof_index.knowledge.scheduler import SyncScheduler
    from aof_index.knowledge.webhooks import WebhookEvent

__all__ = ["WebhookReceiverLike", "create_app"]

logger = logging.getLogger(__name__)

API = "/api/v1/knowledgebases"
_MODES: tuple[str, ...] = get_args(SyncMode)
_BODY_FIELDS = ("sources", "mode")


class WebhookReceiverLike(Protocol):
    """What the app needs of a webhook receiver
    (:class:`aof_index.knowledge.webhooks.WebhookReceiver`)."""

    path: str

    def receive(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify a delivery and name the sources it affects (raises ``WebhookRejected``)."""
        ...


class _BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None, allowed: Any = None) -> None:
        super().__init__(message)
        self.body: dict[str, Any] = {"error": message}
        if field is not None:
            self.body["field"] = field
        if allowed is not None:
            self.body["allowed"] = allowed


def _parse_sync_body(raw: bytes, known_sources: list[str]) -> tuple[list[str] | None, str | None]:
    """``(sources, mode)`` from a sync request body (empty: all sources, default mode)."""
    if not raw.strip():
        return None, None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _BadRequest(f'the body is not JSON ({exc}); send e.g. {{"mode": "full"}}') from None
    if data is None:
        return None, None
    if not isinstance(data, dict):
        raise _BadRequest(
            f"the body must be a JSON object with optional fields sources and mode "
            f"(got a {type(data).__name__})",
            allowed=list(_BODY_FIELDS),
        )
    unknown = sorted(set(data) - set(_BODY_FIELDS))
    if unknown:
        raise _BadRequest(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_BODY_FIELDS)}",
            field=unknown[0],
            allowed=list(_BODY_FIELDS),
        )
    mode = data.get("mode")
    if mode is not None and mode not in _MODES:
        raise _BadRequest(
            f"mode must be one of {', '.join(_MODES)} (got {mode!r})",
            field="mode",
            allowed=list(_MODES),
        )
    sources = data.get("sources")
    if sources is not None:
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise _BadRequest(
                "sources must be a list of source names", field="sources", allowed=known_sources
            )
        missing = [s for s in sources if s not in known_sources]
        if missing:
            raise _BadRequest(
                f"no source named {', '.join(repr(s) for s in missing)}; sources: "
                f"{', '.join(known_sources) or 'none'}",
                field="sources",
                allowed=known_sources,
            )
        if not sources:
            raise _BadRequest(
                "sources is empty; name at least one source, or leave the field out to sync "
                "them all",
                field="sources",
                allowed=known_sources,
            )
    return sources, mode


def create_app(
    schedulers: Mapping[str, SyncScheduler],
    *,
    webhooks: Mapping[str, WebhookReceiverLike] | None = None,
) -> Starlette:
    """The Starlette app serving the KnowledgeBases of ``schedulers``.

    The app neither starts nor stops the schedulers: their owner does (``kb serve`` starts
    them before serving and stops them after).

    Args:
        schedulers: KnowledgeBase name → its running scheduler.
        webhooks: KnowledgeBase name → its webhook receiver, served at ``receiver.path``.

    Raises:
        BackendUnavailableError: Starlette is not installed (install ``aof-index[server]``).
        ValueError: a webhook names a KnowledgeBase without a scheduler, or two receivers
            share a path (``spec.indexing.schedule.webhook.path``).
    """
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise BackendUnavailableError(
            "the HTTP server needs Starlette and uvicorn: pip install 'aof-index[server]'"
        ) from exc

    known = sorted(schedulers)

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    def lookup(request: Request) -> SyncScheduler | JSONResponse:
        name = str(request.path_params["name"])
        scheduler = schedulers.get(name)
        if scheduler is None:
            return error(
                404,
                f"no KnowledgeBase named {name!r}; knowledge bases: {', '.join(known) or 'none'}",
                knowledgeBases=known,
            )
        return scheduler

    async def sync(request: Request) -> JSONResponse:
        scheduler = lookup(request)
        if isinstance(scheduler, JSONResponse):
            return scheduler
        all_sources = scheduler.sync.source_names()
        try:
            sources, mode = _parse_sync_body(await request.body(), all_sources)
        except _BadRequest as exc:
            return JSONResponse(exc.body, status_code=400)
        try:
            scheduler.request(sources, reason="HTTP API", mode=cast("SyncMode | None", mode))
        except (AofIndexError, ValueError) as exc:
            return error(400, str(exc))
        queued = sources if sources is not None else scheduler.sync.source_names(enabled_only=True)
        return JSONResponse(
            {
                "accepted": True,
                "queued": queued,
                "mode": mode or scheduler.default_mode,
                "running": scheduler.running,
            },
            status_code=202,
        )

    async def status(request: Request) -> JSONResponse:
        scheduler = lookup(request)
        if isinstance(scheduler, JSONResponse):
            return scheduler
        return JSONResponse(await run_in_threadpool(scheduler.sync.status_data))

    async def documents(request: Request) -> JSONResponse:
        scheduler = lookup(request)
        if isinstance(scheduler, JSONResponse):
            return scheduler
        return JSONResponse(await run_in_threadpool(scheduler.sync.documents_data))

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "knowledgeBases": {
                    name: {
                        "schedule": s.schedule,
                        "alive": s.alive,
                        "running": s.running,
                        "runs": s.runs,
                        "nextRun": s.next_run.isoformat() if s.next_run else None,
                    }
                    for name, s in sorted(schedulers.items())
                },
            }
        )

    routes = [
        Route(f"{API}/{{name}}/sync", sync, methods=["POST"]),
        Route(f"{API}/{{name}}/status", status, methods=["GET"]),
        Route(f"{API}/{{name}}/documents", documents, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    paths: dict[str, str] = {}
    for name, receiver in (webhooks or {}).items():
        if name not in schedulers:
            raise ValueError(f"webhook receiver for {name!r}, which has no scheduler")
        if receiver.path in paths:
            raise ValueError(
                f"KnowledgeBases {paths[receiver.path]} and {name} both serve webhooks at "
                f"{receiver.path}; give one another spec.indexing.schedule.webhook.path"
            )
        paths[receiver.path] = name
        routes.append(
            Route(receiver.path, _webhook_endpoint(receiver, schedulers[name]), methods=["POST"])
        )
    return Starlette(routes=routes)


def _webhook_endpoint(receiver: WebhookReceiverLike, scheduler: SyncScheduler) -> Any:
    """The endpoint of one webhook receiver: verify, then queue an incremental sync."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    async def endpoint(request: Request) -> JSONResponse:
        body = await request.body()
        headers = dict(request.headers.items())
        try:
            event = await run_in_threadpool(receiver.receive, headers, body)
        except AofIndexError as exc:
            status_code = getattr(exc, "status_code", None)
            if not isinstance(status_code, int):  # not a WebhookRejected: our fault
                logger.exception("%s: webhook delivery failed", scheduler.name)
                return JSONResponse({"error": str(exc)}, status_code=500)
            return JSONResponse(
                {"error": str(getattr(exc, "reason", exc))}, status_code=status_code
            )
        if not event.sources:
            return JSONResponse({"accepted": False, "reason": "no source affected"})
        try:
            scheduler.request(
                list(event.sources),
                reason=f"webhook {event.provider} {event.delivery_id}",
                mode="incremental",
            )
        except (AofIndexError, ValueError) as exc:
            forget = getattr(receiver, "forget", None)
            if forget is not None:  # let the provider's retry through
                await run_in_threadpool(forget, event)
            logger.exception("%s: could not queue the webhook's sync", scheduler.name)
            return JSONResponse({"error": f"could not queue the sync: {exc}"}, status_code=500)
        return JSONResponse({"accepted": True, "sources": list(event.sources)}, status_code=202)

    return endpoint
