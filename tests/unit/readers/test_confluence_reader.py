"""ConfluenceReader against a local stand-in for Confluence's REST API v1.

Real: the reader, its HttpClient (httpx over real sockets), BeautifulSoup parsing the storage
format, pypdf and python-docx extracting attachments. Standing in: Confluence itself, as a
ThreadingHTTPServer on 127.0.0.1 (tests/unit/readers/confluence_server.py) speaking the JSON
shapes, pagination links, error bodies and Retry-After of
https://developer.atlassian.com/cloud/confluence/rest/v1/ at its HTTP boundary.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from confluence_server import (
    Attachment,
    FakeConfluence,
    Page,
    serve_confluence,
    tiny_docx,
    tiny_pdf,
)
from site_server import Recorded

from aof_index_readers.base import stable_id
from aof_index_readers.confluence import ConfluenceReader, StorageFormat, api_root, build_cql
from aof_index_readers.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceRateLimitError,
)

TOKEN = "conf-token-s3cr3t"

GUIDE = """<h1>Deploy guide</h1>
<p>Owner: <ac:link><ri:user ri:account-id="557058:abc-123" /></ac:link>. Read the
<a href="https://example.com/docs">upstream docs</a> and <ac:link><ri:page
ri:content-title="Rollback" /></ac:link>.<ac:emoticon ac:name="smile" /></p>
<ac:image><ri:attachment ri:filename="diagram.png" /></ac:image>
<ac:structured-macro ac:name="info" ac:schema-version="1"><ac:rich-text-body>
<p>Deploys freeze on <strong>Fridays</strong>.</p></ac:rich-text-body></ac:structured-macro>
<h2>Steps</h2>
<ol><li>Build<ul><li>run <code>make</code></li></ul></li><li>Ship</li></ol>
<ac:structured-macro ac:name="code" ac:schema-version="1">
<ac:parameter ac:name="language">bash</ac:parameter>
<ac:plain-text-body><![CDATA[kubectl apply -f deploy.yaml
test 1 < 2 && echo "<done>"]]></ac:plain-text-body></ac:structured-macro>
<table><tbody><tr><th>Env</th><th>URL</th></tr>
<tr><td>prod</td><td><p>https://prod.example.com</p></td></tr>
<tr><td>staging</td><td>a | b</td></tr></tbody></table>
<ac:structured-macro ac:name="warning"><ac:parameter ac:name="title">Careful</ac:parameter>
<ac:rich-text-body><p>Never on <em>prod</em> first.</p></ac:rich-text-body></ac:structured-macro>
<ac:task-list><ac:task><ac:task-id>1</ac:task-id><ac:task-status>complete</ac:task-status>
<ac:task-body>Tag the release</ac:task-body></ac:task><ac:task><ac:task-id>2</ac:task-id>
<ac:task-status>incomplete</ac:task-status><ac:task-body>Announce it</ac:task-body></ac:task>
</ac:task-list>
<p>Status: <ac:structured-macro ac:name="status"><ac:parameter ac:name="title">DONE
</ac:parameter><ac:parameter ac:name="colour">Green</ac:parameter></ac:structured-macro></p>
<ac:structured-macro ac:name="toc" />"""

GUIDE_MARKDOWN = """# Deploy guide

