"""URLReader against a small generated web site served on 127.0.0.1.

Real: the reader, its HttpClient and AddressPolicy, robots.txt parsing, trafilatura,
BeautifulSoup, pypdf, the thread pool, sockets and a ``ThreadingHTTPServer``
(``site_server.LocalServer``). Standing in: the site itself, a local stand-in for a public
web site at its HTTP boundary, speaking plain HTTP/1.1 (RFC 9110 redirects and validators,
``ETag``/``Last-Modified``) and a robots.txt as RFC 9309 specifies it. ``localhost`` and
``127.0.0.1`` name the same server and act as two hosts. Waits (``Crawl-delay``, backoff)
go to an injected clock that advances when slept on, so no test sleeps or times anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import pytest
from site_server import LocalServer, Reply, serve

from aof_index_readers.base import DocumentRef, stable_id
from aof_index_readers.errors import (
    BlockedAddressError,
    SourceError,
    SourceNotFoundError,
    SourceUnavailableError,
)
from aof_index_readers.url import URLReader, normalize_url

HTML = "text/html; charset=utf-8"
ARTICLE = (
    "Kubernetes operators reconcile the desired state of custom resources. The AOF "
    "operator watches KnowledgeBase objects and keeps their indexes in sync with the "
    "sources they name, re-reading only what changed since the previous sync."
)


class FakeClock:
    """``time.time`` and ``time.sleep`` stand-ins: sleeping advances the time."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def page(title: str, body: str, links: Sequence[str] = ()) -> str:
    anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    return (
        f"<!doctype html><html><head><title>{title}</title></head><body>"
        f"<nav><ul><li>Navigation menu</li></ul></nav><main><h1>{title}</h1>"
        f"<p>{body}</p><ul>{anchors}</ul></main><footer>Footer text</footer></body></html>"
    )


