"""NotionReader against a local stand-in for Notion's public API (version 2022-06-28).

Real: the reader, its HttpClient (httpx over real sockets), the block-to-Markdown writer.
Standing in: Notion itself, as a ThreadingHTTPServer on 127.0.0.1
(tests/unit/readers/notion_server.py) speaking the JSON shapes (page, block, list and error
objects), cursor pagination, headers and 429 ``Retry-After`` of
https://developers.notion.com/reference at its HTTP boundary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from notion_server import USER_GRACE, FakeNotion, block, compact, page, serve_notion, text
from site_server import Recorded

from aof_index_readers.base import stable_id
from aof_index_readers.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceRateLimitError,
)
from aof_index_readers.notion import NotionReader, flatten_property, notion_id, property_key

TOKEN = "secret_notion_t0ken"


def handbook_blocks() -> list[dict[str, Any]]:
    bullet = "bulleted_list_item"
    numbered = "numbered_list_item"
    return [
        block("heading_1", text("On-call handbook")),
        block(
            "paragraph",
            text("Page the "),
            text("primary", bold=True),
            text(" then the "),
            text("secondary ", italic=True),
            text("via "),
            text("PagerDuty", url="https://pagerduty.example.com"),
            text(" and run "),
            text("kubectl get pods", code=True),
            text(". "),
            text("Old rule", strike=True),
        ),
        block("heading_2", text("Escalation")),
        block(
            bullet,
            text("Sev 1"),
            children=[
                block(bullet, text("Call the lead"), children=[block(bullet, text("Within 5 min"))])
            ],
        ),
        block(bullet, text("Sev 2")),
        block(numbered, text("Acknowledge")),
        block(numbered, text("Mitigate"), children=[block("paragraph", text("Roll back first."))]),
        block(numbered, text("Write the postmortem")),
        block("to_do", text("Update the status page"), checked=True),
        block("to_do", text("Notify customers"), checked=False),
        block("toggle", text("Details"), children=[block("paragraph", text("Hidden runbook."))]),
        block("code", text("kubectl rollout undo deploy/api"), language="shell", caption=[]),
        block("quote", text("Stay calm.")),
        block("callout", text("Escalate after 15 min."), icon={"type": "emoji", "emoji": "⚠️"}),
        block("divider"),
        block(
            "table",
            table_width=2,
            has_column_header=True,
            has_row_header=False,
            children=[
                block("table_row", cells=[[text("Service")], [text("Owner")]]),
                block("table_row", cells=[[text("api")], [text("team-a")]]),
                block(
                    "table_row", cells=[[text("db")], [text("team-b | "), text("dba", bold=True)]]
                ),
            ],
        ),
        block("bookmark", url="https://status.example.com", caption=[text("Status page")]),
        block(
            "image",
            type="external",
            external={"url": "https://example.com/arch.png"},
            caption=[text("Architecture diagram")],
        ),
        block("child_page", title="Sub page"),
        block("equation", expression="e=mc^2"),
        block("template", text("Standup"), children=[block("paragraph", text("Yesterday:"))]),
        block("unsupported"),
        block(
            "column_list",
            children=[
                block("column", children=[block("paragraph", text("Left"))]),
                block("column", children=[block("paragraph", text("Right"))]),
            ],
        ),
    ]


HANDBOOK = """# On-call handbook

