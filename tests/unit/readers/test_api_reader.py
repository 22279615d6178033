"""APIReader against a local JSON API served on 127.0.0.1 (``site_server.LocalServer``).

Real: the reader, its HttpClient and AddressPolicy, jsonpath-ng, sockets and a
``ThreadingHTTPServer``. Standing in: the API, a local stand-in for a hosted JSON API at its
HTTP boundary: JSON bodies (RFC 8259), ``Link: <...>; rel="next"`` pagination (RFC 8288,
as https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
describes), bearer tokens (RFC 6750) and JSON error bodies with a ``message``. Backoff
waits go to an injected ``sleep`` that records them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from site_server import LocalServer, Recorded, Reply, serve

from aof_index_readers.api import APIReader
from aof_index_readers.base import stable_id
from aof_index_readers.errors import (
    BlockedAddressError,
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourceUnavailableError,
)

JSON = "application/json"
INCIDENTS = [
    {
        "id": 101,
        "name": "Database failover",
        "updated_at": "2024-03-01T10:00:00Z",
        "body": "Primary failed over to the replica.",
        "tags": ["db", "ha"],
    },
    {
        "id": 102,
        "name": "Slow builds",
        "updated_at": "2024-03-02T11:30:00Z",
        "body": "The CI cache was cold.",
        "tags": [],
    },
]


def reply(data: Any, **options: Any) -> Reply:
    return Reply(200, json.dumps(data), content_type=JSON, **options)


@pytest.fixture
def api() -> Iterator[LocalServer]:
    yield from serve()


def make(api: LocalServer, path: str = "/incidents", **options: Any) -> APIReader:
    settings: dict[str, Any] = {
        "allow_private": ["127.0.0.1"],
        "source_name": "status",
        "http_options": {"sleep": lambda seconds: None},
        **options,
    }
    return APIReader(api.url(path), **settings)


# --- selecting records ----------------------------------------------------------------------


def test_get_top_level_list(api: LocalServer) -> None:
    api.route("/incidents", reply(INCIDENTS))
    reader = make(api, title_field="name", updated_field="updated_at")
    refs = list(reader.list_documents())
    endpoint = api.url("/incidents")
    assert [ref.id for ref in refs] == [
        stable_id("api", endpoint, "101"),
        stable_id("api", endpoint, "102"),
    ]
    assert [ref.version for ref in refs] == ["2024-03-01T10:00:00Z", "2024-03-02T11:30:00Z"]
    assert refs[0].metadata == {
        "source": endpoint,
        "title": "Database failover",
        "last_modified": "2024-03-01T10:00:00+00:00",
        "record_id": "101",
    }
    documents = list(reader.load_documents(refs))
    assert documents[0].text.splitlines() == [
        "id: 101",
        "name: Database failover",
        "updated_at: 2024-03-01T10:00:00Z",
        "body: Primary failed over to the replica.",
        'tags: ["db", "ha"]',
    ]
    assert documents[0].metadata["source_type"] == "API"
    assert documents[0].metadata["version"] == "2024-03-01T10:00:00Z"
    assert len(api.hits("/incidents")) == 1  # loading reused the listed records


@pytest.mark.parametrize("path", ["$.data.incidents", "$.data.incidents[*]"])
def test_json_path_selects_records(api: LocalServer, path: str) -> None:
    api.route("/incidents", reply({"data": {"incidents": INCIDENTS}, "meta": {"count": 2}}))
    refs = list(make(api, json_path=path).list_documents())
    assert [ref.metadata["record_id"] for ref in refs] == ["101", "102"]


def test_json_path_filter(api: LocalServer) -> None:
    api.route("/incidents", reply({"data": {"incidents": INCIDENTS}}))
    refs = list(make(api, json_path="$.data.incidents[?(@.id > 101)]").list_documents())
    assert [ref.metadata["record_id"] for ref in refs] == ["102"]


def test_json_path_matching_nothing_is_an_error(api: LocalServer) -> None:
    api.route("/incidents", reply({"error": "maintenance", "code": 7}))
    with pytest.raises(SourceError, match=r"matched nothing.*keys 'error', 'code'"):
        list(make(api, json_path="$.data.incidents").list_documents())
    api.route("/incidents", reply({"data": {"incidents": []}}))
    assert list(make(api, json_path="$.data.incidents").list_documents()) == []


def test_top_level_object_is_one_record(api: LocalServer) -> None:
    api.route("/status", reply({"page": "status", "indicator": "none"}))
    refs = list(make(api, "/status").list_documents())
    assert len(refs) == 1
    assert refs[0].metadata["record_id"].startswith("sha256:")


def test_invalid_json_path_is_refused_up_front(api: LocalServer) -> None:
    with pytest.raises(SourceError, match=r"not valid JSONPath.*api\.jsonPath"):
        make(api, json_path="$.[[[")


def test_non_object_records_are_skipped(api: LocalServer) -> None:
    api.route("/incidents", reply([INCIDENTS[0], "just text", 7, None, [1], INCIDENTS[1]]))
    reader = make(api)
    assert [ref.metadata["record_id"] for ref in reader.list_documents()] == ["101", "102"]
    reasons = [entry.reason for entry in reader.skipped]
    assert reasons == [
        "a JSON string, not an object",
        "a JSON number, not an object",
        "a JSON null, not an object",
        "a JSON array, not an object",
    ]
    assert reader.skipped[0].what.endswith("/incidents record #2")


# --- ids, versions, text --------------------------------------------------------------------


def test_ids_are_stable_and_ignore_the_query(api: LocalServer) -> None:
    api.route("/incidents", reply(INCIDENTS))
    first = list(make(api, "/incidents?api_key=k-secret&team=a").list_documents())
    second = list(make(api, "/incidents?api_key=other").list_documents())
    assert [ref.id for ref in first] == [ref.id for ref in second]
    assert first[0].id == stable_id("api", api.url("/incidents"), "101")
    assert "k-secret" not in json.dumps([ref.metadata for ref in first])
    assert api.hits("/incidents")[0].path == "/incidents?api_key=k-secret&team=a"


def test_custom_id_field_and_missing_ids(api: LocalServer) -> None:
    api.route("/items", reply([{"key": "a", "v": 1}, {"v": 2}, {"key": "a", "v": 3}]))
    reader = make(api, "/items", id_field="key")
    refs = list(reader.list_documents())
    assert [ref.metadata["record_id"] for ref in refs] == ["a"]
    assert [entry.reason for entry in reader.skipped] == [
        "has no 'key' field (id_field)",
        "repeats the id 'a' of an earlier record",
    ]


def test_hash_ids_and_versions_without_fields(api: LocalServer) -> None:
    api.route("/items", reply([{"text": "one"}]))
    before = next(make(api, "/items").list_documents())
    api.route("/items", reply([{"text": "one, edited"}]))
    after = next(make(api, "/items").list_documents())
    assert before.version.startswith("sha256:") and after.version != before.version
    assert before.id != after.id  # content-hash ids change with the content


def test_version_follows_updated_field_else_content(api: LocalServer) -> None:
    api.route("/incidents", reply(INCIDENTS))
    before = list(make(api, updated_field="updated_at").list_documents())
    by_default = list(make(api).list_documents())  # updated_at is a default field
    assert [r.version for r in by_default] == [r.version for r in before]
    edited = [dict(INCIDENTS[0], body="rewritten"), INCIDENTS[1]]
    api.route("/incidents", reply(edited))
    unchanged = list(make(api, updated_field="updated_at").list_documents())
    assert [r.version for r in unchanged] == [r.version for r in before]
    undated = [{k: v for k, v in r.items() if k != "updated_at"} for r in INCIDENTS]
    api.route("/incidents", reply(undated))
    hashed_before = list(make(api).list_documents())
    assert hashed_before[0].version.startswith("sha256:")
    api.route("/incidents", reply([dict(undated[0], body="rewritten"), undated[1]]))
    assert next(make(api).list_documents()).version != hashed_before[0].version


def test_text_fields(api: LocalServer) -> None:
    api.route("/incidents", reply(INCIDENTS))
    (single, _) = make(api, text_fields=["body"]).load_data()
    assert single.text == "Primary failed over to the replica."
    (several, _) = make(api, text_fields=["name", "tags", "missing"]).load_data()
    assert several.text == 'name: Database failover\ntags: ["db", "ha"]'
    absent = make(api, text_fields=["missing"])
    assert absent.load_data() == []
    assert [entry.reason for entry in absent.skipped] == ["no text content"] * 2


def test_load_without_the_listed_record_fetches_again(api: LocalServer) -> None:
    api.route("/incidents", reply(INCIDENTS))
    ref = list(make(api).list_documents())[1]
    bare = type(ref)(ref.id, ref.version, ref.metadata)
    (document,) = make(api).load_documents([bare])
    assert document.id_ == ref.id and "Slow builds" in document.text
    assert len(api.hits("/incidents")) == 2


# --- requests -------------------------------------------------------------------------------


def test_link_pagination(api: LocalServer) -> None:
    pages = [INCIDENTS[:1], INCIDENTS[1:], [{"id": 103, "name": "Expired cert"}, INCIDENTS[1]]]

    def answer(request: Recorded) -> Reply:
        number = int(request.path.rsplit("page=", 1)[1]) if "page=" in request.path else 1
        links = {}
        if number < len(pages):
            links["Link"] = (
                f'<{api.url(f"/incidents?page={number + 1}")}>; rel="next", '
                f'<{api.url(f"/incidents?page={len(pages)}")}>; rel="last"'
            )
        return reply(pages[number - 1], headers=links)

    api.route("/incidents", answer)
    reader = make(api)
    assert [ref.metadata["record_id"] for ref in reader.list_documents()] == ["101", "102", "103"]
    assert [hit.path for hit in api.hits("/incidents")] == [
        "/incidents",
        "/incidents?page=2",
        "/incidents?page=3",
    ]
    assert "repeats the id '102'" in reader.skipped[0].reason


def test_post_with_body(api: LocalServer) -> None:
    api.route("/search", reply({"hits": INCIDENTS}))
    reader = make(api, "/search", method="POST", body={"query": "outage"}, json_path="$.hits")
    assert len(list(reader.list_documents())) == 2
    (hit,) = api.hits("/search")
    assert hit.method == "POST" and json.loads(hit.body) == {"query": "outage"}
    assert hit.headers["content-type"] == "application/json"


def test_bearer_token_and_templated_headers_are_sent(api: LocalServer) -> None:
    api.route("/incidents", reply(INCIDENTS))
    list(make(api, auth_token="t0ken", headers={"X-Api-Key": "k-123"}).list_documents())
    sent = api.hits("/incidents")[0].headers
    assert sent["authorization"] == "Bearer t0ken"
    assert sent["x-api-key"] == "k-123" and sent["accept"] == "application/json"


def test_explicit_authorization_header_wins(api: LocalServer) -> None:
    api.route("/incidents", reply(INCIDENTS))
    list(make(api, auth_token="t0ken", headers={"authorization": "Token abc"}).list_documents())
    assert api.hits("/incidents")[0].headers["authorization"] == "Token abc"


def test_401_names_the_secret_not_the_token(api: LocalServer) -> None:
    api.route("/incidents", Reply(401, '{"message": "invalid token"}', content_type=JSON))
    with pytest.raises(SourceAuthError) as caught:
        list(make(api, "/incidents?key=q-secret", auth_token="t0ken").list_documents())
    message = str(caught.value)
    assert "API source 'status'" in message and "authSecretRef" in message
    assert "invalid token" in message
    assert "t0ken" not in message and "q-secret" not in message


def test_404_and_500(api: LocalServer) -> None:
    with pytest.raises(SourceNotFoundError, match="/nowhere"):
        list(make(api, "/nowhere").list_documents())
    api.route("/broken", Reply(500, '{"message": "boom"}', content_type=JSON))
    with pytest.raises(SourceUnavailableError, match="boom"):
        list(
            make(
                api, "/broken", http_options={"sleep": lambda s: None, "max_retries": 2}
            ).list_documents()
        )
    assert len(api.hits("/broken")) == 3


def test_malformed_json_is_one_source_error(api: LocalServer) -> None:
    api.route("/incidents", Reply(200, '[{"id": 1}, {"id": ', content_type=JSON))
    reader = make(api)
    with pytest.raises(SourceError, match=r"API source 'status'.*/incidents.*not JSON"):
        list(reader.list_documents())


def test_private_address_refused_without_allow_private(api: LocalServer) -> None:
    api.route("/incidents", reply(INCIDENTS))
    with pytest.raises(BlockedAddressError, match="allow-private-networks"):
        list(APIReader(api.url("/incidents")).list_documents())
    assert api.requests == []


def test_bad_endpoint_and_method(api: LocalServer) -> None:
    with pytest.raises(SourceError, match="not an http"):
        APIReader("ftp://example.com/x?key=s3cr3t")
    with pytest.raises(SourceError, match="not GET or POST"):
        APIReader(api.url("/"), method="DELETE")