def tiny_pdf(text: str, title: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, with a document title."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode(),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def build_site(server: LocalServer) -> None:
    """Index → pages over three depths, plus every kind of page a crawl meets."""
    other = server.url("/elsewhere.html", "localhost")
    server.route("/robots.txt", Reply(200, "User-agent: *\nDisallow: /private/\n"))
    index_links = [
        "a.html",
        "/a.html#top",
        "b.html",
        "/private/secret.html",
        "/hop/1",
        "/away",
        other,
        "/notes.txt",
        "/guide.pdf",
        "/blob",
        "/photo.png",
        "/broken.html",
        "/missing.html",
        "/huge.html",
        "/meta-redirect",
        "mailto:docs@example.com",
        "javascript:void(0)",
    ]
    nofollow = '<a rel="nofollow" href="/ads.html">ads</a>'
    server.route("/", Reply(200, page("Home", ARTICLE, index_links) + nofollow, content_type=HTML))
    server.route(
        "/a.html",
        Reply(
            200,
            page("Alpha", ARTICLE, ["/deep/c.html", "/"]),
            headers={"ETag": '"a-1"'},
            content_type=HTML,
        ),
    )
    b_head = '<meta property="og:title" content="Bee page"><meta name="author" content="Ada">'
    b_body = (
        "<!doctype html><html><head><title>B</title>" + b_head + "</head><body>"
        "<nav>Navigation menu</nav><div class='sidebar'>Sidebar ads</div>"
        f"<main><article><h2>Operators</h2><p>{ARTICLE}</p></article></main>"
        "<a href='/a.html'>alpha</a></body></html>"
    )
    server.route(
        "/b.html",
        Reply(
            200,
            b_body,
            headers={"Last-Modified": "Tue, 02 Jan 2024 03:04:05 GMT"},
            content_type=HTML,
        ),
    )
    server.route(
        "/deep/c.html",
        Reply(200, page("Gamma", ARTICLE, ["/deep/deeper/d.html"]), content_type=HTML),
    )
    server.route("/deep/deeper/d.html", Reply(200, page("Delta", ARTICLE), content_type=HTML))
    server.route(
        "/private/secret.html", Reply(200, page("Secret", "top secret"), content_type=HTML)
    )
    server.route("/hop/1", Reply(302, headers={"Location": "/hop/2"}))
    server.route("/hop/2", Reply(301, headers={"Location": server.url("/hop/3")}))
    server.route("/hop/3", Reply(307, headers={"Location": "/landed.html"}))
    server.route("/landed.html", Reply(200, page("Landed", ARTICLE), content_type=HTML))
    server.route(
        "/away", Reply(302, headers={"Location": server.url("/outside.html", "localhost")})
    )
    server.route("/outside.html", Reply(200, page("Outside", ARTICLE), content_type=HTML))
    server.route("/elsewhere.html", Reply(200, page("Elsewhere", ARTICLE), content_type=HTML))
    server.route("/notes.txt", Reply(200, "Release notes\n\nVersion 2 adds crawling."))
    server.route(
        "/guide.pdf",
        Reply(
            200,
            tiny_pdf("Operator guide for PDF readers", "The Guide"),
            content_type="application/pdf",
        ),
    )
    server.route(
        "/blob", Reply(200, bytes(range(256)) * 4, content_type="application/octet-stream")
    )
    server.route("/photo.png", Reply(200, b"\x89PNG\r\n", content_type="image/png"))
    server.route(
        "/broken.html",
        Reply(
            200,
            "<html><body><p>Broken <b>markup <div>still readable</p></span></td><<>",
            content_type=HTML,
        ),
    )
    server.route("/huge.html", Reply(200, page("Huge", "x" * 60_000), content_type=HTML))
    server.route(
        "/meta-redirect", Reply(302, headers={"Location": "http://169.254.169.254/latest/"})
    )
    server.route("/ads.html", Reply(200, page("Ads", "buy"), content_type=HTML))


@pytest.fixture
def site() -> Iterator[LocalServer]:
    for server in serve():
        build_site(server)
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def reader(site: LocalServer, clock: FakeClock, *urls: str, **options: object) -> URLReader:
    settings: dict[str, object] = {
        "crawl": True,
        "allow_private": ["127.0.0.1"],
        "max_document_bytes": 50_000,
        "source_name": "site",
        "http_options": {"sleep": clock.sleep, "clock": clock.time},
        **options,
    }
    return URLReader(list(urls) or [site.url("/")], **settings)  # type: ignore[arg-type]


def paths(site: LocalServer, refs_or_urls: list[str]) -> list[str]:
    prefix = site.url("")
    return [url.removeprefix(prefix) for url in refs_or_urls]


def listed(site: LocalServer, found: URLReader) -> tuple[list[DocumentRef], list[str]]:
    refs = list(found.list_documents())
    return refs, paths(site, [str(ref.handle.url) for ref in refs])


# --- what a crawl reads ---------------------------------------------------------------------

DEPTH_1 = ["/a.html", "/b.html", "/broken.html", "/guide.pdf", "/hop/1", "/notes.txt"]


def test_crawl_depth_1_reads_exactly_the_readable_pages(
    site: LocalServer, clock: FakeClock
) -> None:
    crawler = reader(site, clock, max_depth=1)
    _, urls = listed(site, crawler)
    assert urls == ["/", *DEPTH_1]
    skipped = {paths(site, [entry.what])[0]: entry.reason for entry in crawler.skipped}
    assert set(skipped) == {
        "/private/secret.html",
        "/away",
        "/blob",
        "/photo.png",
        "/missing.html",
        "/huge.html",
        "/meta-redirect",
    }
    assert "robots.txt" in skipped["/private/secret.html"]
    assert "outside allowedDomains" in skipped["/away"]
    assert "application/octet-stream" in skipped["/blob"]
    assert "not fetched" in skipped["/photo.png"]
    assert "404" in skipped["/missing.html"]
    assert "more than 50,000 bytes" in skipped["/huge.html"]
    assert "169.254.169.254" in skipped["/meta-redirect"]
    never_requested = {"/private/secret.html", "/photo.png", "/ads.html", "/elsewhere.html"}
    assert never_requested.isdisjoint(hit.route for hit in site.requests)
    assert site.hits("/outside.html") == []  # the redirect hop was refused, not fetched


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (0, ["/"]),
        (1, ["/", *DEPTH_1]),
        (2, ["/", *DEPTH_1, "/deep/c.html"]),
        (3, ["/", *DEPTH_1, "/deep/c.html", "/deep/deeper/d.html"]),
    ],
)
def test_depth_limits(site: LocalServer, clock: FakeClock, depth: int, expected: list[str]) -> None:
    _, urls = listed(site, reader(site, clock, max_depth=depth))
    assert urls == expected


def test_ids_are_stable_and_versions_follow_validators(site: LocalServer, clock: FakeClock) -> None:
    first, urls = listed(site, reader(site, clock))
    second, _ = listed(site, reader(site, clock))
    assert [(ref.id, ref.version) for ref in first] == [(ref.id, ref.version) for ref in second]
    by_path = dict(zip(urls, first, strict=True))
    assert by_path["/a.html"].id == stable_id("url", site.url("/a.html"))
    assert by_path["/a.html"].version == '"a-1"'
    assert by_path["/b.html"].version == "Tue, 02 Jan 2024 03:04:05 GMT"
    assert by_path["/"].version.startswith("sha256:")
    hop = by_path["/hop/1"]
    assert hop.id == stable_id("url", site.url("/hop/1"))
    assert hop.metadata["source"] == site.url("/landed.html")
    assert by_path["/b.html"].metadata["title"] == "Bee page"
    assert by_path["/b.html"].metadata["last_modified"] == "2024-01-02T03:04:05+00:00"


