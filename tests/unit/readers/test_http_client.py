"""HttpClient against a real HTTP server on 127.0.0.1 (``site_server.LocalServer``).

Real: the client, httpx, sockets, the ``ThreadingHTTPServer``, redirects, chunked and gzip
bodies. Standing in: the server is a local stand-in for a hosted API at its HTTP boundary,
answering as RFC 9110 (status codes, ``Retry-After``, redirects), RFC 9111 (``ETag`` /
``If-None-Match`` / ``304``), RFC 8288 (``Link`` rel="next") and GitHub's REST docs
(``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` on a 403,
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api) describe.
The injected ``sleep`` records waits instead of sleeping and ``clock`` is fixed, so waits
are asserted by value, not timed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.utils import formatdate

import httpx
import pytest
from site_server import LocalServer, Recorded, Reply, closed_port, serve

from aof_index_readers import http
from aof_index_readers.errors import (
    BlockedAddressError,
    SourceAuthError,
    SourceError,
    SourceLimitError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceRateLimitError,
    SourceUnavailableError,
)
from aof_index_readers.guard import AddressPolicy
from aof_index_readers.http import HttpClient

NOW = 1_700_000_000.0


@pytest.fixture
def server() -> Iterator[LocalServer]:
    yield from serve()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(server: LocalServer, sleeps: list[float], **options: object) -> HttpClient:
    settings: dict[str, object] = {
        "base_url": server.url(""),
        "credential_hint": "tokenSecretRef",
        "sleep": sleeps.append,
        "clock": lambda: NOW,
        **options,
    }
    return HttpClient("GitHub", "docs", **settings)  # type: ignore[arg-type]


# --- retries ------------------------------------------------------------------------------


def test_retries_a_500_then_succeeds(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/flaky", [Reply(500), Reply(502), Reply(200, '{"ok": true}')])
    client = make_client(server, sleeps, max_retries=4)
    assert client.get_json("/flaky") == {"ok": True}
    assert len(server.hits("/flaky")) == 3
    assert client.requests == 3
    assert len(sleeps) == 2 and all(wait > 0 for wait in sleeps)
    assert sleeps[1] > sleeps[0]  # exponential backoff


def test_gives_up_after_max_retries(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/down", Reply(503, '{"message": "maintenance window"}'))
    client = make_client(server, sleeps, max_retries=2)
    with pytest.raises(SourceUnavailableError) as caught:
        client.get("/down")
    assert len(server.hits("/down")) == 3
    message = str(caught.value)
    assert "GitHub source 'docs'" in message
    assert "503" in message and "GET" in message and "/down" in message
    assert "maintenance window" in message


def test_connection_refused_is_unavailable(sleeps: list[float]) -> None:
    port = closed_port()
    client = HttpClient("GitHub", "docs", max_retries=2, sleep=sleeps.append)
    with pytest.raises(SourceUnavailableError) as caught:
        client.get(f"http://127.0.0.1:{port}/repos")
    assert "ConnectError" in str(caught.value)
    assert "after 3 attempts" in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert len(sleeps) == 2


# --- typed errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "advice"),
    [
        (401, SourceAuthError, "tokenSecretRef holds a valid, unexpired token"),
        (403, SourcePermissionError, "grant tokenSecretRef read access"),
        (404, SourceNotFoundError, "check that it exists"),
        (422, SourceError, "check the source's settings"),
    ],
)
def test_error_statuses_raise_typed_errors_without_secrets(
    server: LocalServer, sleeps: list[float], status: int, error: type[SourceError], advice: str
) -> None:
    server.route("/repos/o/r", Reply(status, '{"message": "Bad credentials"}'))
    client = make_client(server, sleeps, headers={"Authorization": "Bearer s3cr3t-token"})
    with pytest.raises(error) as caught:
        client.get("/repos/o/r", params={"access_token": "q-secret"})
    message = str(caught.value)
    assert type(caught.value) is error
    assert f"{status} " in message and "GET http://127.0.0.1" in message
    assert "/repos/o/r" in message and "Bad credentials" in message and advice in message
    assert "s3cr3t" not in message and "q-secret" not in message and "?" not in message
    assert server.hits("/repos/o/r")[0].path.endswith("?access_token=q-secret")
    assert sleeps == []  # client errors are not retried


def test_anonymous_client_says_the_page_is_not_public(
    server: LocalServer, sleeps: list[float]
) -> None:
    server.route("/login", Reply(401, "Login required"))
    client = make_client(server, sleeps, credential_hint=None)
    with pytest.raises(SourceAuthError, match="this source sends none"):
        client.get("/login")


def test_allowed_statuses_are_returned(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/missing", Reply(404, "nope"))
    client = make_client(server, sleeps)
    assert client.get("/missing", allow=frozenset({404})).status_code == 404


def test_malformed_json_names_the_request(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/items", Reply(200, "{not json", content_type="application/json"))
    client = make_client(server, sleeps)
    with pytest.raises(SourceError, match=r"GET http://127\.0\.0\.1:\d+/items returned a body"):
        client.get_json("/items")


# --- rate limits --------------------------------------------------------------------------


def test_429_retry_after_seconds_waits(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/search", [Reply(429, headers={"Retry-After": "7"}), Reply(200, "[]")])
    client = make_client(server, sleeps)
    assert client.get_json("/search") == []
    assert sleeps == [7.0]


def test_429_retry_after_http_date_waits(server: LocalServer, sleeps: list[float]) -> None:
    when = formatdate(NOW + 30, usegmt=True)
    server.route("/search", [Reply(429, headers={"Retry-After": when}), Reply(200, "[]")])
    client = make_client(server, sleeps)
    client.get("/search")
    assert sleeps == [pytest.approx(30.0)]


def test_403_with_exhausted_rate_limit_waits_for_reset(
    server: LocalServer, sleeps: list[float]
) -> None:
    limited = Reply(
        403,
        '{"message": "API rate limit exceeded"}',
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW + 45))},
    )
    server.route("/repos", [limited, Reply(200, "{}")])
    client = make_client(server, sleeps)
    assert client.get_json("/repos") == {}
    assert sleeps == [45.0]


def test_wait_past_max_wait_raises_with_reset_time(
    server: LocalServer, sleeps: list[float]
) -> None:
    reset = int(NOW + 3600)
    server.route(
        "/repos",
        Reply(403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}),
    )
    client = make_client(server, sleeps, max_wait=120)
    with pytest.raises(SourceRateLimitError) as caught:
        client.get("/repos")
    assert caught.value.reset_at == reset
    assert "3600 s" in str(caught.value)
    assert sleeps == [] and len(server.hits("/repos")) == 1


def test_rate_limit_still_exhausted_after_retries(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/repos", Reply(429, headers={"Retry-After": "1"}))
    client = make_client(server, sleeps, max_retries=1)
    with pytest.raises(SourceRateLimitError) as caught:
        client.get("/repos")
    assert caught.value.reset_at == NOW + 1
    assert sleeps == [1.0] and len(server.hits("/repos")) == 2


# --- conditional requests -----------------------------------------------------------------


def test_conditional_get_reuses_the_body_on_304(server: LocalServer, sleeps: list[float]) -> None:
    state = {"etag": '"v1"', "body": '{"v": 1}'}

    def answer(request: Recorded) -> Reply:
        if request.headers.get("if-none-match") == state["etag"]:
            return Reply(304, headers={"ETag": state["etag"]})
        return Reply(200, state["body"], headers={"ETag": state["etag"]})

    server.route("/tree", answer)
    client = make_client(server, sleeps, conditional=True)
    assert client.get_json("/tree") == {"v": 1}
    assert client.get_json("/tree") == {"v": 1}
    assert client.not_modified == 1
    assert [hit.headers.get("if-none-match") for hit in server.hits("/tree")] == [None, '"v1"']
    state.update(etag='"v2"', body='{"v": 2}')
    assert client.get_json("/tree") == {"v": 2}
    assert client.not_modified == 1


def test_conditional_cache_is_bounded(
    server: LocalServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "_CONDITIONAL_CACHE_BYTES", 100)
    for name in ("one", "two"):
        server.route(f"/{name}", Reply(200, name * 20, headers={"ETag": f'"{name}"'}))
    client = make_client(server, sleeps, conditional=True)
    client.get("/one")
    client.get("/two")  # 60 + 60 bytes > 100: the least recently used body goes
    client.get("/one")
    assert [hit.headers.get("if-none-match") for hit in server.hits("/one")] == [None, None]


def test_unconditional_client_sends_no_validators(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/tree", Reply(200, "{}", headers={"ETag": '"v1"'}))
    client = make_client(server, sleeps)
    client.get("/tree")
    client.get("/tree")
    assert all("if-none-match" not in hit.headers for hit in server.hits("/tree"))


# --- size limits and encodings ------------------------------------------------------------


def test_size_limit_by_content_length(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/big", Reply(200, "x" * 5000))
    client = make_client(server, sleeps, max_bytes=1000)
    with pytest.raises(SourceLimitError, match="more than 1,000 bytes"):
        client.get("/big")


def test_size_limit_by_streamed_chunked_body(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/big", Reply(200, "x" * 5000, chunked=True))
    server.route("/small", Reply(200, "y" * 900, chunked=True))
    client = make_client(server, sleeps, max_bytes=1000)
    assert client.get("/small").text == "y" * 900
    with pytest.raises(SourceLimitError):
        client.get("/big")


def test_gzip_bodies_are_decoded_and_limited_by_decoded_size(
    server: LocalServer, sleeps: list[float]
) -> None:
    server.route("/data", Reply(200, json.dumps({"items": [1, 2, 3]}), gzip=True))
    server.route("/bomb", Reply(200, "0" * 50_000, gzip=True))
    client = make_client(server, sleeps, max_bytes=10_000)
    response = client.get("/data")
    assert client.json(response) == {"items": [1, 2, 3]}
    assert "content-encoding" not in response.headers
    with pytest.raises(SourceLimitError):
        client.get("/bomb")  # ~100 compressed bytes, 50 kB decoded


def test_head_is_not_limited_by_the_announced_length(
    server: LocalServer, sleeps: list[float]
) -> None:
    server.route("/big", Reply(200, "x" * 5000, headers={"ETag": '"e"'}))
    client = make_client(server, sleeps, max_bytes=1000)
    response = client.request("HEAD", "/big")
    assert response.headers["etag"] == '"e"' and response.content == b""


# --- redirects ----------------------------------------------------------------------------


def chain(server: LocalServer, hops: int) -> None:
    for hop in range(hops):
        target = f"/r{hop + 1}" if hop + 1 < hops else "/final"
        server.route(f"/r{hop}", Reply(302, headers={"Location": target}))
    server.route("/final", Reply(200, "arrived"))


def test_redirect_chain_within_the_limit(server: LocalServer, sleeps: list[float]) -> None:
    chain(server, 3)
    client = make_client(server, sleeps, max_redirects=3)
    response = client.get("/r0")
    assert response.text == "arrived"
    assert response.url.path == "/final"
    assert client.requests == 4


def test_redirect_chain_over_the_limit(server: LocalServer, sleeps: list[float]) -> None:
    chain(server, 3)
    client = make_client(server, sleeps, max_redirects=2)
    with pytest.raises(SourceError, match="more than 2 redirects"):
        client.get("/r0")
    assert server.hits("/final") == []


def test_303_turns_post_into_get(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/search", Reply(303, headers={"Location": "/results"}))
    server.route("/results", Reply(200, "[1]"))
    client = make_client(server, sleeps)
    response = client.request("POST", "/search", json_body={"q": "kubernetes"})
    assert response.json() == [1]
    assert server.hits("/search")[0].body == b'{"q":"kubernetes"}'
    landed = server.hits("/results")[0]
    assert landed.method == "GET" and landed.body == b""
    assert "content-type" not in landed.headers


def test_307_keeps_method_and_body(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/search", Reply(307, headers={"Location": "/v2/search"}))
    server.route("/v2/search", Reply(200, "[]"))
    client = make_client(server, sleeps)
    client.request("POST", "/search", json_body={"q": "x"})
    landed = server.hits("/v2/search")[0]
    assert landed.method == "POST" and landed.body == b'{"q":"x"}'


def test_credentials_dropped_on_a_cross_host_redirect(
    server: LocalServer, sleeps: list[float]
) -> None:
    server.route("/go", Reply(302, headers={"Location": server.url("/landing", "localhost")}))
    server.route("/landing", Reply(200, "ok"))
    client = make_client(
        server,
        sleeps,
        headers={"Authorization": "Bearer s3cr3t", "PRIVATE-TOKEN": "glpat-x", "User-Agent": "t"},
    )
    client.get("/go")
    first, landed = server.hits("/go")[0], server.hits("/landing")[0]
    assert first.headers["authorization"] == "Bearer s3cr3t"
    assert landed.host.startswith("localhost:")
    assert "authorization" not in landed.headers and "private-token" not in landed.headers
    assert landed.headers["user-agent"] == "t"


def test_basic_auth_dropped_on_a_cross_host_redirect(
    server: LocalServer, sleeps: list[float]
) -> None:
    server.route("/go", Reply(302, headers={"Location": server.url("/landing", "localhost")}))
    server.route("/landing", Reply(200, "ok"))
    client = make_client(server, sleeps, auth=httpx.BasicAuth("me", "pw"))
    client.get("/go")
    assert server.hits("/go")[0].headers["authorization"].startswith("Basic ")
    assert "authorization" not in server.hits("/landing")[0].headers


def test_credentials_kept_on_a_same_host_redirect(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/go", Reply(301, headers={"Location": "/landing"}))
    server.route("/landing", Reply(200, "ok"))
    client = make_client(server, sleeps, headers={"Authorization": "Bearer s3cr3t"})
    client.get("/go")
    assert server.hits("/landing")[0].headers["authorization"] == "Bearer s3cr3t"


def test_redirect_to_a_non_http_scheme_is_refused(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/go", Reply(302, headers={"Location": "file:///etc/passwd"}))
    client = make_client(server, sleeps)
    with pytest.raises(SourceError, match="'file' URL; only http and https"):
        client.get("/go")


# --- address policy -----------------------------------------------------------------------


def test_policy_blocks_loopback_before_connecting(server: LocalServer, sleeps: list[float]) -> None:
    server.route("/x", Reply(200, "secret"))
    client = make_client(server, sleeps, addresses=AddressPolicy(hint="allow it in the KB"))
    with pytest.raises(BlockedAddressError, match=r"loopback.*\(allow it in the KB\)"):
        client.get("/x")
    assert server.requests == []


@pytest.mark.parametrize(
    "location", ["http://169.254.169.254/latest/meta-data/", "http://[::1]:9/", "http://10.0.0.1/"]
)
def test_policy_blocks_a_redirect_hop(
    server: LocalServer, sleeps: list[float], location: str
) -> None:
    server.route("/go", Reply(302, headers={"Location": location}))
    client = make_client(server, sleeps, addresses=AddressPolicy(allow=["127.0.0.1"]))
    with pytest.raises(BlockedAddressError):
        client.get("/go")
    assert len(server.requests) == 1 and client.requests == 1


# --- pagination ---------------------------------------------------------------------------


def test_paginate_follows_link_next(server: LocalServer, sleeps: list[float]) -> None:
    def page(request: Recorded) -> Reply:
        number = int(request.path.rsplit("page=", 1)[1]) if "page=" in request.path else 1
        headers = {}
        if number < 3:
            headers["Link"] = f'<{server.url(f"/items?page={number + 1}")}>; rel="next"'
        return Reply(200, json.dumps([number]), headers=headers)

    server.route("/items", page)
    client = make_client(server, sleeps)
    pages = [client.json(response) for response in client.paginate("/items")]
    assert pages == [[1], [2], [3]]
