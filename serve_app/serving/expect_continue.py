"""`Expect: 100-continue` answered by the router, not by Serve before the router runs.

uvicorn sends `100 Continue` the first time anything calls the request's `receive()`. Under
Serve's direct ingress (HAProxy mode) a replica wraps every request's `receive` in a proxy
(`ASGIDIReceiveProxy`) whose task starts reading at once, to notice a client that goes
away, so a client that declared an oversized body is told to go ahead before the router
has looked at its headers; it then starts sending a body that will be refused, and its
413 is often lost to the reset of a connection closed with unread data
(shared/FIELD-NOTES.md). Serve has no option for this (Ray 2.60).

`install()` makes that proxy wait, for a request that expects 100-continue only, until the
app itself first calls `receive()`. The router checks the declared length first
(`HttpRequest.body`), so an oversized request gets its 413 as the first answer and uvicorn
never sends `100 Continue`; a request the router reads is told to continue as before.
Until then a disconnect goes unnoticed, but the router only reads headers in that time.
It patches a private class of the pinned Ray version: tests/integration/test_oversized_bodies.py
fails if an upgrade changes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ray.serve._private import direct_ingress_http_util

_PATCHED = "_serve_app_defers_expect_continue"


class _FirstRead:
    """Set once the app asks for the body; wakes the proxy's task from any thread."""

    def __init__(self) -> None:
        self.asked = False
        self._wake: Callable[[], None] | None = None

    def ask(self) -> None:
        self.asked = True
        if self._wake is not None:
            self._wake()

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        asked = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: asked.done() or asked.set_result(None))

        self._wake = wake
        if not self.asked:  # asked between the check and here: woken through `wake`
            await asked


def expects_continue(scope: dict) -> bool:
    return any(
        name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"]
    )


def install() -> None:
    """Patch Serve's direct-ingress receive proxy once per process."""
    proxy = direct_ingress_http_util.ASGIDIReceiveProxy
    if getattr(proxy, _PATCHED, False):
        return
    init, fetch, call = proxy.__init__, proxy._fetch_until_disconnect, proxy.__call__

    def __init__(self, scope, receive, user_event_loop) -> None:
        init(self, scope, receive, user_event_loop)
        wants = scope.get("type") == "http" and expects_continue(scope)
        self._serve_app_first_read = _FirstRead() if wants else None

    async def _fetch_until_disconnect(self):
        if self._serve_app_first_read is not None:
            await self._serve_app_first_read.wait()
        return await fetch(self)

    async def __call__(self):
        if self._serve_app_first_read is not None:
            self._serve_app_first_read.ask()
        return await call(self)

    proxy.__init__ = __init__
    proxy._fetch_until_disconnect = _fetch_until_disconnect
    proxy.__call__ = __call__
    setattr(proxy, _PATCHED, True)
