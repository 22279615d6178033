"""One HTTP client for every reader of a web service: retries, rate limits, typed errors.

:class:`HttpClient` wraps an ``httpx.Client`` and does what each hosted API otherwise needs
its own copy of:

- **Rate limits**: a 429, or a 403 whose ``X-RateLimit-Remaining`` is ``0``, waits for
  ``Retry-After`` or the reset time (``X-RateLimit-Reset``, ``RateLimit-Reset``; epoch or
  seconds), then retries. A wait longer than ``max_wait`` raises
  :class:`SourceRateLimitError` carrying the reset time, so the next sync resumes then.
- **Failures**: 5xx answers, timeouts and refused connections are retried with exponential
  backoff, ``max_retries`` times, then raise :class:`SourceUnavailableError`.
- **Errors**: 401, 403, 404 and other 4xx answers raise a distinct, typed error whose
  message names the service, the source, the request (path only: query strings can hold
  credentials) and what to check, with the service's own error text.
- **Conditional requests**: with ``conditional=True``, a GET that was answered before is
  sent with ``If-None-Match`` (or ``If-Modified-Since`` when the answer had no ETag); a
  ``304 Not Modified`` returns the cached body (GitHub does not count 304s against the
  rate limit). The cache keeps the most recently used bodies,
  at most 64 MiB of them.
- **Limits**: bodies larger than ``max_bytes`` (decoded: a compressed body counts at its
  full size) stop with :class:`SourceLimitError`; redirects are followed by hand, at most
  ``max_redirects``, each hop checked by the :class:`~aof_index_readers.guard.AddressPolicy`
  when one is given. A hop to another origin (scheme, host or port) carries no credentials:
  only content-negotiation headers (``Accept*``, ``User-Agent``) go with it.
- **Thread safety**: one client may be shared by threads (the URL reader's crawl does).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

import httpx

from aof_index_readers.errors import (
    SourceAuthError,
    SourceError,
    SourceLimitError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceRateLimitError,
    SourceUnavailableError,
)
from aof_index_readers.guard import AddressPolicy

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "HttpClient", "retry_delay"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSE_BYTES = 50 * 2**20
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONDITIONAL_CACHE_BYTES = 64 * 2**20
# Headers that follow a redirect to another origin; everything else (Authorization, API-key
# headers such as PRIVATE-TOKEN, cookies, validators) stays with the origin it was set for.
_CROSS_ORIGIN_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "user-agent", "content-type"}
)
# The body is decoded while read, so these no longer describe it.
_ENCODING_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def retry_delay(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait according to ``Retry-After`` or a rate-limit reset header, if any."""
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(retry_after).timestamp() - now)
            except (TypeError, ValueError):
                pass
    for name in ("x-ratelimit-reset", "ratelimit-reset"):
        value = headers.get(name)
        if value:
            try:
                reset = float(value)
            except ValueError:
                continue
            # Epoch seconds (GitHub, GitLab) or a delta (the IETF RateLimit draft).
            return max(0.0, reset - now) if reset > 1e9 else reset
    return None


