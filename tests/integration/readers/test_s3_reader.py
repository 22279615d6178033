"""The S3 reader against a real S3-compatible server on 127.0.0.1.

Stand-in: moto's server mode (``ThreadedMotoServer`` on a free loopback port), a local
imitation of AWS S3 that speaks the S3 REST API over HTTP, so the reader's real boto3 client
signs, pages, downloads and fails as it would against AWS or MinIO (path-style addressing,
as with any ``endpoint``). Moto checks signatures and IAM policies only when asked to; the
credential tests switch that on through moto's ``/moto-api/reset-auth`` and create IAM users
on the same server. Every test uses a bucket of its own.
"""

from __future__ import annotations

import json
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from aof_index_readers.base import DocumentRef
from aof_index_readers.errors import (
    SourceAuthError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceUnavailableError,
)
from aof_index_readers.s3 import S3Reader

pytestmark = pytest.mark.integration

ADMIN_KEY = "testing"  # moto accepts any key until authentication is switched on
READ_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}
    ],
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def admin(endpoint: str, service: str = "s3") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ADMIN_KEY,
        aws_secret_access_key=ADMIN_KEY,
    )


@pytest.fixture
def bucket(endpoint: str) -> str:
    name = f"aof-docs-{uuid.uuid4().hex[:12]}"
    admin(endpoint).create_bucket(Bucket=name)
    return name


def put(endpoint: str, bucket: str, objects: dict[str, bytes]) -> None:
    client = admin(endpoint)
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def reader(endpoint: str, bucket: str, **kwargs: Any) -> S3Reader:
    kwargs.setdefault("access_key", ADMIN_KEY)
    kwargs.setdefault("secret_key", ADMIN_KEY)
    return S3Reader(bucket=bucket, endpoint=endpoint, **kwargs)


def count_calls(s3: S3Reader, operation: str) -> list[str]:
    """Record every ``operation`` request the reader's client sends."""
    calls: list[str] = []
    s3.client.meta.events.register(
        f"before-parameter-build.s3.{operation}",
        lambda params, **_: calls.append(params.get("Key", "")),
    )
    return calls


