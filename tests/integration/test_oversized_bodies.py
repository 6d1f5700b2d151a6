"""Oversized bodies get their 413, delivered, in every case: raw sockets, because an HTTP
library hides exactly what is tested here (the interim `100 Continue`, a reset that eats
the answer). Three kinds of client, many times each, against the real service behind
Serve's HAProxy ingress:

- declares an oversized length with `Expect: 100-continue` and waits: it must be told 413,
  not `100 Continue` (it would then start sending what will be refused);
- declares it without `Expect` and streams the whole body;
- declares it with `Expect` but streams the whole body at once (as curl does after 1 s).
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

from serve_app.settings import LimitSettings

LIMIT = LimitSettings().max_body_bytes  # the session's service runs with the default
ROUNDS = 15
MODEL = "fraud-card-eu"


def exchange(url: str, expect: bool, stream: bool) -> tuple[str, str]:
    """(the first status line the server sent, how the exchange ended)."""
    address = urlsplit(url)
    declared = LIMIT + 1
    head = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n"
        + ("Expect: 100-continue\r\n" if expect else "")
        + "\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(head.encode())
        received, ended = b"", "answered"
        if stream:
            try:
                sock.sendall(b" " * declared)  # the server may stop reading: that is fine
            except (BrokenPipeError, ConnectionResetError):
                ended = "closed while sending"
        try:
            while b"\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    return received.decode(errors="replace"), f"{ended}, then EOF"
                received += chunk
        except ConnectionResetError:
            return received.decode(errors="replace"), f"{ended}, then reset"
        except TimeoutError:
            return received.decode(errors="replace"), f"{ended}, then no answer in 10 s"
    return received.split(b"\r\n", 1)[0].decode(errors="replace"), ended


@pytest.mark.parametrize(
    ("expect", "stream"),
    [(True, False), (False, True), (True, True)],
    ids=["expect-and-wait", "no-expect-stream", "expect-and-stream"],
)
def test_an_oversized_body_is_answered_413_every_time(service, expect, stream):
    outcomes = [exchange(service.url, expect, stream) for _ in range(ROUNDS)]
    wrong = [o for o in outcomes if not o[0].startswith("HTTP/1.1 413")]
    assert not wrong, f"{len(wrong)}/{ROUNDS} not answered 413 first: {wrong[:3]}"
    started = time.monotonic()  # and the service still answers at once
    assert exchange_ok(service.url), "the service stopped answering"
    assert time.monotonic() - started < 5


def exchange_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as answer:
        return answer.status == 200
