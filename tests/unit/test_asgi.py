"""The router's request and reply read straight from ASGI messages: headers, query, a
body in chunks refused as soon as it is over the limit, the two messages of an answer,
and the lifespan protocol Serve runs on the app."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.protocol.errors import BadRequest, PayloadTooLarge
from serve_app.serving.asgi import App, HttpRequest, Reply, lifespan


def scope(headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"") -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/m/infer",
        "headers": headers or [],
        "query_string": query,
    }


def feeder(*messages: dict):
    """A `receive` that hands out `messages` in order and counts the calls."""
    queue = list(messages)
    calls = []

    async def receive() -> dict:
        calls.append(1)
        return queue.pop(0)

    receive.calls = calls
    return receive


def chunk(body: bytes, more: bool = False) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


def test_the_path_is_the_one_below_the_route_prefix():
    """Serve leaves an app's route prefix in `path` and names it in `root_path`."""
    prefixed = scope() | {"path": "/fraud/v2/models/m/infer", "root_path": "/fraud"}
    assert HttpRequest(prefixed, feeder()).path == "/v2/models/m/infer"
    assert HttpRequest(prefixed | {"path": "/fraud"}, feeder()).path == "/"
    assert HttpRequest(prefixed | {"path": "/fraudster/x"}, feeder()).path == "/fraudster/x"
    assert HttpRequest(scope() | {"root_path": ""}, feeder()).path == "/v2/models/m/infer"


def test_headers_keep_the_first_value_of_each_name():
    raw = [(b"x-request-id", b"first"), (b"content-type", b"text/csv"), (b"x-request-id", b"2")]
    request = HttpRequest(scope(raw), feeder())
    assert request.headers["x-request-id"] == "first"
    assert request.headers.get("content-type") == "text/csv"
    assert request.headers.get("authorization") is None
    assert (request.method, request.path) == ("POST", "/v2/models/m/infer")


def test_query_parameters_are_decoded_once_asked_for():
    request = HttpRequest(scope(query=b"since=2h&since=3h&x=a%20b"), feeder())
    assert request.query("since") == "2h"
    assert request.query("x") == "a b"
    assert request.query("missing") is None


def test_a_body_in_chunks_is_joined():
    receive = feeder(chunk(b'{"a":', more=True), chunk(b"", more=True), chunk(b"1}"))
    body = asyncio.run(HttpRequest(scope(), receive).body(limit=100))
    assert body == b'{"a":1}'
    assert len(receive.calls) == 3


def test_a_declared_length_over_the_limit_is_refused_before_any_read():
    receive = feeder(chunk(b"x" * 10))
    request = HttpRequest(scope([(b"content-length", b"101")]), receive)
    with pytest.raises(PayloadTooLarge, match="limit of 100 bytes"):
        asyncio.run(request.body(limit=100))
    assert receive.calls == []  # nothing read: no `100 Continue` asked of the server


def test_a_streamed_body_is_refused_at_the_first_chunk_over_the_limit():
    receive = feeder(chunk(b"x" * 60, more=True), chunk(b"x" * 60, more=True), chunk(b"x"))
    with pytest.raises(PayloadTooLarge):
        asyncio.run(HttpRequest(scope(), receive).body(limit=100))
    assert len(receive.calls) == 2


def test_a_client_gone_before_its_body_is_a_400_not_a_crash():
    receive = feeder(chunk(b"x", more=True), {"type": "http.disconnect"})
    with pytest.raises(BadRequest, match="closed the connection"):
        asyncio.run(HttpRequest(scope(), receive).body(limit=100))


def test_a_reply_is_a_start_and_a_body_message_with_its_length_and_headers():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    reply = Reply(b'{"ok":true}', 201, {"x-request-id": "r-1"})
    asyncio.run(reply.send(send))
    start, body = sent
    assert start["type"] == "http.response.start" and start["status"] == 201
    assert start["headers"] == [
        (b"content-type", b"application/json"),
        (b"content-length", b"11"),
        (b"x-request-id", b"r-1"),
    ]
    assert body == {"type": "http.response.body", "body": b'{"ok":true}'}


def test_lifespan_answers_startup_and_shutdown_then_returns():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    receive = feeder({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})
    asyncio.run(asyncio.wait_for(lifespan(receive, send), 1.0))
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


def test_the_app_answers_a_request_with_its_reply_and_runs_the_lifespan():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def answer(request: HttpRequest) -> Reply:
        return Reply(await request.body(limit=10), 202, {"x-path": request.path})

    app = App(answer)
    asyncio.run(app(scope(), feeder(chunk(b"hi")), send))
    assert sent[0]["status"] == 202 and (b"x-path", b"/v2/models/m/infer") in sent[0]["headers"]
    assert sent[1]["body"] == b"hi"
    sent.clear()
    life = feeder({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})
    asyncio.run(asyncio.wait_for(app({"type": "lifespan"}, life, send), 1.0))
    assert len(sent) == 2