def by_source(refs: Iterator[DocumentRef]) -> dict[str, DocumentRef]:
    return {ref.metadata["source"]: ref for ref in refs}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def moto_auth(endpoint: str, free_requests: str) -> None:
    """Authenticate every request after ``free_requests`` more (``inf``: never)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=free_requests.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200


# --- listing ------------------------------------------------------------------------------


def test_listing_keeps_prefix_and_patterns_and_fetches_no_content(
    endpoint: str, bucket: str
) -> None:
    put(
        endpoint,
        bucket,
        {
            "docs/guide.md": b"# Guide\n\nRead me.",
            "docs/ops/restart.txt": b"restart it",
            "docs/ops/logo.png": b"\x89PNG",
            "docs/drafts/wip.md": b"not yet",
            "docs/folder/": b"",
            "other/outside.md": b"outside the prefix",
        },
    )
    s3 = reader(
        endpoint,
        bucket,
        prefix="docs/",
        include_patterns=["*.md", "*.txt"],
        exclude_patterns=["drafts"],
    )
    downloads = count_calls(s3, "GetObject")

    refs = by_source(s3.list_documents())

    assert set(refs) == {f"s3://{bucket}/docs/guide.md", f"s3://{bucket}/docs/ops/restart.txt"}
    assert downloads == []
    guide = refs[f"s3://{bucket}/docs/guide.md"].metadata
    assert (guide["title"], guide["file_name"], guide["file_type"]) == ("guide.md",) * 2 + ("md",)
    assert guide["size"] == len(b"# Guide\n\nRead me.")
    assert guide["last_modified"].endswith("+00:00")


def test_a_key_pattern_is_matched_relative_to_the_prefix(endpoint: str, bucket: str) -> None:
    put(endpoint, bucket, {"kb/runbooks/a.md": b"a", "kb/notes/b.md": b"b"})

    refs = by_source(
        reader(endpoint, bucket, prefix="kb/", include_patterns=["runbooks/*"]).list_documents()
    )

    assert set(refs) == {f"s3://{bucket}/kb/runbooks/a.md"}


def test_listing_pages_through_list_objects_v2(endpoint: str, bucket: str) -> None:
    put(endpoint, bucket, {f"notes/{i:02}.md": f"note {i}".encode() for i in range(25)})
    s3 = reader(endpoint, bucket, page_size=10)
    pages = count_calls(s3, "ListObjectsV2")

    keys = [ref.metadata["source"] for ref in s3.list_documents()]

    assert len(pages) == 3
    assert keys == [f"s3://{bucket}/notes/{i:02}.md" for i in range(25)]


# --- ids and versions ---------------------------------------------------------------------------


def test_ids_are_stable_and_etags_change_only_for_rewritten_objects(
    endpoint: str, bucket: str
) -> None:
    put(endpoint, bucket, {"a.md": b"alpha", "b.md": b"beta", "c.md": b"gamma"})
    before = by_source(reader(endpoint, bucket).list_documents())

    put(endpoint, bucket, {"b.md": b"beta, second edition"})
    admin(endpoint).delete_object(Bucket=bucket, Key="c.md")
    after = by_source(reader(endpoint, bucket).list_documents())

    a, b = (f"s3://{bucket}/{name}" for name in ("a.md", "b.md"))
    assert set(before) - set(after) == {f"s3://{bucket}/c.md"}
    assert set(after) == {a, b}
    assert after[a] == before[a]  # same id, same version
    assert after[b].id == before[b].id
    assert after[b].version != before[b].version
    etag = admin(endpoint).head_object(Bucket=bucket, Key="b.md")["ETag"]
    assert after[b].version == etag.strip('"')


def test_the_same_key_in_another_bucket_is_another_document(endpoint: str, bucket: str) -> None:
    other = f"{bucket}-copy"
    admin(endpoint).create_bucket(Bucket=other)
    put(endpoint, bucket, {"a.md": b"alpha"})
    put(endpoint, other, {"a.md": b"alpha"})

    [first] = reader(endpoint, bucket).list_documents()
    [second] = reader(endpoint, other).list_documents()

    assert first.id != second.id
    assert first.version == second.version  # same bytes, same ETag


# --- loading ------------------------------------------------------------------------------------


def test_documents_carry_the_extracted_text_and_the_listed_version(
    endpoint: str, bucket: str
) -> None:
    put(
        endpoint,
        bucket,
        {
            "guide.md": b"# Restarting\n\nUse kubectl rollout restart.",
            "page.html": b"<html><title>Status</title><body><p>All green</p>"
            b"<script>x()</script></body></html>",
        },
    )
    s3 = reader(endpoint, bucket, source_name="bucket-docs")

    documents = {d.metadata["file_name"]: d for d in s3.load_data()}
    listed = by_source(s3.list_documents())

    guide = documents["guide.md"]
    assert guide.text == "# Restarting\n\nUse kubectl rollout restart."
    assert guide.metadata["title"] == "Restarting"
    assert guide.metadata["source_name"] == "bucket-docs"
    assert guide.metadata["source_type"] == "S3"
    assert guide.id_ == listed[f"s3://{bucket}/guide.md"].id
    assert guide.metadata["version"] == listed[f"s3://{bucket}/guide.md"].version
    assert documents["page.html"].text == "Status\nAll green"
    assert documents["page.html"].metadata["title"] == "Status"


def test_binary_unsupported_and_oversize_objects_are_skipped(endpoint: str, bucket: str) -> None:
    put(
        endpoint,
        bucket,
        {
            "ok.txt": b"plain text",
            "blob.txt": b"MZ\x00\x00binary",
            "photo.jpg": b"\xff\xd8\xff",
            "huge.md": b"x" * 5000,
        },
    )
    s3 = reader(endpoint, bucket, max_document_bytes=1000)
    downloads = count_calls(s3, "GetObject")

    documents = s3.load_data()

    assert [d.text for d in documents] == ["plain text"]
    reasons = {skipped.what.rsplit("/", 1)[1]: skipped.reason for skipped in s3.skipped}
    assert reasons["blob.txt"] == "binary content (NUL bytes)"
    assert reasons["photo.jpg"] == "unsupported file type .jpg"
    assert "5,000 bytes is over the per-document limit of 1,000" in reasons["huge.md"]
    assert sorted(downloads) == ["blob.txt", "ok.txt"]  # decided from the listing alone


def test_an_object_rewritten_after_listing_is_skipped_not_mixed_up(
    endpoint: str, bucket: str
) -> None:
    put(endpoint, bucket, {"a.md": b"first", "b.md": b"stays"})
    s3 = reader(endpoint, bucket)
    refs = list(s3.list_documents())

    put(endpoint, bucket, {"a.md": b"second"})
    documents = list(s3.load_documents(refs))

    assert [d.text for d in documents] == ["stays"]
    assert [(s.what, s.reason) for s in s3.skipped] == [
        (f"s3://{bucket}/a.md", "changed since it was listed; the next sync reads it")
    ]


# --- errors -------------------------------------------------------------------------------------


def test_a_missing_bucket_is_not_found(endpoint: str) -> None:
    s3 = reader(endpoint, "aof-no-such-bucket", source_name="kb")

    with pytest.raises(SourceNotFoundError) as caught:
        list(s3.list_documents())

    message = str(caught.value)
    assert "S3 source 'kb'" in message
    assert "'aof-no-such-bucket'" in message
    assert endpoint in message
    assert "check s3.bucket" in message


def test_an_unreachable_endpoint_is_unavailable() -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    s3 = S3Reader(bucket="docs", endpoint=dead, access_key="AKIAEXAMPLE", secret_key="s3cr3t")

    with pytest.raises(SourceUnavailableError, match=r"check s3\.endpoint") as caught:
        list(s3.list_documents())

    assert dead in str(caught.value)


@pytest.fixture
def iam_keys(endpoint: str, bucket: str) -> Iterator[dict[str, dict[str, str]]]:
    """Two IAM users' keys (``reader`` may list and get, ``nobody`` may not), then auth on."""
    iam = admin(endpoint, "iam")
    keys = {}
    for user in (f"reader-{bucket}", f"nobody-{bucket}"):
        iam.create_user(UserName=user)
        keys[user.split("-")[0]] = iam.create_access_key(UserName=user)["AccessKey"]
    iam.put_user_policy(
        UserName=f"reader-{bucket}", PolicyName="read", PolicyDocument=json.dumps(READ_POLICY)
    )
    put(endpoint, bucket, {"a.md": b"alpha"})
    moto_auth(endpoint, "0")
    try:
        yield keys
    finally:
        moto_auth(endpoint, "inf")