def test_documents_content_and_metadata(site: LocalServer, clock: FakeClock) -> None:
    crawler = reader(site, clock)
    docs = {paths(site, [d.metadata["source"]])[0]: d for d in crawler.lazy_load_data()}
    assert set(docs) == {
        "/",
        "/a.html",
        "/b.html",
        "/broken.html",
        "/guide.pdf",
        "/landed.html",
        "/notes.txt",
    }
    b = docs["/b.html"]
    assert "Kubernetes operators reconcile" in b.text
    assert b.metadata["title"] == "Bee page" and b.metadata["author"] == "Ada"
    assert b.metadata["source_type"] == "URL" and b.metadata["source_name"] == "site"
    assert b.metadata["version"] == "Tue, 02 Jan 2024 03:04:05 GMT"
    assert b.id_ == stable_id("url", site.url("/b.html"))
    assert "still readable" in docs["/broken.html"].text
    assert "Version 2 adds crawling." in docs["/notes.txt"].text
    assert "Operator guide for PDF readers" in docs["/guide.pdf"].text
    assert docs["/guide.pdf"].metadata["title"] == "The Guide"
    assert docs["/a.html"].metadata["title"] == "Alpha"


def test_list_then_load_fetches_each_page_once(site: LocalServer, clock: FakeClock) -> None:
    crawler = reader(site, clock)
    refs = list(crawler.list_documents())
    documents = list(crawler.load_documents(refs))
    assert len(documents) == len(refs) == 7
    for path in ["/", *DEPTH_1, "/robots.txt"]:
        assert len(site.hits(path)) == 1, path


def test_load_with_a_fresh_reader_fetches_again(site: LocalServer, clock: FakeClock) -> None:
    refs = list(reader(site, clock, max_depth=0).list_documents())
    again = list(reader(site, clock, max_depth=0).load_documents(refs))
    assert [doc.id_ for doc in again] == [refs[0].id]
    assert [hit.method for hit in site.hits("/")] == ["GET", "GET"]


def test_selector_reads_only_the_matched_elements(site: LocalServer, clock: FakeClock) -> None:
    single = reader(site, clock, site.url("/b.html"), crawl=False, selector="main article")
    (document,) = single.load_data()
    assert "## Operators" in document.text and "Kubernetes operators" in document.text
    assert "Sidebar ads" not in document.text and "Navigation menu" not in document.text


def test_selector_that_matches_nothing_skips(site: LocalServer, clock: FakeClock) -> None:
    single = reader(site, clock, site.url("/a.html"), crawl=False, selector="#nope")
    assert single.load_data() == []
    assert "matched nothing" in single.skipped[0].reason


def test_invalid_selector_is_refused_up_front(site: LocalServer, clock: FakeClock) -> None:
    with pytest.raises(SourceError, match="selector 'main >>> p' is invalid"):
        reader(site, clock, selector="main >>> p")


def test_allowed_domains_admit_another_host(site: LocalServer, clock: FakeClock) -> None:
    crawler = reader(site, clock, allowed_domains=["localhost"])
    refs, urls = listed(site, crawler)
    sources = [ref.metadata["source"] for ref in refs]
    assert site.url("/elsewhere.html", "localhost") in sources
    assert site.url("/outside.html", "localhost") in sources  # /away's redirect now allowed
    assert "/away" in urls


def test_max_pages_stops_the_crawl(
    site: LocalServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="aof_index_readers.url"):
        _, urls = listed(site, reader(site, clock, max_pages=3))
    assert urls == ["/", "/a.html"]  # the third page fetched (/away) was skipped
    assert site.hits("/b.html") == []
    assert "stopping at max_pages=3" in caplog.text


# --- without crawling ---------------------------------------------------------------------


def test_listing_without_crawl_uses_head_validators(site: LocalServer, clock: FakeClock) -> None:
    plain = reader(
        site,
        clock,
        site.url("/a.html"),
        site.url("/b.html"),
        site.url("/notes.txt#top"),
        site.url("/a.html"),
        crawl=False,
    )
    refs = list(plain.list_documents())
    assert [ref.version for ref in refs[:2]] == ['"a-1"', "Tue, 02 Jan 2024 03:04:05 GMT"]
    assert refs[2].version.startswith("sha256:")
    assert [hit.method for hit in site.hits("/a.html")] == ["HEAD"]
    assert [hit.method for hit in site.hits("/notes.txt")] == ["HEAD", "GET"]
    assert site.hits("/deep/c.html") == []
    documents = list(plain.load_documents(refs))
    assert len(documents) == 3
    assert [hit.method for hit in site.hits("/a.html")] == ["HEAD", "GET"]
    assert [hit.method for hit in site.hits("/notes.txt")] == ["HEAD", "GET"]


