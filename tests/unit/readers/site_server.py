"""A real HTTP server on 127.0.0.1 for the HTTP client, URL and API reader tests.

:class:`LocalServer` is a ``http.server.ThreadingHTTPServer`` in a background thread (one
thread per connection, HTTP/1.1 keep-alive). Tests register what each path answers: a fixed
:class:`Reply`, a list of replies given in turn (the last one repeats), or a function of the
request. Every request is recorded (method, path with query, headers, body) and the server
tracks the largest number of requests it was serving at once, so tests can check what a
client sent and how many requests it had in flight.

It stands in for the hosted services at their HTTP boundary: status codes, headers
(``Retry-After``, ``X-RateLimit-*``, ``ETag``, ``Link``, ``Location``), chunked or
``Content-Length`` bodies, gzip ``Content-Encoding``, as RFC 9110/9111/9112 describe them.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["LocalServer", "Recorded", "Reply", "closed_port", "serve"]


@dataclass(frozen=True)
class Reply:
    """One answer: status, body, headers; ``chunked`` streams the body without a length."""

    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    gzip: bool = False
    content_type: str = "text/plain; charset=utf-8"

    def payload(self) -> bytes:
        data = self.body.encode("utf-8") if isinstance(self.body, str) else self.body
        return gzip.compress(data) if self.gzip else data


@dataclass(frozen=True)
class Recorded:
    """A request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    host: str

    @property
    def route(self) -> str:
        """The path without its query."""
        return urlsplit(self.path).path


Answer = Reply | Sequence[Reply] | Callable[[Recorded], Reply]


class LocalServer:
    """Routes, a request log and an in-flight gauge around a ``ThreadingHTTPServer``.

    ``gate`` (a :class:`threading.Barrier`) makes every request on a gated path wait until
    that many requests are in flight together (or the barrier times out), so a client that
    may send that many at once is seen doing so; ``hold`` then keeps each gated request
    open a little longer, so one that sends more than it may is seen too.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: threading.Barrier | None = None
        self.gated: Callable[[str], bool] = lambda path: False
        self.hold = 0.0
        self._lock = threading.Lock()
        self._turns: dict[str, int] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        """The absolute URL of ``path`` (``host="localhost"`` names the same server)."""
        return f"http://{host}:{self.port}{path}"

    def route(self, path: str, answer: Answer) -> None:
        """Answer requests for ``path`` (query ignored) with ``answer``."""
        self.routes[path] = answer
        self._turns.pop(path, None)

    def hits(self, path: str) -> list[Recorded]:
        """The requests received for ``path`` (query ignored)."""
        return [request for request in self.requests if request.route == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- called by the handler ------------------------------------------------------------

    def answer(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None and self.gated(request.route):
                with contextlib.suppress(threading.BrokenBarrierError):
                    self.gate.wait()
                time.sleep(self.hold)
            return self._reply(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _reply(self, request: Recorded) -> Reply:
        answer = self.routes.get(request.route)
        if answer is None:
            return Reply(404, f"no route {request.route}")
        if isinstance(answer, Reply):
            return answer
        if callable(answer):
            return answer(request)
        with self._lock:
            turn = self._turns.get(request.route, 0)
            self._turns[request.route] = turn + 1
        return answer[min(turn, len(answer) - 1)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner: LocalServer = self.server.owner  # type: ignore[attr-defined]
        request = Recorded(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            host=self.headers.get("Host", ""),
        )
        reply = owner.answer(request)
        payload = reply.payload()
        self.send_response(reply.status)
        headers = {"Content-Type": reply.content_type, **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        if reply.gzip:
            self.send_header("Content-Encoding", "gzip")
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif "Content-Length" not in reply.headers:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "HEAD" or reply.status in {204, 304}:
            return
        if reply.chunked:
            for start in range(0, len(payload), 1024):
                piece = payload[start : start + 1024]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(payload)


def serve() -> Iterator[LocalServer]:
    """A started :class:`LocalServer`, closed afterwards (wrap in a pytest fixture)."""
    server = LocalServer()
    try:
        yield server
    finally:
        server.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