Page the **primary** then the *secondary* via [PagerDuty](https://pagerduty.example.com) \
and run `kubectl get pods`. ~~Old rule~~

## Escalation

- Sev 1
  - Call the lead
    - Within 5 min
- Sev 2

1. Acknowledge
2. Mitigate
   Roll back first.
3. Write the postmortem

- [x] Update the status page
- [ ] Notify customers

Details

Hidden runbook.

```shell
kubectl rollout undo deploy/api
```

> Stay calm.

> ⚠️ Escalate after 15 min.

---

| Service | Owner |
| --- | --- |
| api | team-a |
| db | team-b \\| **dba** |

[Status page](https://status.example.com)

Architecture diagram

$$
e=mc^2
$$

Standup

Yesterday:

Left

Right"""

PROPERTIES = {
    "Status": {
        "id": "s1",
        "type": "status",
        "status": {"id": "x", "name": "Active", "color": "green"},
    },
    "Tags": {
        "id": "t1",
        "type": "multi_select",
        "multi_select": [
            {"id": "a", "name": "db", "color": "red"},
            {"id": "b", "name": "urgent", "color": "red"},
        ],
    },
    "Due date": {
        "id": "d1",
        "type": "date",
        "date": {"start": "2024-06-01", "end": "2024-06-03", "time_zone": None},
    },
    "Priority": {
        "id": "p1",
        "type": "select",
        "select": {"id": "y", "name": "High", "color": "red"},
    },
    "Area": {"id": "a1", "type": "select", "select": None},
    "Estimate": {"id": "e1", "type": "number", "number": 3},
    "Done": {"id": "c1", "type": "checkbox", "checkbox": True},
    "Summary": {
        "id": "r1",
        "type": "rich_text",
        "rich_text": [text("Primary "), text("DB", bold=True)],
    },
    "Owner": {
        "id": "o1",
        "type": "people",
        "people": [{"object": "user", "id": USER_GRACE, "name": "Grace"}],
    },
    "Docs": {"id": "u1", "type": "url", "url": "https://docs.example.com"},
    "Score": {"id": "f1", "type": "formula", "formula": {"type": "number", "number": 2.5}},
    "Ticket": {"id": "i1", "type": "unique_id", "unique_id": {"prefix": "OPS", "number": 42}},
}


@pytest.fixture
def notion() -> Iterator[FakeNotion]:
    yield from serve_notion(token=TOKEN)


def reader(server: FakeNotion, **options: Any) -> NotionReader:
    options.setdefault("api_token", TOKEN)
    options.setdefault("http_options", {"sleep": lambda seconds: None, "max_retries": 2})
    return NotionReader(base_url=server.url(""), source_name="handbook", **options)


def query(request: Recorded) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(request.path).query))


def database_with_rows(server: FakeNotion, count: int) -> str:
    database_id = server.add_database()
    for number in range(1, count + 1):
        server.add(
            page(
                f"Row {number}",
                database_id=database_id,
                blocks=[block("paragraph", text(f"Body {number}"))],
            )
        )
    return database_id


# --- listing ----------------------------------------------------------------------------------


def test_database_rows_are_listed_across_cursor_pages(notion: FakeNotion) -> None:
    database_id = database_with_rows(notion, 3)
    refs = list(reader(notion, database_ids=[database_id]).list_documents())

    queries = notion.hits(f"/v1/databases/{compact(database_id)}/query")
    assert [seen.method for seen in queries] == ["POST", "POST"]  # 2 rows per response
    assert json.loads(queries[0].body) == {"page_size": 100}
    second = json.loads(queries[1].body)
    assert second == {"page_size": 100, "start_cursor": refs[2].metadata["page_id"]}
    assert queries[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert queries[0].headers["notion-version"] == "2022-06-28"
    assert not any("/blocks/" in path for path in notion.paths())  # no content fetched

    rows = [notion.pages[key] for key in notion.databases[compact(database_id)]]
    assert [ref.id for ref in refs] == [stable_id("notion", compact(row["id"])) for row in rows]
    first = refs[0]
    assert first.version == "2024-05-02T10:00:00.000Z"
    assert first.metadata["title"] == "Row 1"
    assert first.metadata["author"] == USER_GRACE
    assert first.metadata["last_modified"] == "2024-05-02T10:00:00+00:00"
    assert first.metadata["source"] == rows[0]["url"]
    assert first.metadata["database_id"] == database_id


def test_database_properties_become_flat_metadata(notion: FakeNotion) -> None:
    database_id = notion.add_database()
    notion.add(page("Postgres failover", database_id=database_id, properties=PROPERTIES))
    [ref] = reader(notion, database_ids=[database_id]).list_documents()

    properties = {key: value for key, value in ref.metadata.items() if key.startswith("property_")}
    assert properties == {
        "property_status": "Active",
        "property_tags": "db, urgent",
        "property_due_date": "2024-06-01/2024-06-03",
        "property_priority": "High",
        "property_estimate": 3,
        "property_done": True,
        "property_summary": "Primary DB",
        "property_owner": "Grace",
        "property_docs": "https://docs.example.com",
        "property_score": 2.5,
        "property_ticket": "OPS-42",
    }
    assert ref.metadata["title"] == "Postgres failover"


def test_listed_pages_join_database_rows_once_and_archived_ones_are_left_out(
    notion: FakeNotion,
) -> None:
    database_id = database_with_rows(notion, 2)
    row = notion.pages[notion.databases[compact(database_id)][0]]
    standalone = notion.add(page("Standalone"))
    archived = notion.add(page("Old"))
    archived["archived"] = True

    source = reader(
        notion,
        database_ids=[database_id],
        page_ids=[standalone["url"], compact(row["id"]), archived["id"]],
    )
    titles = [ref.metadata["title"] for ref in source.list_documents()]

    assert titles == ["Row 1", "Row 2", "Standalone"]
    assert notion.hits(f"/v1/pages/{compact(standalone['id'])}")  # the id from its URL


def test_versions_change_only_for_edited_pages(notion: FakeNotion) -> None:
    database_id = database_with_rows(notion, 3)
    source = reader(notion, database_ids=[database_id])
    before = {ref.id: ref.version for ref in source.list_documents()}
    edited = notion.databases[compact(database_id)][1]
    notion.edit(edited, [block("paragraph", text("Body 2, revised"))], "2024-06-01T09:31:00.000Z")
    after_refs = list(source.list_documents())
    after = {ref.id: ref.version for ref in after_refs}

    changed = [key for key in before if before[key] != after[key]]
    assert changed == [stable_id("notion", edited)]
    assert [doc.text for doc in source.load_documents(after_refs)] == [
        "Body 1",
        "Body 2, revised",
        "Body 3",
    ]


# --- loading ------------------------------------------------------------------------------------


def test_blocks_become_markdown(notion: FakeNotion, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handbook = notion.add(page("Handbook", blocks=handbook_blocks()))
    source = reader(notion, page_ids=[handbook["id"]])
    [document] = source.load_data()

    assert document.text == HANDBOOK
    assert document.id_ == stable_id("notion", compact(handbook["id"]))
    assert document.metadata["source_type"] == "Notion"
    assert document.metadata["title"] == "Handbook"
    children = [seen for seen in notion.requests if seen.route.endswith("/children")]
    top = notion.hits(f"/v1/blocks/{handbook['id']}/children")
    assert len(top) == 12  # 23 top-level blocks, 2 per response
    assert query(top[0]) == {"page_size": "100"}
    assert query(top[1])["start_cursor"] == handbook_children(notion, handbook)[2]["id"]
    table = handbook_children(notion, handbook)[15]
    assert len(notion.hits(f"/v1/blocks/{table['id']}/children")) == 2
    child_page = handbook_children(notion, handbook)[18]
    assert not any(child_page["id"] in seen.route for seen in children)
    assert "read only when listed itself" in caplog.text
    assert "'template' has no rendering" in caplog.text


def handbook_children(server: FakeNotion, handbook: dict[str, Any]) -> list[dict[str, Any]]:
    return server.blocks[compact(handbook["id"])]


def test_a_page_gone_after_listing_is_skipped(notion: FakeNotion) -> None:
    database_id = database_with_rows(notion, 2)
    source = reader(notion, database_ids=[database_id])
    refs = list(source.list_documents())
    del notion.blocks[notion.databases[compact(database_id)][0]]

    assert [document.text for document in source.load_documents(refs)] == ["Body 2"]
    assert "no longer shared with the integration" in source.skipped[0].reason


def test_an_empty_page_is_skipped(notion: FakeNotion) -> None:
    empty = notion.add(page("Empty", blocks=[]))
    source = reader(notion, page_ids=[empty["id"]])
    assert source.load_data() == []
    assert source.skipped[0].reason == "no text content"


# --- errors and secrets ---------------------------------------------------------------------------


def test_an_invalid_token_is_an_auth_error_without_the_token(
    notion: FakeNotion, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "secret_wrong_" + TOKEN
    source = reader(notion, api_token=wrong, page_ids=["0" * 32])
    with pytest.raises(SourceAuthError) as raised:
        list(source.list_documents())
    message = str(raised.value)
    assert "Notion source 'handbook'" in message
    assert "API token is invalid." in message
    assert "apiTokenSecretRef" in message
    assert wrong not in message and wrong not in caplog.text
    assert wrong not in repr(source) and wrong not in repr(vars(source))


def test_the_token_stays_out_of_logs_and_metadata(
    notion: FakeNotion, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    database_id = database_with_rows(notion, 2)
    documents = reader(notion, database_ids=[database_id]).load_data()
    assert len(documents) == 2
    assert caplog.text  # httpx logged the requests
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(document.metadata) for document in documents)


@pytest.mark.parametrize(
    ("status", "error", "said"),
    [
        (403, SourcePermissionError, "Insufficient permissions"),
        (404, SourceNotFoundError, "shared with your integration"),
    ],
)
def test_forbidden_and_unshared_databases_are_typed_errors(
    notion: FakeNotion, status: int, error: type[SourceError], said: str
) -> None:
    database_id = database_with_rows(notion, 1)
    notion.fail(f"/v1/databases/{compact(database_id)}", status)
    with pytest.raises(error, match=said) as raised:
        list(reader(notion, database_ids=[database_id]).list_documents())
    assert f"/v1/databases/{compact(database_id)}/query" in str(raised.value)


def test_an_unknown_database_is_not_found(notion: FakeNotion) -> None:
    with pytest.raises(SourceNotFoundError, match="Make sure the relevant pages"):
        list(reader(notion, database_ids=["1" * 32]).list_documents())


def test_rate_limits_wait_for_retry_after(notion: FakeNotion) -> None:
    database_id = database_with_rows(notion, 1)
    notion.fail(f"/v1/databases/{compact(database_id)}", 429, {"Retry-After": "2"})
    notion.fail("/v1/blocks/", 429, {"Retry-After": "1"})
    waits: list[float] = []
    source = reader(notion, database_ids=[database_id], http_options={"sleep": waits.append})
    assert [document.text for document in source.load_data()] == ["Body 1"]
    assert waits == [2.0, 1.0]


def test_a_rate_limit_longer_than_the_wait_limit_raises(notion: FakeNotion) -> None:
    database_id = database_with_rows(notion, 1)
    notion.fail(f"/v1/databases/{compact(database_id)}", 429, {"Retry-After": "900"})
    source = reader(notion, database_ids=[database_id], http_options={"max_wait": 30})
    with pytest.raises(SourceRateLimitError):
        list(source.list_documents())


def test_a_source_needs_databases_or_pages() -> None:
    with pytest.raises(ValueError, match="database_ids, page_ids"):
        NotionReader(api_token=TOKEN)


# --- pure helpers ---------------------------------------------------------------------------------


def test_property_keys_and_values() -> None:
    assert property_key("Due date") == "property_due_date"
    assert property_key("Größe (cm)") == "property_größe_cm"
    assert property_key("!!") == "property_unnamed"
    assert flatten_property({"type": "date", "date": {"start": "2024-06-01", "end": None}}) == (
        "2024-06-01"
    )
    assert flatten_property({"type": "relation", "relation": [{"id": "a"}, {"id": "b"}]}) == "a, b"
    assert flatten_property({"type": "rollup", "rollup": {"type": "array", "array": []}}) is None


def test_ids_come_from_ids_or_urls() -> None:
    expected = "0f3c4e5a6b7c4d8e9f0a1b2c3d4e5f60"
    assert notion_id("0f3c4e5a-6b7c-4d8e-9f0a-1b2c3d4e5f60") == expected
    assert notion_id("https://www.notion.so/acme/Cafe-Beef-" + expected + "?v=" + "1" * 32) == (
        expected
    )
    with pytest.raises(ValueError, match="neither an id nor"):
        NotionReader(api_token=TOKEN, page_ids=["https://www.notion.so/acme/Title"])