def test_a_binary_start_url_is_skipped_at_head(site: LocalServer, clock: FakeClock) -> None:
    plain = reader(site, clock, site.url("/blob"), crawl=False)
    assert list(plain.list_documents()) == []
    assert [hit.method for hit in site.hits("/blob")] == ["HEAD"]
    assert "application/octet-stream" in plain.skipped[0].reason


def test_missing_start_url_is_an_error(site: LocalServer, clock: FakeClock) -> None:
    with pytest.raises(SourceNotFoundError, match="404"):
        list(reader(site, clock, site.url("/missing.html"), crawl=False).list_documents())


def test_non_http_url_is_refused(site: LocalServer, clock: FakeClock) -> None:
    with pytest.raises(SourceError, match="not an http"):
        reader(site, clock, "file:///etc/passwd")


# --- robots.txt ---------------------------------------------------------------------------


def test_robots_crawl_delay_spaces_requests(site: LocalServer, clock: FakeClock) -> None:
    site.route("/robots.txt", Reply(200, "User-agent: *\nCrawl-delay: 3\n"))
    site.route(
        "/", Reply(200, page("Home", ARTICLE, ["/a.html", "/deep/c.html"]), content_type=HTML)
    )
    crawler = reader(site, clock, per_host_concurrency=1)
    _, urls = listed(site, crawler)
    assert urls == ["/", "/a.html", "/deep/c.html"]
    assert clock.sleeps == [3.0, 3.0]


def test_robots_rules_for_this_agent(site: LocalServer, clock: FakeClock) -> None:
    site.route("/robots.txt", Reply(200, "User-agent: aof-index-reader\nDisallow: /\n"))
    crawler = reader(site, clock)
    assert list(crawler.list_documents()) == []
    assert site.hits("/") == []


def test_robots_server_error_stops_the_crawl(site: LocalServer, clock: FakeClock) -> None:
    site.route("/robots.txt", Reply(503, "down"))
    with pytest.raises(SourceUnavailableError, match=r"robots\.txt"):
        list(reader(site, clock).list_documents())
    assert site.hits("/") == []


def test_missing_robots_allows_everything(site: LocalServer, clock: FakeClock) -> None:
    site.route("/robots.txt", Reply(404, "none"))
    _, urls = listed(site, reader(site, clock))
    assert "/private/secret.html" in urls
    assert len(site.hits("/robots.txt")) == 1


# --- concurrency and address policy ---------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_per_host_concurrency_is_respected(site: LocalServer, clock: FakeClock, limit: int) -> None:
    pages = [f"/p{number}.html" for number in range(limit * 4)]
    site.route("/", Reply(200, page("Home", ARTICLE, pages), content_type=HTML))
    for path in pages:
        site.route(path, Reply(200, page(path, ARTICLE), content_type=HTML))
    site.gate = threading.Barrier(limit, timeout=5)
    site.gated = lambda path: path.startswith("/p")
    site.hold = 0.1
    _, urls = listed(site, reader(site, clock, per_host_concurrency=limit))
    assert urls == ["/", *sorted(pages)]
    assert site.max_in_flight == limit


def test_loopback_is_refused_without_allow_private(site: LocalServer) -> None:
    with pytest.raises(BlockedAddressError) as caught:
        list(URLReader([site.url("/")], crawl=True).list_documents())
    assert "aof.agenticops.org/allow-private-networks" in str(caught.value)
    assert "allowedDomains" in str(caught.value)
    assert site.requests == []


def test_every_redirect_hop_is_checked(site: LocalServer, clock: FakeClock) -> None:
    plain = reader(site, clock, site.url("/meta-redirect"), crawl=False)
    with pytest.raises(BlockedAddressError, match=r"169\.254\.169\.254, a link-local address"):
        list(plain.list_documents())
    crawler = reader(site, clock, allowed_domains=["169.254.169.254"])
    list(crawler.list_documents())
    reasons = {entry.what: entry.reason for entry in crawler.skipped}
    assert "a link-local address" in reasons[site.url("/meta-redirect")]


def test_normalize_url() -> None:
    assert normalize_url("HTTP://Example.COM:80/a/../b?x=1#frag") == "http://example.com/b?x=1"
    assert normalize_url("../c", "https://h.io:8443/a/b/") == "https://h.io:8443/a/c"
    assert normalize_url("https://user:pw@h.io") == "https://h.io/"
    assert normalize_url("http://h.io/a/b/..") == "http://h.io/a/"
    assert normalize_url("http://h.io/./a/../../b/./") == "http://h.io/b/"
    assert normalize_url("mailto:a@b.c") is None
    assert normalize_url("http://[::1]:8080/x") == "http://[::1]:8080/x"
