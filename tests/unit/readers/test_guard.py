"""AddressPolicy: which URLs a reader may connect to (the SSRF guard).

Real: the policy, ``ipaddress``, the system resolver for ``localhost`` (``/etc/hosts``), and
an ``HttpClient`` talking to a real server on 127.0.0.1. Nothing stands in; no address other
than the loopback is ever connected to (literal IPs are classified without connecting).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from site_server import LocalServer, Reply, serve

from aof_index_readers.errors import BlockedAddressError, SourceError
from aof_index_readers.guard import AddressPolicy
from aof_index_readers.http import HttpClient


@pytest.fixture
def server() -> Iterator[LocalServer]:
    yield from serve()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:8080/x", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://localhost/", "loopback"),
        ("http://2130706433/", "loopback"),  # 127.0.0.1 written as one decimal number
        ("http://10.1.2.3/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://100.64.0.1/", "private"),  # carrier-grade NAT
        ("http://[fd00::1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
    ],
)
def test_blocks_non_public_addresses_by_default(url: str, kind: str) -> None:
    with pytest.raises(BlockedAddressError, match=f"a {kind} address"):
        AddressPolicy().check(url)


@pytest.mark.parametrize(
    "url", ["http://93.184.215.14/", "https://8.8.8.8:443/dns", "http://[2606:4700::1111]/"]
)
def test_public_addresses_pass(url: str) -> None:
    AddressPolicy().check(url)


def test_message_carries_the_hint() -> None:
    policy = AddressPolicy(hint="list the host in allowedDomains")
    with pytest.raises(BlockedAddressError) as caught:
        policy.check("http://10.0.0.5/wiki")
    assert "http://10.0.0.5/wiki resolves to 10.0.0.5" in str(caught.value)
    assert "(list the host in allowedDomains)" in str(caught.value)


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.1:8080/"),
        (["127.0.0.1"], "http://[::ffff:127.0.0.1]/"),
        (["localhost"], "http://localhost:9000/"),
        (["LocalHost."], "http://localhost/"),
        (["10.0.0.0/8"], "http://10.20.30.40/"),
        (["::1"], "http://[::1]/"),
        (["169.254.169.254"], "http://169.254.169.254/"),
    ],
)
def test_explicitly_allowed_hosts_addresses_and_networks(allow: list[str], url: str) -> None:
    AddressPolicy(allow=allow).check(url)


def test_allowance_is_exactly_what_was_listed() -> None:
    policy = AddressPolicy(allow=["10.0.0.0/8", "127.0.0.1"])
    for url in ("http://192.168.1.1/", "http://127.0.0.2/", "http://169.254.169.254/"):
        with pytest.raises(BlockedAddressError):
            policy.check(url)


def test_an_allowed_host_name_allows_itself_and_its_subdomains() -> None:
    policy = AddressPolicy(allow=["internal.test", "*.corp.test"])
    policy.check("http://internal.test/")
    policy.check("http://wiki.internal.test/")
    policy.check("http://a.b.corp.test/")
    with pytest.raises(BlockedAddressError):  # a suffix that is not a whole label
        AddressPolicy(allow=["host", "localhost.test"]).check("http://localhost/")


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://127.0.0.1/", "data:,hi"]
)
def test_rejects_non_http_schemes(url: str) -> None:
    with pytest.raises(SourceError, match="only http and https") as caught:
        AddressPolicy(allow=["127.0.0.1"]).check(url)
    assert not isinstance(caught.value, BlockedAddressError)


def test_rejects_urls_without_host_or_with_a_bad_port() -> None:
    with pytest.raises(SourceError, match="has no host"):
        AddressPolicy().check("http:///path")
    with pytest.raises(SourceError, match="invalid port"):
        AddressPolicy().check("http://example.com:99999/")


def test_client_with_policy_refuses_loopback_and_sends_nothing(server: LocalServer) -> None:
    server.route("/", Reply(200, "internal"))
    client = HttpClient("API", "feed", addresses=AddressPolicy())
    with pytest.raises(BlockedAddressError):
        client.get(server.url("/"))
    assert server.requests == []
    allowed = HttpClient("API", "feed", addresses=AddressPolicy(allow=["127.0.0.1"]))
    assert allowed.get(server.url("/")).text == "internal"
