"""An HTTP proxy in front of a real server that can hold one kind of request: a fault
drill's way to stop a client exactly between two of its calls (for example the control
actor between moving `champion` and removing `challenger`).

Everything else passes through unchanged, one upstream connection per request.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Hold:
    """Requests matching (method, path) wait here until `release()`; they are then
    answered 503 without reaching the server: as if it had failed at that moment."""

    def __init__(self, method: str, path: str) -> None:
        self.method, self.path = method, path
        self.arrived = threading.Event()
        self._released = threading.Event()
        self.held = 0

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and path.split("?")[0].endswith(self.path)

    def wait(self) -> None:
        self.held += 1
        self.arrived.set()
        self._released.wait(timeout=300)

    def release(self) -> None:
        self._released.set()


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self._upstream = (target.hostname, target.port)
        self._holds: list[Hold] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                hold = next((h for h in proxy._holds if h.matches(self.command, self.path)), None)
                if hold is not None:
                    hold.wait()
                    self.send_error(503, "held by the fault drill")
                    return
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    upstream.request(self.command, self.path, body, headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                except OSError:
                    self.send_error(502, "the server behind the fault proxy is away")
                    return
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _forward

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def hold(self, method: str, path: str) -> Hold:
        hold = Hold(method, path)
        self._holds.append(hold)
        return hold

    def clear(self) -> None:
        for hold in self._holds:
            hold.release()
        self._holds.clear()

    def close(self) -> None:
        self.clear()
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    thread = threading.Thread(target=proxy._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.close()
        thread.join(timeout=10)
