"""Small HTTP helpers for integration tests (real HTTP against the running service)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp

from serve_app.registry.seed import FEATURES

ROW = [120.0, 3.0, 0.4, 2.0, 8.0, 40.0, 100.0, 300.0, 1.0, 0.0, 0.3, 2.0]


def call(url: str, body: Any = None, method: str | None = None, headers: dict | None = None):
    """(status, parsed JSON, headers); `body` bytes are sent as they are."""
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null"), answer.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null"), error.headers


def v2_payload(rows: list[list[float]] | None = None) -> dict:
    rows = rows or [ROW]
    flat = [v for row in rows for v in row]
    return {
        "inputs": [
            {"name": "input", "shape": [len(rows), len(FEATURES)], "datatype": "FP32", "data": flat}
        ]
    }


def records_payload() -> dict:
    return {"dataframe_records": [dict(zip(FEATURES, ROW, strict=True))]}


class Traffic:
    """Concurrent V2 load on one model from a background thread, until the block ends.

    Each request carries a routing key (`acct-<n>`) and one of `rows`; every answer is
    kept as (monotonic time, status, X-Model-Version).
    """

    def __init__(
        self, url: str, model: str, rows: list[list[float]] | None = None, workers: int = 8
    ):
        self.url = f"{url}/v2/models/{model}/infer"
        self.rows = rows or [ROW]
        self.workers = workers
        self.results: list[tuple[float, Any, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def failures(self) -> list:
        return [r for r in self.results if r[1] != 200]

    def versions(self, since: float = 0.0) -> set[str | None]:
        return {v for t, _, v in self.results if t >= since}

    async def _run(self) -> None:
        counter = itertools.count()

        async def worker(session: aiohttp.ClientSession) -> None:
            while not self._stop.is_set():
                n = next(counter)
                payload = v2_payload([self.rows[n % len(self.rows)]])
                try:
                    async with session.post(
                        self.url, json=payload, headers={"x-routing-key": f"acct-{n}"}
                    ) as answer:
                        await answer.read()
                        self.results.append(
                            (time.monotonic(), answer.status, answer.headers.get("x-model-version"))
                        )
                except aiohttp.ClientError as error:
                    self.results.append((time.monotonic(), repr(error), None))

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(self.workers)))
