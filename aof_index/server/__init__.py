"""The aof-index HTTP API (``aof-index kb serve``): sync, status and documents of
KnowledgeBases, and their webhook endpoints.

Needs the ``server`` extra (``pip install 'aof-index[server]'``): Starlette and uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app"]

if TYPE_CHECKING:
    from aof_index.server.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from aof_index.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
