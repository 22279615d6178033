"""Read web pages, optionally crawling their links, into documents.

:class:`URLReader` reads the configured URLs; with ``crawl=True`` it follows their links,
breadth first, down to ``max_depth`` levels (depth 0 is the configured URLs themselves),
within ``allowed_domains`` (by default the configured URLs' hosts; a domain allows its
subdomains), at most ``max_pages`` pages.

Fetching:

- Every request goes through :class:`~aof_index_readers.http.HttpClient` (retries, rate
  limits, size limit, bounded redirects) with an
  :class:`~aof_index_readers.guard.AddressPolicy`: loopback, link-local and private
  addresses are refused, on every redirect hop too, unless listed in ``allow_private``.
  While crawling, a redirect hop leaving ``allowed_domains`` is not followed either.
- ``robots.txt`` is read once per origin (``urllib.robotparser``) and obeyed for every URL,
  configured ones included, under the reader's user agent. A missing (4xx) ``robots.txt``
  allows everything; one the server fails to give (5xx after retries, or 429) stops the
  read with :class:`~aof_index_readers.errors.SourceUnavailableError` /
  :class:`~aof_index_readers.errors.SourceRateLimitError`: RFC 9309 says to crawl nothing
  then, and failing (rather than listing nothing) keeps an incremental sync from deleting
  the pages it indexed before. ``Crawl-delay`` (whole seconds, at most 60) spaces requests
  to that host. Path wildcards (``*``, ``$``) are not understood (a stdlib limitation).
- Pages are fetched by a thread pool, at most ``per_host_concurrency`` requests in flight
  per host, and yielded in a deterministic order: breadth first, the configured URLs in
  their order, every later level sorted.

Listing cost: without crawling, :meth:`URLReader.list_documents` sends ``HEAD`` and takes
the version from ``ETag`` (else ``Last-Modified``) without reading the page; pages whose
``HEAD`` gives neither (or fails) are fetched with ``GET`` and versioned by the SHA-256 of
their body. Crawling has to read every page for its links. Bodies read while listing are
kept (up to 32 MiB, least recent dropped first) for :meth:`URLReader.load_document`, so a
list-then-load pass fetches each page once.

Content: HTML gets its main content extracted by trafilatura as Markdown (tables kept,
links dropped), falling back to the page's visible text when trafilatura finds nothing;
with ``selector``, only the elements the CSS selector matches, converted to Markdown.
The title comes from ``og:title`` or ``<title>``, the author from ``<meta name="author">``,
``last_modified`` from the ``Last-Modified`` header. Plain text, Markdown, PDF, DOCX and
other text types go through the shared extraction (:mod:`aof_index_readers.text`); other
types (images, archives, ``application/octet-stream``) are skipped with a reason, and so
are links whose path ends in a binary suffix (``.png``, ``.zip``...), without a request.

Failures: a configured URL that answers 401/403/404 (or is refused by the address policy)
stops the read with the typed error; the same for a crawled link only skips that link.
Oversized or unreadable pages are skipped with a reason; 5xx answers, connection failures
and exhausted rate limits always stop the read (after the client's retries).

Ids are ``stable_id("url", normalised URL)`` (fragment dropped, scheme and host lower-cased,
default port and credentials dropped); ``source`` is the URL after redirects.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Unpack
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from llama_index.core.schema import Document

from aof_index_readers.base import (
    DocumentRef,
    ReaderOptions,
    SourceReader,
    iso_time,
    stable_id,
)
from aof_index_readers.errors import (
    SourceError,
    SourceLimitError,
    SourceRateLimitError,
    SourceUnavailableError,
)
from aof_index_readers.guard import AddressPolicy
from aof_index_readers.http import HttpClient
from aof_index_readers.text import NotText, extract_text, unsupported_reason

if TYPE_CHECKING:
    import httpx
    from bs4 import BeautifulSoup

__all__ = ["DEFAULT_USER_AGENT", "PRIVATE_NETWORK_HINT", "URLReader", "normalize_url"]

logger = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "aof-index-reader/0.1 (+https://github.com/agenticops/aof)"
PRIVATE_NETWORK_HINT = (
    "list the host in spec.sources[].url.allowedDomains or in the annotation "
    "aof.agenticops.org/allow-private-networks"
)
_CACHE_BYTES = 32 * 2**20
_MAX_CRAWL_DELAY = 60.0
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Links to these are not fetched while crawling: no text to read in them.
_BINARY_SUFFIXES = frozenset(
    """.7z .apk .avi .bin .bmp .bz2 .deb .dmg .exe .flac .gif .gz .ico .iso .jar .jpeg .jpg
    .m4a .mkv .mov .mp3 .mp4 .mpeg .msi .ogg .otf .png .rar .rpm .svg .tar .tgz .tif .tiff
    .ttf .wasm .wav .webm .webp .woff .woff2 .xz .zip""".split()  # noqa: SIM905
)
_SOURCE_FAILURES = (SourceUnavailableError, SourceRateLimitError)


def normalize_url(url: str, base: str | None = None) -> str | None:
    """``url`` resolved against ``base`` in one canonical form, or ``None`` if not http(s).

    The fragment, credentials and a default port are dropped, scheme and host lower-cased,
    dot segments resolved, an empty path becomes ``/``; the query is kept as is.
    """
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in {"http", "https"} or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != (443 if scheme == "https" else 80):
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, _without_dot_segments(parts.path), parts.query, ""))


def _without_dot_segments(path: str) -> str:
    """``path`` with ``.`` and ``..`` segments resolved (RFC 3986 section 5.2.4)."""
    if "." not in path:
        return path or "/"
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in {".", ".."}:
        kept.append("")
    return "/" + "/".join(kept)


def _domain(entry: str) -> str:
    """``allowedDomains`` entry → bare domain (``https://Docs.X.io/`` and ``*.x.io`` work)."""
    entry = entry.strip()
    host = urlsplit(entry).hostname if "://" in entry else entry
    return (host or "").lower().rstrip(".").lstrip("*.")


def _in_domains(url: str, domains: Iterable[str]) -> bool:
    host = (urlsplit(url).hostname or "").rstrip(".")
    return any(host == domain or host.endswith(f".{domain}") for domain in domains)


class _OutOfScope(SourceError):
    """A crawl redirect left ``allowed_domains``."""


class _ScopedPolicy(AddressPolicy):
    """The address policy, plus: every hop of a crawl must stay within the domains."""

    def __init__(self, allow: Sequence[str], *, hint: str, domains: Sequence[str]) -> None:
        super().__init__(allow, hint=hint)
        self.domains = tuple(domains)

    def check(self, url: str) -> None:
        if not _in_domains(url, self.domains):
            raise _OutOfScope(
                f"{url} is outside allowedDomains ({', '.join(self.domains)}); add its "
                "domain to follow it"
            )
        super().check(url)


@dataclass(frozen=True)
class _Page:
    """What one visit learnt about a URL (``body`` is ``None`` after a HEAD)."""

    url: str
    final: str
    depth: int
    version: str
    media_type: str
    charset: str | None
    last_modified: str | None
    body: bytes | None = None
    title: str | None = None
    author: str | None = None
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Refused:
    """A URL that was not read, and why."""

    url: str
    reason: str


@dataclass(frozen=True)
class _Handle:
    url: str
    depth: int


@dataclass
class _BodyCache:
    """Bodies read while listing, kept for the load (bounded; least recent dropped first)."""

    limit: int = _CACHE_BYTES
    pages: OrderedDict[str, _Page] = field(default_factory=OrderedDict)
    size: int = 0

    def put(self, key: str, page: _Page) -> None:
        length = len(page.body or b"")
        if page.body is None or length > self.limit:
            return
        self.pop(key)
        self.pages[key] = page
        self.size += length
        while self.size > self.limit:
            _, dropped = self.pages.popitem(last=False)
            self.size -= len(dropped.body or b"")

    def pop(self, key: str) -> _Page | None:
        page = self.pages.pop(key, None)
        if page is not None:
            self.size -= len(page.body or b"")
        return page


class _Hosts:
    """Per host: at most ``limit`` requests in flight, and ``Crawl-delay`` between starts."""

    def __init__(
        self, limit: int, sleep: Callable[[float], None], clock: Callable[[], float]
    ) -> None:
        self._limit = limit
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._next: dict[str, float] = {}

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self._lock:
            semaphore = self._slots.setdefault(host, threading.BoundedSemaphore(self._limit))
        with semaphore:
            yield

    def pace(self, host: str, delay: float) -> None:
        """Wait until ``delay`` seconds after the previous request to ``host`` started."""
        if delay <= 0:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + delay
        if start > now:
            self._sleep(start - now)


class _Robots:
    """``robots.txt`` per origin, fetched once through the reader's client."""

    def __init__(self, client: HttpClient, user_agent: str) -> None:
        self._client = client
        self._agent = user_agent
        self._lock = threading.Lock()
        self._rules: dict[str, RobotFileParser] = {}
        self._origin_locks: dict[str, threading.Lock] = {}

    def allowed(self, url: str) -> bool:
        return self._parser(url).can_fetch(self._agent, url)

    def delay(self, url: str) -> float:
        delay = self._parser(url).crawl_delay(self._agent)
        return min(float(delay), _MAX_CRAWL_DELAY) if delay else 0.0

    def _parser(self, url: str) -> RobotFileParser:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            lock = self._origin_locks.setdefault(origin, threading.Lock())
        with lock:
            parser = self._rules.get(origin)
            if parser is None:
                parser = self._rules[origin] = self._fetch(f"{origin}/robots.txt")
            return parser

    def _fetch(self, robots_url: str) -> RobotFileParser:
        parser = RobotFileParser(robots_url)
        unavailable = frozenset(range(400, 500)) - {429}  # RFC 9309 2.3.1.3: allow all
        try:
            response = self._client.get(robots_url, allow=unavailable)
        except (SourceLimitError, _OutOfScope) as exc:
            logger.warning("ignoring %s: %s", robots_url, exc)
            response = None
        if response is None or response.status_code >= 400:
            parser.parse([])  # no rules: everything is allowed
        else:
            parser.parse(response.content.decode("utf-8", "replace").splitlines())
        return parser


class URLReader(SourceReader):
    """Read web pages, and with ``crawl`` the pages they link to.

    Args:
        urls: the pages to read (http or https).
        crawl: follow links from the pages, breadth first.
        max_depth: link levels followed when crawling (0: only ``urls``).
        allowed_domains: domains a crawl may enter; a domain allows its subdomains.
            ``None``: the hosts of ``urls``. The hosts of ``urls`` are always allowed.
        selector: CSS selector; only the matched elements' content is read.
        allow_private: hosts (with subdomains), IP addresses or CIDR networks that may be
            fetched although they are loopback, link-local or private.
        max_pages: the most pages one listing fetches.
        per_host_concurrency: the most requests in flight to one host.
        user_agent: sent with every request and matched against ``robots.txt``.
        http_options: keyword arguments for :class:`~aof_index_readers.http.HttpClient`
            (``timeout``, ``max_retries``, ``max_bytes``...; tests pass ``sleep``/``clock``,
            also used for ``Crawl-delay``).
        source_name, max_document_bytes, max_source_bytes: see
            :class:`~aof_index_readers.base.SourceReader`; bodies larger than
            ``max_document_bytes`` are not read.

    Example:
        >>> reader = URLReader(["https://docs.example.com/"], crawl=True, max_depth=2)
        >>> refs = list(reader.list_documents())  # doctest: +SKIP
    """

    source_type: ClassVar[str] = "URL"

    def __init__(
        self,
        urls: Sequence[str],
        *,
        crawl: bool = False,
        max_depth: int = 1,
        allowed_domains: Sequence[str] | None = None,
        selector: str | None = None,
        allow_private: Sequence[str] = (),
        max_pages: int = 1000,
        per_host_concurrency: int = 4,
        user_agent: str = DEFAULT_USER_AGENT,
        http_options: Mapping[str, Any] | None = None,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        starts = [normalize_url(url) for url in urls]
        bad = [url for url, start in zip(urls, starts, strict=True) if start is None]
        if bad:
            raise SourceError(
                f"URL source {self.source_name!r}: {bad[0]!r} is not an http(s) URL; fix "
                "spec.sources[].url.urls"
            )
        self.urls = list(dict.fromkeys(start for start in starts if start is not None))
        self.crawl = crawl
        self.max_depth = max(0, max_depth) if crawl else 0
        hosts = [urlsplit(url).hostname or "" for url in self.urls]
        self.allowed_domains = sorted({*map(_domain, allowed_domains or ()), *hosts} - {""})
        self.selector = _checked_selector(selector, self.source_name)
        self.max_pages = max_pages
        self.per_host_concurrency = max(1, per_host_concurrency)
        self.user_agent = user_agent
        options = dict(http_options or {})
        policy = (
            _ScopedPolicy(allow_private, hint=PRIVATE_NETWORK_HINT, domains=self.allowed_domains)
            if crawl
            else AddressPolicy(allow_private, hint=PRIVATE_NETWORK_HINT)
        )
        settings: dict[str, Any] = {
            "headers": {"User-Agent": user_agent},
            "credential_hint": None,
            "max_bytes": self.max_document_bytes,
            # A later listing by the same reader sends conditional GETs: unchanged pages
            # answer 304 and their links come from the kept body.
            "conditional": True,
            **options,
            "addresses": policy,
        }
        self._client = HttpClient("URL", self.source_name, **settings)
        self._robots = _Robots(self._client, user_agent)
        self._hosts = _Hosts(
            self.per_host_concurrency,
            options.get("sleep", time.sleep),
            options.get("clock", time.time),
        )
        self._cache = _BodyCache()

    # --- listing ---------------------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """Yield a ref per readable page, breadth first (see the module docstring)."""
        seen = set(self.urls)
        emitted: dict[str, str] = {}  # final URL -> the URL whose document holds it
        frontier, depth, budget = list(self.urls), 0, self.max_pages
        workers = min(32, self.per_host_concurrency * 4)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="aof-url")
        try:
            while frontier and budget > 0:
                if len(frontier) > budget:
                    logger.warning(
                        "URL source %r: stopping at max_pages=%d; %d more pages not fetched",
                        self.source_name,
                        self.max_pages,
                        len(frontier) - budget,
                    )
                    frontier = frontier[:budget]
                budget -= len(frontier)
                found: set[str] = set()
                for outcome in _ordered(pool, frontier, depth, self._visit, workers * 2):
                    if isinstance(outcome, _Refused):
                        self.skip(outcome.url, outcome.reason)
                        continue
                    if outcome.final in emitted:
                        self.skip(outcome.url, f"the same page as {emitted[outcome.final]}")
                        continue
                    emitted[outcome.final] = outcome.url
                    seen.add(outcome.final)
                    found.update(outcome.links)
                    yield self._ref(outcome)
                found -= seen
                seen.update(found)
                frontier = sorted(self._followable(found))
                depth += 1
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _followable(self, links: Iterable[str]) -> Iterator[str]:
        for link in links:
            if not _in_domains(link, self.allowed_domains):
                continue
            suffix = PurePosixPath(urlsplit(link).path).suffix.lower()
            if suffix in _BINARY_SUFFIXES:
                self.skip(link, f"not fetched: {suffix} files hold no text")
            else:
                yield link

    def _ref(self, page: _Page) -> DocumentRef:
        ref = DocumentRef(
            id=stable_id("url", page.url),
            version=page.version,
            metadata={
                "source": page.final,
                "title": page.title,
                "author": page.author,
                "last_modified": page.last_modified,
            },
            handle=_Handle(page.url, page.depth),
        )
        self._cache.put(ref.id, page)
        return ref

    # --- one visit (runs in the pool) ------------------------------------------------------

    def _visit(self, url: str, depth: int) -> _Page | _Refused:
        """Fetch ``url`` (HEAD first when not crawling) under its host's limits."""
        try:
            with self._hosts.slot(urlsplit(url).netloc):
                if not self._robots.allowed(url):
                    return _Refused(url, f"disallowed by robots.txt for {self.user_agent!r}")
                if not self.crawl:
                    page = self._head(url, depth)
                    if page is not None:
                        return page
                return self._get(url, depth)
        except _SOURCE_FAILURES:
            raise
        except SourceLimitError as exc:
            return _Refused(url, f"not read: {exc}")
        except _OutOfScope as exc:
            return _Refused(url, f"redirected away: {exc}")
        except SourceError as exc:
            if depth == 0:
                raise
            return _Refused(url, str(exc))

    def _head(self, url: str, depth: int) -> _Page | _Refused | None:
        """A page versioned by ``HEAD`` alone, a refusal, or ``None`` to fall back to GET."""
        self._hosts.pace(urlsplit(url).netloc, self._robots.delay(url))
        response = self._client.request("HEAD", url, allow=frozenset(range(400, 600)))
        if not response.is_success:
            return None
        reason = _unreadable(response, url)
        if reason is not None:
            return _Refused(url, reason)
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_document_bytes:
            return _Refused(url, f"not read: {int(length):,} bytes is over max_document_bytes")
        validator = response.headers.get("etag") or response.headers.get("last-modified")
        if not validator:
            return None
        return _page(url, depth, response, version=validator)

    def _get(self, url: str, depth: int) -> _Page | _Refused:
        self._hosts.pace(urlsplit(url).netloc, self._robots.delay(url))
        response = self._client.get(url)
        reason = _unreadable(response, url)
        if reason is not None:
            return _Refused(url, reason)
        page = _page(url, depth, response, body=response.content)
        if _is_html(page):
            page = self._with_html_details(page, follow=self.crawl and depth < self.max_depth)
        return page

    def _with_html_details(self, page: _Page, *, follow: bool) -> _Page:
        """``page`` with its title, author and (when ``follow``) the links it may follow."""
        try:
            soup = _soup(page.body or b"", page.charset)
            title, author = _title_author(soup)
            links = _links(soup, page.final) if follow else ()
        except Exception as exc:  # a page the parser chokes on is read without details
            logger.info("URL source %r: %s: %s", self.source_name, page.url, exc)
            return page
        return replace(page, title=title, author=author, links=links)

    # --- loading ---------------------------------------------------------------------------

    def load_document(self, ref: DocumentRef) -> Document | None:
        """The page's content as a document (from the listing's cache or fetched again)."""
        page = self._cache.pop(ref.id)
        if page is None or page.body is None:
            fetched = self._refetch(ref)
            if isinstance(fetched, _Refused):
                self.skip(fetched.url, fetched.reason)
                return None
            page = fetched
        what = page.final
        try:
            text, metadata = self._content(page)
        except NotText as exc:
            self.skip(what, exc.reason)
            return None
        return self.make_document(ref, text, metadata)

    def _refetch(self, ref: DocumentRef) -> _Page | _Refused:
        """GET a listed page again (a ref without its handle is fetched from its source)."""
        handle = ref.handle
        if not isinstance(handle, _Handle):
            handle = _Handle(str(ref.metadata.get("source") or ""), 0)
        url = handle.url
        try:
            with self._hosts.slot(urlsplit(url).netloc):
                return self._get(url, handle.depth)
        except _SOURCE_FAILURES:
            raise
        except SourceError as exc:  # gone since the listing: skip, do not fail the load
            return _Refused(url, str(exc))

    def _content(self, page: _Page) -> tuple[str, dict[str, Any]]:
        """The page's text and the metadata its content gives."""
        body = page.body or b""
        metadata: dict[str, Any] = {"source": page.final, "last_modified": page.last_modified}
        if _is_html(page):
            text, title, author = self._html(page)
            metadata.update(title=title, author=author)
            return text, metadata
        extracted = extract_text(_file_name(page.final, page.media_type), body)
        metadata["title"] = extracted.title or page.title
        return extracted.text, metadata

    def _html(self, page: _Page) -> tuple[str, str | None, str | None]:
        body = page.body or b""
        try:
            soup = _soup(body, page.charset)
            title, author = _title_author(soup)
            if self.selector:
                text = _selected(soup, self.selector)
            else:
                text = _main_content(body, page.charset, page.final) or ""
        except (NotText, ImportError):
            raise
        except Exception as exc:  # malformed markup: fall back to the shared extraction
            logger.info("URL source %r: %s: %s", self.source_name, page.url, exc)
            title, author, text = None, None, ""
        if not text.strip() and not self.selector:
            extracted = extract_text("page.html", body)
            text, title = extracted.text, title or extracted.title
        return text, title, author


# --- helpers ----------------------------------------------------------------------------------


def _ordered(
    pool: ThreadPoolExecutor,
    urls: Sequence[str],
    depth: int,
    visit: Callable[[str, int], _Page | _Refused],
    window: int,
) -> Iterator[_Page | _Refused]:
    """``visit`` of each URL, run in ``pool``, yielded in ``urls``' order (bounded ahead)."""
    pending: deque[Future[_Page | _Refused]] = deque()
    try:
        for url in urls:
            pending.append(pool.submit(visit, url, depth))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def _media_type(response: httpx.Response) -> tuple[str, str | None]:
    raw = response.headers.get("content-type", "")
    media_type, _, params = raw.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip("\"' ")
    return media_type.strip().lower(), charset


def _file_name(url: str, media_type: str) -> str:
    """A name the shared extraction can judge: the URL's file name, else the type's suffix."""
    name = PurePosixPath(urlsplit(url).path).name
    if media_type in {"text/plain", "text/markdown", "text/x-markdown"}:
        suffix = ".md" if "markdown" in media_type else ".txt"
        return f"{PurePosixPath(name or 'page').stem or 'page'}{suffix}"
    guessed = mimetypes.guess_extension(media_type) if media_type else None
    if guessed:
        return f"{PurePosixPath(name or 'page').stem or 'page'}{guessed}"
    return name or "page"


def _unreadable(response: httpx.Response, url: str) -> str | None:
    """Why the answer's content type cannot be read, or ``None``."""
    media_type, _ = _media_type(response)
    if not media_type or media_type in _HTML_TYPES:
        return None
    reason = unsupported_reason(_file_name(str(response.url or url), media_type))
    return f"content type {media_type} is not read ({reason})" if reason else None


def _page(
    url: str, depth: int, response: httpx.Response, *, version: str = "", body: bytes = b""
) -> _Page:
    media_type, charset = _media_type(response)
    headers = response.headers
    return _Page(
        url=url,
        final=normalize_url(str(response.url)) or url,
        depth=depth,
        version=version or headers.get("etag") or headers.get("last-modified") or _sha(body),
        media_type=media_type,
        charset=charset,
        last_modified=_http_date(headers.get("last-modified")),
        body=body if response.request.method != "HEAD" else None,
    )


def _sha(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _http_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return iso_time(parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return None


def _is_html(page: _Page) -> bool:
    """HTML by its content type, or by its first bytes when the server named none."""
    if page.media_type:
        return page.media_type in _HTML_TYPES
    head = (page.body or b"")[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<body" in head


def _soup(body: bytes, charset: str | None) -> BeautifulSoup:
    try:
        from bs4 import BeautifulSoup
    except ImportError as exc:  # pragma: no cover - extra missing
        raise ImportError(
            "the URL reader needs beautifulsoup4: pip install 'aof-index[web]'"
        ) from exc
    return BeautifulSoup(body, "html.parser", from_encoding=charset)


def _meta(soup: BeautifulSoup, key: str, value: str) -> str | None:
    tag = soup.find("meta", attrs={key: value})
    content = str(tag.get("content") or "").strip() if tag is not None else ""
    return content or None


def _title_author(soup: BeautifulSoup) -> tuple[str | None, str | None]:
    title = _meta(soup, "property", "og:title")
    if title is None and soup.title is not None:
        title = soup.title.get_text(" ", strip=True) or None
    author = _meta(soup, "name", "author") or _meta(soup, "property", "article:author")
    return title, author


def _links(soup: BeautifulSoup, page_url: str) -> tuple[str, ...]:
    """Normalised http(s) links of the page, ``rel=nofollow`` and meta nofollow honoured."""
    robots = (_meta(soup, "name", "robots") or "").lower()
    if "nofollow" in robots or "none" in robots:
        return ()
    base_tag = soup.find("base", href=True)
    base = urljoin(page_url, str(base_tag["href"])) if base_tag is not None else page_url
    links: set[str] = set()
    for anchor in soup.find_all("a", href=True):
        rel = anchor.get("rel") or ()
        if "nofollow" in {str(value).lower() for value in rel}:
            continue
        link = normalize_url(str(anchor["href"]), base)
        if link is not None:
            links.add(link)
    return tuple(sorted(links))


def _checked_selector(selector: str | None, source_name: str) -> str | None:
    """``selector`` if soupsieve compiles it; a :class:`SourceError` naming it otherwise."""
    if not selector:
        return None
    try:
        import soupsieve
    except ImportError as exc:  # pragma: no cover - extra missing
        raise ImportError(
            "the URL reader needs beautifulsoup4: pip install 'aof-index[web]'"
        ) from exc
    try:
        soupsieve.compile(selector)
    except Exception as exc:  # SelectorSyntaxError, or a pseudo-class soupsieve lacks
        raise SourceError(
            f"URL source {source_name!r}: the CSS selector {selector!r} is invalid ({exc}); "
            "fix spec.sources[].url.selector"
        ) from exc
    return selector


def _selected(soup: BeautifulSoup, selector: str) -> str:
    from aof_index_readers.markup import HtmlToMarkdown, join_blocks

    elements = soup.select(selector)
    if not elements:
        raise NotText(f"the selector {selector!r} matched nothing")
    converter = HtmlToMarkdown()
    return join_blocks(converter.convert(element) for element in elements)


def _main_content(body: bytes, charset: str | None, url: str) -> str | None:
    try:
        import trafilatura
    except ImportError as exc:  # pragma: no cover - extra missing
        raise ImportError("the URL reader needs trafilatura: pip install 'aof-index[web]'") from exc
    html: str | bytes = body
    if charset:
        try:
            html = body.decode(charset, "replace")
        except LookupError:  # an unknown charset name: let trafilatura guess
            html = body
    text = trafilatura.extract(
        html, url=url, include_tables=True, include_links=False, output_format="markdown"
    )
    return str(text) if text else None
