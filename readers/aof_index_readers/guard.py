"""Refuse URLs that resolve to loopback, link-local or private addresses (SSRF guard).

A crawler following links, or an API endpoint from a manifest, must not be able to reach the
cluster's internal services or the cloud metadata endpoint (169.254.169.254). The URL and API
readers check every URL, and every redirect hop, with an :class:`AddressPolicy` before
connecting. Hosts (with their subdomains), addresses or networks listed in ``allow`` are let
through explicitly (tests allow ``127.0.0.1``). Only ``http`` and ``https`` URLs pass.

The check resolves the host name once before the request; a name whose DNS answer changes
between the check and the connection (DNS rebinding) is not covered.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

from aof_index_readers.errors import BlockedAddressError, SourceError, SourceUnavailableError

__all__ = ["AddressPolicy"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _kind(ip: _Address) -> str | None:
    """Why ``ip`` is not a public address, or ``None`` when it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _kind(ip.ipv4_mapped)
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "private"
    return None


def _port(parts: SplitResult) -> int:
    try:
        port = parts.port
    except ValueError as exc:
        raise SourceError(f"{parts.geturl()!r} has an invalid port ({exc})") from exc
    return port or (443 if parts.scheme == "https" else 80)


class AddressPolicy:
    """Which hosts a reader may connect to: public addresses, plus what ``allow`` names.

    Args:
        allow: host names (case-insensitive; a name allows its subdomains too, as
            ``allowedDomains`` does), IP addresses or networks in CIDR form (``10.0.0.0/8``)
            that may be reached even though they are not public.
        hint: how a user allows a blocked host, appended to the error message.

    Example:
        >>> AddressPolicy(allow=["127.0.0.1"]).check("http://127.0.0.1:8080/")
    """

    def __init__(self, allow: Sequence[str] = (), *, hint: str = "") -> None:
        self.hosts: set[str] = set()
        self.networks: list[_Network] = []
        for entry in (raw.strip() for raw in allow):
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                name = entry.lower().rstrip(".").lstrip("*.")  # "*.corp.example" = "corp.example"
                if name:
                    self.hosts.add(name)
        self.hint = hint

    def check(self, url: str) -> None:
        """Raise :class:`BlockedAddressError` unless ``url`` may be fetched."""
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"}:
            raise SourceError(f"{url!r}: only http and https URLs can be read")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise SourceError(f"{url!r} has no host")
        if any(host == name or host.endswith(f".{name}") for name in self.hosts):
            return
        for ip in self._resolve(host, _port(parts)):
            if self._allowed(ip):
                continue
            kind = _kind(ip)
            if kind is not None:
                raise BlockedAddressError(
                    f"{url} resolves to {ip}, a {kind} address; readers refuse loopback, "
                    f"link-local and private addresses unless allowed explicitly"
                    + (f" ({self.hint})" if self.hint else "")
                )

    def _allowed(self, ip: _Address) -> bool:
        """Whether ``ip`` (or the IPv4 address an IPv4-mapped IPv6 one carries) is allowed."""
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(ip in net or (mapped is not None and mapped in net) for net in self.networks)

    @staticmethod
    def _resolve(host: str, port: int) -> list[_Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise SourceUnavailableError(
                f"cannot resolve host {host!r}: {exc.strerror}; check the URL and DNS"
            ) from exc
        return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
