"""A guard that fails any socket connection leaving the machine, for integration tests of
components that must work offline (local models): loopback and UNIX sockets stay allowed."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def is_local(address: Any) -> bool:
    """Whether ``address`` (a ``connect`` argument) is a UNIX path or a loopback host."""
    if isinstance(address, (str, bytes)):  # an AF_UNIX path
        return True
    host = address[0]
    try:
        return host in {"localhost", ""} or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def loopback_only(what: str) -> Iterator[None]:
    """While inside, a connection to any other address raises ``AssertionError`` naming
    ``what`` (e.g. "static embeddings") and the address."""
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if not is_local(address):
            raise AssertionError(f"{what} must not reach the network ({address!r})")
        return real(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = real  # type: ignore[method-assign]