Owner: @557058:abc-123. Read the [upstream docs](https://example.com/docs) and Rollback.

Deploys freeze on **Fridays**.

## Steps

1. Build
   - run `make`
2. Ship

```bash
kubectl apply -f deploy.yaml
test 1 < 2 && echo "<done>"
```

| Env | URL |
| --- | --- |
| prod | https://prod.example.com |
| staging | a \\| b |

Careful

Never on *prod* first.

- [x] Tag the release
- [ ] Announce it

Status: DONE"""

MALFORMED = "<h2>Broken<p>para <b>bold <i>both</p><ul><li>one</ul></div><table><tr><td>x</td>"


@pytest.fixture
def confluence() -> Iterator[FakeConfluence]:
    yield from serve_confluence(token=TOKEN)


def reader(server: FakeConfluence, **options: Any) -> ConfluenceReader:
    options.setdefault("space_key", "OPS")
    options.setdefault("username", server.username)
    options.setdefault("api_token", TOKEN)
    options.setdefault("http_options", {"sleep": lambda seconds: None, "max_retries": 2})
    return ConfluenceReader(base_url=server.site, source_name="wiki", **options)


def query(request: Recorded) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(request.path).query))


def add_pages(server: FakeConfluence, count: int) -> None:
    for number in range(1, count + 1):
        server.add(Page(str(100 + number), f"Page {number}", f"<p>Body {number}</p>"))


# --- configuration --------------------------------------------------------------------------


def test_api_root_adds_wiki_for_cloud_sites_and_keeps_data_center_paths() -> None:
    assert api_root("https://example.atlassian.net") == "https://example.atlassian.net/wiki"
    assert api_root("https://example.atlassian.net/wiki/") == "https://example.atlassian.net/wiki"
    assert api_root("https://example.atlassian.net/wiki/rest/api") == (
        "https://example.atlassian.net/wiki"
    )
    assert api_root("https://confluence.example.com") == "https://confluence.example.com"
    assert api_root("https://intra.example.com/confluence/") == (
        "https://intra.example.com/confluence"
    )
    with pytest.raises(ValueError, match="http"):
        api_root("example.atlassian.net")


def test_cql_defaults_to_the_space_pages_and_ands_a_given_query() -> None:
    assert build_cql("OPS", None) == 'space = "OPS" and type = page'
    assert build_cql(None, "label = runbook") == "label = runbook"
    assert build_cql("OPS", 'label = "runbook" or title ~ "deploy"') == (
        'space = "OPS" and (label = "runbook" or title ~ "deploy")'
    )
    assert build_cql("OPS", "type = blogpost ORDER BY created desc") == (
        'space = "OPS" and (type = blogpost) ORDER BY created desc'
    )
    assert build_cql('A"B', None) == 'space = "A\\"B" and type = page'
    with pytest.raises(ValueError, match="space_key, cql"):
        build_cql(None, " ")


# --- listing ----------------------------------------------------------------------------------


def test_listing_follows_next_links_and_fetches_no_bodies(confluence: FakeConfluence) -> None:
    add_pages(confluence, 5)
    confluence.pages["103"].editor = None  # falls back to the creator
    refs = list(reader(confluence).list_documents())

    searches = [query(seen) for seen in confluence.hits("/wiki/rest/api/content/search")]
    assert len(searches) == 3  # the stand-in caps results at 2 per request
    first = searches[0]
    expand = "version,history,space"
    assert first == {"cql": 'space = "OPS" and type = page', "limit": "50", "expand": expand}
    assert "cursor" in searches[1]
    assert all(seen.body == b"" and seen.method == "GET" for seen in confluence.requests)
    assert len(confluence.requests) == 3  # no page bodies

    host = confluence.origin.removeprefix("http://")
    assert [ref.id for ref in refs] == [
        stable_id("confluence", host, str(n)) for n in range(101, 106)
    ]
    assert {ref.version for ref in refs} == {"1"}
    info = refs[0].metadata
    assert info["title"] == "Page 1"
    assert info["author"] == "Grace Hopper"
    assert info["last_modified"] == "2024-05-02T10:00:00+00:00"
    assert info["source"] == f"{confluence.site}/spaces/OPS/pages/101/Page%201"
    assert info["space"] == "OPS"
    assert refs[2].metadata["author"] == "Ada Lovelace"


def test_a_given_cql_is_anded_with_the_space(confluence: FakeConfluence) -> None:
    add_pages(confluence, 3)
    confluence.pages["102"].labels.append("runbook")
    confluence.add(Page("900", "Elsewhere", "<p>x</p>", space="DEV", labels=["runbook"]))

    refs = list(reader(confluence, cql='label = "runbook"').list_documents())

    assert query(confluence.requests[0])["cql"] == 'space = "OPS" and (label = "runbook")'
    assert [ref.metadata["title"] for ref in refs] == ["Page 2"]
    across = list(reader(confluence, space_key=None, cql='label = "runbook"').list_documents())
    assert [ref.metadata["title"] for ref in across] == ["Page 2", "Elsewhere"]


def test_versions_change_only_for_edited_pages(confluence: FakeConfluence) -> None:
    add_pages(confluence, 3)
    before = {ref.id: ref.version for ref in reader(confluence).list_documents()}
    confluence.edit("102", "<p>Body 2, revised</p>")
    after = {ref.id: ref.version for ref in reader(confluence).list_documents()}

    assert before.keys() == after.keys()
    changed = [key for key in before if before[key] != after[key]]
    host = confluence.origin.removeprefix("http://")
    assert changed == [stable_id("confluence", host, "102")]
    assert after[changed[0]] == "2"


# --- loading pages ------------------------------------------------------------------------------


def test_storage_format_becomes_markdown(confluence: FakeConfluence) -> None:
    confluence.add(Page("101", "Deploy guide", GUIDE))
    source = reader(confluence)
    documents = source.load_data()

    assert [document.text for document in documents] == [GUIDE_MARKDOWN]
    document = documents[0]
    assert document.metadata["source_type"] == "Confluence"
    assert document.metadata["source_name"] == "wiki"
    assert document.metadata["version"] == "1"
    assert document.metadata["title"] == "Deploy guide"
    [load] = confluence.hits("/wiki/rest/api/content/101")
    assert query(load) == {"expand": "body.storage,version"}


def test_malformed_markup_gives_best_effort_text(confluence: FakeConfluence) -> None:
    confluence.add(Page("101", "Broken", MALFORMED))
    [document] = reader(confluence).load_data()
    assert document.text == "## Broken\n\npara **bold *both***\n\n- one\n\n|  |\n| --- |\n| x |"


def test_unparseable_or_missing_bodies_are_skipped_and_the_rest_loads(
    confluence: FakeConfluence,
) -> None:
    confluence.add(Page("101", "Rejected", "<p>a</p><![junk[x]]>"))
    confluence.add(Page("102", "No body", None))
    confluence.add(Page("103", "Only an image", '<ac:image><ri:url ri:value="x.png"/></ac:image>'))
    confluence.add(Page("104", "Fine", "<p>fine</p>"))
    source = reader(confluence)

    assert [document.text for document in source.load_data()] == ["fine"]
    reasons = {skip.what.rsplit("/", 2)[-2]: skip.reason for skip in source.skipped}
    assert "could not be parsed" in reasons["101"]
    assert "unknown status keyword" in reasons["101"]
    assert "no storage-format body" in reasons["102"]
    assert reasons["103"] == "no text content"


def test_a_page_deleted_after_listing_is_skipped(confluence: FakeConfluence) -> None:
    add_pages(confluence, 2)
    source = reader(confluence)
    refs = list(source.list_documents())
    del confluence.pages["101"]

    assert [document.text for document in source.load_documents(refs)] == ["Body 2"]
    assert "no longer exists" in source.skipped[0].reason


# --- attachments ----------------------------------------------------------------------------------


def test_attachments_are_documents_of_their_own(confluence: FakeConfluence) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    confluence.add(
        Page(
            "101",
            "Runbook",
            "<p>See the files.</p>",
            attachments=[
                Attachment("att1", "notes.txt", "text/plain", b"Restart the pods.", version=3),
                Attachment(
                    "att2",
                    "rollback plan.pdf",
                    "application/pdf",
                    tiny_pdf("Rollback takes five minutes"),
                ),
                Attachment("att3", "diagram.png", "image/png", png),
                Attachment("att4", "checklist", _DOCX, tiny_docx("Check the dashboards.")),
            ],
        )
    )
    source = reader(confluence, include_attachments=True)
    refs = list(source.list_documents())
    documents = {doc.metadata["title"]: doc for doc in source.load_documents(refs)}

    host = confluence.origin.removeprefix("http://")
    assert [ref.id for ref in refs] == [
        stable_id("confluence", host, key) for key in ("101", "att1", "att2", "att3", "att4")
    ]
    assert refs[1].version == "3"
    assert refs[1].metadata["content_type"] == "attachment"
    assert refs[1].metadata["parent_title"] == "Runbook"
    assert refs[1].metadata["media_type"] == "text/plain"
    assert documents["Runbook"].text == "See the files."
    assert documents["notes.txt"].text == "Restart the pods."
    assert documents["rollback plan.pdf"].text == "Rollback takes five minutes"
    assert documents["checklist"].text == "Check the dashboards."
    assert "diagram.png" not in documents
    assert [(skip.what.endswith("diagram.png"), skip.reason) for skip in source.skipped] == [
        (True, "unsupported media type image/png")
    ]
    attachment_lists = confluence.hits("/wiki/rest/api/content/101/child/attachment")
    assert len(attachment_lists) == 2  # two attachments per response
    downloads = confluence.paths("/wiki/download/")
    assert len(downloads) == 3 and not any("diagram" in path for path in downloads)
    assert len(confluence.paths("/wiki/files/")) == 3  # the redirects were followed


_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


# --- authentication and errors --------------------------------------------------------------------


def test_basic_auth_sends_user_and_token(confluence: FakeConfluence) -> None:
    add_pages(confluence, 1)
    list(reader(confluence).list_documents())
    expected = base64.b64encode(f"me@example.com:{TOKEN}".encode()).decode()
    assert confluence.requests[0].headers["authorization"] == f"Basic {expected}"


def test_without_a_username_the_token_is_a_bearer_token() -> None:
    for server in serve_confluence(token=TOKEN, bearer=True):
        add_pages(server, 1)
        refs = list(reader(server, username=None).list_documents())
        assert len(refs) == 1
        assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_a_rejected_token_is_an_auth_error_without_the_token(
    confluence: FakeConfluence, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = reader(confluence, api_token="wrong-" + TOKEN)
    with pytest.raises(SourceAuthError) as raised:
        list(source.list_documents())
    message = str(raised.value)
    assert "Confluence source 'wiki'" in message
    assert "401" in message and "/wiki/rest/api/content/search" in message
    assert "apiTokenSecretRef" in message
    assert "Client must be authenticated" in message
    assert TOKEN not in message and TOKEN not in caplog.text
    assert TOKEN not in repr(source) and TOKEN not in repr(vars(source))


def test_the_token_stays_out_of_logs_and_metadata(
    confluence: FakeConfluence, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_pages(confluence, 2)
    confluence.pages["101"].attachments.append(Attachment("att1", "a.txt", "text/plain", b"x"))
    documents = reader(confluence, include_attachments=True).load_data()
    assert len(documents) == 3
    basic = base64.b64encode(f"me@example.com:{TOKEN}".encode()).decode()
    assert caplog.text  # httpx logged the requests
    for secret in (TOKEN, basic):
        assert secret not in caplog.text
        assert all(secret not in str(document.metadata) for document in documents)


@pytest.mark.parametrize(
    ("status", "error"), [(403, SourcePermissionError), (404, SourceNotFoundError)]
)
def test_forbidden_and_missing_are_typed_errors(
    confluence: FakeConfluence, status: int, error: type[SourceError]
) -> None:
    confluence.fail("/wiki/rest/api/content/search", status)
    with pytest.raises(error, match=f"{status}"):
        list(reader(confluence).list_documents())


def test_a_wrong_context_path_is_not_found(confluence: FakeConfluence) -> None:
    source = ConfluenceReader(
        base_url=confluence.origin + "/confluence",
        space_key="OPS",
        username=confluence.username,
        api_token=TOKEN,
    )
    with pytest.raises(SourceNotFoundError, match="/confluence/rest/api/content/search"):
        list(source.list_documents())


def test_rate_limits_wait_for_retry_after(confluence: FakeConfluence) -> None:
    add_pages(confluence, 1)
    confluence.fail("/wiki/rest/api/content/search", 429, {"Retry-After": "7"})
    waits: list[float] = []
    source = reader(confluence, http_options={"sleep": waits.append})
    assert len(list(source.list_documents())) == 1
    assert waits == [7.0]


def test_a_rate_limit_longer_than_the_wait_limit_raises(confluence: FakeConfluence) -> None:
    confluence.fail("/wiki/rest/api/content/search", 429, {"Retry-After": "3600"})
    source = reader(confluence, http_options={"max_wait": 60})
    with pytest.raises(SourceRateLimitError) as raised:
        list(source.list_documents())
    assert raised.value.reset_at is not None


def test_next_links_to_another_host_are_refused(confluence: FakeConfluence) -> None:
    add_pages(confluence, 3)
    port = confluence.origin.rsplit(":", 1)[1]
    confluence.next_link_override = f"http://localhost:{port}/wiki/rest/api/content/search?next=1"
    with pytest.raises(SourceError, match="does not send credentials"):
        list(reader(confluence).list_documents())
    assert len(confluence.requests) == 1


def test_storage_format_converter_alone() -> None:
    markup = (
        '<p>Ping <ac:link><ri:user ri:username="jdoe"/></ac:link> about '
        '<ac:link><ri:attachment ri:filename="plan.pdf"/>'
        "<ac:plain-text-link-body><![CDATA[the plan]]></ac:plain-text-link-body></ac:link>"
        ' and <ac:structured-macro ac:name="jira"><ac:parameter ac:name="key">OPS-7'
        "</ac:parameter></ac:structured-macro>.</p>"
        '<ac:structured-macro ac:name="noformat"><ac:plain-text-body><![CDATA[raw ```text```]]>'
        "</ac:plain-text-body></ac:structured-macro>"
        "<ac:layout><ac:layout-section><ac:layout-cell><p>Left</p></ac:layout-cell>"
        "<ac:layout-cell><p>Right</p></ac:layout-cell></ac:layout-section></ac:layout>"
    )
    assert StorageFormat().convert(markup) == (
        "Ping @jdoe about the plan and OPS-7.\n\n````\nraw ```text```\n````\n\nLeft\n\nRight"
    )