def _rate_limited(response: httpx.Response) -> bool:
    if response.status_code == 429:
        return True
    return response.status_code == 403 and (
        response.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in response.headers
    )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _service_message(response: httpx.Response) -> str:
    """The service's own explanation from an error body, shortened."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(body, dict):
        for key in ("message", "error_description", "error", "errorMessage", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:200]
    return text[:200]


_LAST_MODIFIED = "last-modified:"


def _validator(response: httpx.Response) -> str | None:
    """What a conditional GET sends back: the ETag, else ``last-modified:<date>``."""
    etag: str | None = response.headers.get("etag")
    if etag:
        return etag
    modified: str | None = response.headers.get("last-modified")
    return _LAST_MODIFIED + modified if modified else None


class HttpClient:
    """An ``httpx.Client`` with retries, rate-limit handling and typed errors.

    Args:
        service: the service's name for messages (``GitHub``).
        source_name: the manifest source's name for messages.
        base_url: prefix for relative request URLs.
        headers: headers sent with every request (credentials go here or in ``auth``).
        auth: an ``httpx`` auth (Basic for Confluence).
        credential_hint: which manifest field holds the credential, for 401/403 messages;
            ``None`` for a client that sends none (messages then say the resource is not
            public).
        timeout: seconds per request.
        max_retries: retries of a 5xx, timeout or refused connection.
        max_wait: the longest a rate-limit wait is honoured before raising.
        max_redirects: redirects followed per request.
        max_bytes: the largest body read.
        addresses: when given, every URL and redirect hop must pass it.
        conditional: send ``If-None-Match``/``If-Modified-Since`` for GETs answered before,
            reuse the body on 304.
        transport: an ``httpx`` transport (tests), ``sleep`` and ``clock`` likewise.

    Example:
        >>> client = HttpClient("GitHub", "docs", base_url="https://api.github.com")
        >>> # client.get_json("/repos/o/r")  -> dict
    """

    def __init__(
        self,
        service: str,
        source_name: str,
        *,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        credential_hint: str | None = "the credentials",
        timeout: float = 30.0,
        max_retries: int = 4,
        max_wait: float = 120.0,
        max_redirects: int = 5,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        addresses: AddressPolicy | None = None,
        conditional: bool = False,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.source_name = source_name
        self.credential_hint = credential_hint
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.max_redirects = max_redirects
        self.max_bytes = max_bytes
        self.addresses = addresses
        self.conditional = conditional
        self._sleep = sleep
        self._clock = clock
        self._etags: OrderedDict[str, tuple[str, httpx.Response]] = OrderedDict()
        self._etag_bytes = 0
        self._lock = threading.Lock()
        self.requests = 0
        """Requests sent, retries and redirects included (benchmarks read it)."""
        self.not_modified = 0
        """GETs answered ``304 Not Modified`` from the conditional cache."""
        self._client = httpx.Client(
            base_url=base_url,
            headers=dict(headers or {}),
            auth=auth,
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
        )

    # --- public API ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send one request, retrying as described above; the body is read.

        ``allow`` lists error statuses returned instead of raised (e.g. ``{404}``).
        """
        request = self._client.build_request(
            method, url, params=params, json=json_body, headers=headers
        )
        key = str(request.url)
        cached = self._cached(key) if self.conditional and method == "GET" else None
        if cached is not None:
            validator = cached[0]
            if validator.startswith(_LAST_MODIFIED):
                request.headers["If-Modified-Since"] = validator.removeprefix(_LAST_MODIFIED)
            else:
                request.headers["If-None-Match"] = validator
        delay = 0.5
        for attempt in range(self.max_retries + 1):
            try:
                response = self._send(request)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise SourceUnavailableError(
                        f"{self._who()}: {type(exc).__name__} for {self._what(request)} after "
                        f"{attempt + 1} attempts ({exc}); check that "
                        f"{request.url.host} is reachable"
                    ) from exc
                delay = self._backoff(delay)
                continue
            if response.status_code == 304 and cached is not None:
                with self._lock:
                    self.not_modified += 1
                return cached[1]
            if response.is_success:
                answered = _validator(response)
                if self.conditional and method == "GET" and answered:
                    self._remember(key, answered, response)
                return response
            if _rate_limited(response) and attempt < self.max_retries:
                self._wait_for_limit(request, response)
                continue
            if response.status_code >= 500 and attempt < self.max_retries:
                delay = self._backoff(delay)
                continue
            if response.status_code in allow:
                return response
            raise self._error(request, response, attempt + 1)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """``request("GET", url, ...)``."""
        return self.request("GET", url, **kwargs)

    def get_json(self, url: str, **kwargs: Any) -> Any:
        """GET ``url`` and decode its JSON body (a malformed body raises :class:`SourceError`)."""
        return self.json(self.get(url, **kwargs))

    def json(self, response: httpx.Response) -> Any:
        """``response``'s JSON body, or a :class:`SourceError` naming the request."""
        try:
            return response.json()
        except ValueError as exc:
            raise SourceError(
                f"{self._who()}: {self._what(response.request)} returned a body that is not "
                f"JSON ({exc})"
            ) from exc

    def paginate(self, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """GET ``url`` and every ``Link: <...>; rel="next"`` page after it (GitHub, GitLab)."""
        response = self.get(url, **kwargs)
        kwargs.pop("params", None)
        while True:
            yield response
            following = response.links.get("next", {}).get("url")
            if not following:
                return
            response = self.get(following, **kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -------------------------------------------------------------------------

    def _cached(self, key: str) -> tuple[str, httpx.Response] | None:
        with self._lock:
            cached = self._etags.get(key)
            if cached is not None:
                self._etags.move_to_end(key)
            return cached

    def _remember(self, key: str, etag: str, response: httpx.Response) -> None:
        """Keep ``response`` for conditional GETs, least recently used bodies evicted."""
        size = len(response.content)
        if size > _CONDITIONAL_CACHE_BYTES:
            return
        with self._lock:
            previous = self._etags.pop(key, None)
            if previous is not None:
                self._etag_bytes -= len(previous[1].content)
            self._etags[key] = (etag, response)
            self._etag_bytes += size
            while self._etag_bytes > _CONDITIONAL_CACHE_BYTES:
                _, (_, evicted) = self._etags.popitem(last=False)
                self._etag_bytes -= len(evicted.content)

    def _send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` following redirects by hand (each hop checked), body read.

        Credentials (the client's auth and every header but content negotiation) stay with
        the origin they were configured for: a redirect to another origin is sent without
        them.
        """
        origin = _origin(request.url)
        for _ in range(self.max_redirects + 1):
            if self.addresses is not None:
                self.addresses.check(str(request.url))
            with self._lock:
                self.requests += 1
            same_origin = _origin(request.url) == origin
            if same_origin:
                response = self._client.send(request, stream=True)
            else:
                response = self._client.send(request, stream=True, auth=None)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    request = self._redirected(request, response.status_code, location)
                    continue
                return self._read(request, response)
            finally:
                response.close()
        raise SourceError(
            f"{self._who()}: more than {self.max_redirects} redirects for "
            f"{self._what(request)}; fix the URL to point at the final location"
        )

    def _redirected(self, request: httpx.Request, status: int, location: str) -> httpx.Request:
        """The request a redirect asks for (RFC 9110 section 15.4), credentials kept home."""
        method = request.method
        if (status == 303 and method != "HEAD") or (status in {301, 302} and method == "POST"):
            method = "GET"
        try:
            target = httpx.URL(urljoin(str(request.url), location))
        except httpx.InvalidURL as exc:
            raise SourceError(
                f"{self._who()}: {self._what(request)} redirected to a malformed URL ({exc})"
            ) from exc
        if target.scheme not in {"http", "https"}:
            raise SourceError(
                f"{self._who()}: {self._what(request)} redirected to a {target.scheme!r} URL; "
                "only http and https are followed"
            )
        headers = httpx.Headers(request.headers)
        headers.pop("host", None)
        if _origin(target) != _origin(request.url):
            for name in list(headers.keys()):
                if name.lower() not in _CROSS_ORIGIN_HEADERS:
                    headers.pop(name, None)
        body = request.content if method == request.method else None
        if body is None:
            headers.pop("content-length", None)
            headers.pop("content-type", None)
        return httpx.Request(method, target, headers=headers, content=body)

    def _read(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        """The response with its body read and decoded, at most ``max_bytes`` of it."""
        declared = response.headers.get("content-length")
        if (
            request.method != "HEAD"  # a HEAD's Content-Length describes the GET's body
            and declared is not None
            and declared.isdigit()
            and int(declared) > self.max_bytes
        ):
            self._too_large(request)
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > self.max_bytes:
                    self._too_large(request)
        except httpx.DecodingError as exc:
            raise SourceError(
                f"{self._who()}: {self._what(request)} returned a body that cannot be decoded "
                f"as its Content-Encoding says ({exc})"
            ) from exc
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in _ENCODING_HEADERS
        ]
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(body), request=request
        )

    def _too_large(self, request: httpx.Request) -> None:
        raise SourceLimitError(
            f"{self._who()}: {self._what(request)} returned more than {self.max_bytes:,} "
            "bytes; raise the limit or narrow the source"
        )

    def _wait_for_limit(self, request: httpx.Request, response: httpx.Response) -> None:
        now = self._clock()
        wait = retry_delay(response.headers, now)
        if wait is None:
            wait = 60.0  # GitHub's advice for secondary limits without a header
        if wait > self.max_wait:
            raise SourceRateLimitError(
                f"{self._who()}: rate limit exhausted for {self._what(request)}; it resets in "
                f"{wait:.0f} s, longer than the {self.max_wait:.0f} s this reader waits. The "
                "next sync resumes; a token with a higher limit avoids this",
                reset_at=now + wait,
            )
        logger.warning(
            "%s: rate limited on %s, waiting %.1f s", self._who(), self._what(request), wait
        )
        self._sleep(wait)

    def _backoff(self, delay: float) -> float:
        self._sleep(delay * (1 + random.random() / 2))
        return min(delay * 2, 30.0)

    def _who(self) -> str:
        return f"{self.service} source {self.source_name!r}"

    @staticmethod
    def _what(request: httpx.Request) -> str:
        url = request.url
        return f"{request.method} {url.scheme}://{url.netloc.decode()}{url.path}"

    def _error(
        self, request: httpx.Request, response: httpx.Response, attempts: int
    ) -> SourceError:
        status = response.status_code
        said = _service_message(response)
        where = f"{self._who()}: {status} {response.reason_phrase} for {self._what(request)}"
        if said:
            where += f" ({said})"
        if _rate_limited(response):
            now = self._clock()
            wait = retry_delay(response.headers, now)
            return SourceRateLimitError(
                f"{where}: still rate limited after {attempts} attempts; the next sync resumes",
                reset_at=None if wait is None else now + wait,
            )
        hint = self.credential_hint
        if status == 401:
            if hint is None:
                return SourceAuthError(
                    f"{where}: it needs credentials and this source sends none; only public "
                    "resources can be read"
                )
            return SourceAuthError(
                f"{where}: the credentials were rejected; check that {hint} "
                "holds a valid, unexpired token"
            )
        if status == 403:
            if hint is None:
                return SourcePermissionError(
                    f"{where}: it is not public (this source sends no credentials)"
                )
            return SourcePermissionError(
                f"{where}: the credentials may not read this; grant {hint} read access to it"
            )
        if status == 404:
            seen_by = "it is public" if hint is None else f"{hint} can see it"
            return SourceNotFoundError(
                f"{where}: check that it exists and that {seen_by} "
                "(private resources answer 404 to clients without access)"
            )
        if status >= 500:
            return SourceUnavailableError(
                f"{where}: the service failed {attempts} times; try again later"
            )
        return SourceError(f"{where}: the request was refused; check the source's settings")
