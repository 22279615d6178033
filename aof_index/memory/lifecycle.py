"""What every connection-holding chat store does alike: context managers and pickling."""

from __future__ import annotations

from abc import abstractmethod
from types import TracebackType
from typing import Any, Self

from llama_index.core.bridge.pydantic import BaseModel

__all__ = ["ClosableStore"]


class ClosableStore:
    """Mixin for a pydantic store whose connections open lazily.

    ``with store:`` / ``async with store:`` close the connections on exit; a pickled copy
    (e.g. sent to a worker process) keeps the settings only and opens its own connections
    on first use.
    """

    @abstractmethod
    def close(self) -> None:
        """Release the connections; the next call reopens them."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the connections from async code; the next call reopens them."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __getstate__(self) -> dict[Any, Any]:
        # Connections, pools and locks (private attributes) stay behind.
        assert isinstance(self, BaseModel)
        state = dict(BaseModel.__getstate__(self))
        state["__pydantic_private__"] = None
        return state
