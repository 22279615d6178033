"""A local HTTP server speaking OpenAI's chat-completions and embeddings APIs and Cohere's
v2 embed and rerank APIs, standing in for the hosted services (which cannot be reached
from tests).
It records requests, answers chats with a fixed text (or a text chosen per request by
``reply_for``), can stall (to exercise timeouts) or fail chats with an HTTP error
(``status``), and embeds text by hashing its words into a fixed-size vector, so lexically
close texts get close vectors."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OpenAIStub:
    """``with OpenAIStub(reply="...") as stub:`` serves on ``stub.base_url``.

    ``reply_for(body)``, when given, chooses each chat reply from the request body (the
    ``messages`` list); ``status`` other than 200 answers every chat with that HTTP status
    and an OpenAI-style error body. Both can be changed while the stub runs.
    """

    def __init__(
        self,
        reply: str = "Check the logs [1].",
        delay_s: float = 0.0,
        *,
        reply_for: Callable[[dict[str, Any]], str] | None = None,
        status: int = 200,
    ) -> None:
        self.reply = reply
        self.delay_s = delay_s
        self.reply_for = reply_for
        self.status = status
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                if self.path.endswith("/embeddings"):
                    self._send(_embeddings(body))
                    return
                if self.path.endswith("/v2/embed"):
                    self._send(_cohere_embed(body))
                    return
                if self.path.endswith("/v2/rerank"):
                    self._send(*_cohere_rerank(body))
                    return
                time.sleep(stub.delay_s)
                if stub.status != 200:
                    error = {"message": "stub failure", "type": "server_error", "code": None}
                    self._send({"error": error}, status=stub.status)
                    return
                reply = stub.reply_for(body) if stub.reply_for is not None else stub.reply
                payload = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "stub"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                self._send(payload)

            def _send(self, payload: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The ``/v1`` base URL clients should use."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


DIMENSIONS = 64


def hashed_vector(text: str) -> list[float]:
    """Bag of words hashed into ``DIMENSIONS`` buckets, L2-normalised."""
    vector = [0.0] * DIMENSIONS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIMENSIONS] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = []
    for i, text in enumerate(inputs):
        vector = hashed_vector(str(text))
        if body.get("encoding_format") == "base64":  # the openai SDK's default
            packed = struct.pack(f"<{len(vector)}f", *vector)
            embedding: Any = base64.b64encode(packed).decode()
        else:
            embedding = vector
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }


def _cohere_embed(body: dict[str, Any]) -> dict[str, Any]:
    texts = [str(t) for t in body["texts"]]
    return {
        "id": "embed-stub",
        "response_type": "embeddings_by_type",
        "embeddings": {"float": [hashed_vector(t) for t in texts]},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}},
    }


def _cohere_rerank(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Cohere's documented ``POST /v2/rerank``: ``model``, ``query``, ``documents`` (strings)
    and optional ``top_n`` in; ``results`` (``index``, ``relevance_score``), best first, out.
    The relevance is the cosine of the hashed word vectors, so shared words rank higher."""
    missing = [k for k in ("model", "query", "documents") if k not in body]
    if missing:
        return {"message": f"missing required field(s): {', '.join(missing)}"}, 400
    query = hashed_vector(str(body["query"]))
    scores = [
        sum(a * b for a, b in zip(query, hashed_vector(str(doc)), strict=True))
        for doc in body["documents"]
    ]
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    top_n = body.get("top_n")
    if top_n is not None:
        order = order[: int(top_n)]
    results = [{"index": i, "relevance_score": scores[i]} for i in order]
    meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    return {"id": "rerank-stub", "results": results, "meta": meta}, 200
