"""The router's HTTP objects, read straight from ASGI: a request and a reply.

The router is an `@serve.ingress` deployment whose app is a plain ASGI callable, so
Serve hands it `(scope, receive, send)` and builds nothing per request. With a
`__call__(request)` deployment, Serve made a Starlette `Request` for every request and
sent the returned `Response` over ASGI itself; on a fast-lane request that cost more
than scoring a tree model does (benchmarks/results/levers-asgi.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from serve_app.protocol.errors import BadRequest, PayloadTooLarge

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Answer = Callable[["HttpRequest"], Awaitable["Reply"]]

JSON = "application/json"


class HttpRequest:
    """Method, path, headers (lower-case names, the first value of each), query, body."""

    __slots__ = ("_query", "_query_string", "_receive", "headers", "method", "path")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        # ASGI's path includes the root path: under a route prefix other than "/" Serve
        # sets it to the prefix, and the routes are relative to it.
        self.path: str = scope["path"][len(scope.get("root_path", "")) :] or "/"
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        self.headers = headers
        self._query_string: bytes = scope.get("query_string", b"")
        self._query: dict[str, list[str]] | None = None
        self._receive = receive

    def query(self, name: str) -> str | None:
        if self._query is None:
            self._query = parse_qs(self._query_string.decode("latin-1"))
        values = self._query.get(name)
        return values[0] if values else None

    async def body(self, limit: int) -> bytes:
        """The whole body, refused with a 413 as soon as it is known to exceed `limit`."""
        declared = self.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client closed the connection before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Reply:
    """A whole answer: status, body and headers, sent in two ASGI messages."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str = JSON,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers
        self.content_type = content_type

    async def send(self, send: Send) -> None:
        raw = [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode("latin-1")),
        ]
        if self.headers:
            raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


class App:
    """An ASGI 3 app that answers each HTTP request whole with `answer`.

    A class with an async `__call__`, not a bound method: uvicorn, which Serve uses for
    the lifespan protocol, takes anything else for an ASGI 2 app.
    """

    def __init__(self, answer: Answer) -> None:
        self._answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":  # a websocket: refused (the server closes it)
            return None
        reply = await self._answer(HttpRequest(scope, receive))
        await reply.send(send)


async def lifespan(receive: Receive, send: Send) -> None:
    """Serve runs the ASGI lifespan protocol on the app; the router has nothing to do in it."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