def test_credentials_are_checked_and_rejections_are_typed(
    endpoint: str, bucket: str, iam_keys: dict[str, dict[str, str]]
) -> None:
    good = iam_keys["reader"]
    nobody = iam_keys["nobody"]
    cases: list[tuple[str, str, type[Exception], str]] = [
        (good["AccessKeyId"], "not-the-secret", SourceAuthError, "SignatureDoesNotMatch"),
        ("AKIAUNKNOWNKEY000000", good["SecretAccessKey"], SourceAuthError, "InvalidAccessKeyId"),
        (nobody["AccessKeyId"], nobody["SecretAccessKey"], SourcePermissionError, "AccessDenied"),
    ]

    documents = reader(
        endpoint, bucket, access_key=good["AccessKeyId"], secret_key=good["SecretAccessKey"]
    ).load_data()
    assert [d.text for d in documents] == ["alpha"]
    for access_key, secret_key, error, code in cases:
        s3 = reader(endpoint, bucket, access_key=access_key, secret_key=secret_key)
        with pytest.raises(error, match=code) as caught:
            list(s3.list_documents())
        assert access_key not in str(caught.value)
        assert secret_key not in str(caught.value)
        assert secret_key not in repr(s3)


def test_half_a_key_pair_and_a_bad_endpoint_are_refused() -> None:
    with pytest.raises(ValueError, match="give both accessKeySecretRef and secretKeySecretRef"):
        S3Reader(bucket="docs", access_key="AKIAEXAMPLE")
    with pytest.raises(ValueError, match=r"s3\.endpoint must be an http"):
        S3Reader(bucket="docs", endpoint="minio:9000")
