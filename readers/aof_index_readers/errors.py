"""Errors raised by the readers, one type per thing a user can do something about.

Every message names the source, what was asked, and what to change. Secrets never appear in
them. A failure that concerns one document (a malformed page, an oversized file) is not an
error: the reader skips that document and records a :class:`~aof_index_readers.base.Skipped`
entry with the reason, so one bad document never stops a sync.
"""

from __future__ import annotations

__all__ = [
    "BlockedAddressError",
    "SourceAuthError",
    "SourceError",
    "SourceLimitError",
    "SourceNotFoundError",
    "SourcePermissionError",
    "SourceRateLimitError",
    "SourceUnavailableError",
]


class SourceError(Exception):
    """A source could not be read. Subclasses say why; the message says what to do."""


class SourceAuthError(SourceError):
    """The service rejected the credentials (HTTP 401, a bad SSH key, a wrong password)."""


class SourcePermissionError(SourceError):
    """The credentials are valid but may not read this resource (HTTP 403)."""


class SourceNotFoundError(SourceError):
    """The configured repository, space, bucket, page or URL does not exist (HTTP 404)."""


class SourceRateLimitError(SourceError):
    """The service's rate limit is exhausted and resets later than the reader may wait (429).

    ``reset_at`` is the Unix time the limit resets, when the service said so.
    """

    def __init__(self, message: str, *, reset_at: float | None = None) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class SourceUnavailableError(SourceError):
    """The service failed (HTTP 5xx, connection refused, timeout) after bounded retries."""


class SourceLimitError(SourceError):
    """A source yielded more than its configured size limit."""


class BlockedAddressError(SourceError):
    """A URL resolves to a loopback, link-local or private address that was not allowed."""
