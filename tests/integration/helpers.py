"""Small HTTP helpers for integration tests (real HTTP against the running service)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, NamedTuple

import aiohttp

from serve_app.registry.seed import FEATURES

ROW = [120.0, 3.0, 0.4, 2.0, 8.0, 40.0, 100.0, 300.0, 1.0, 0.0, 0.3, 2.0]


def call(url: str, body: Any = None, method: str | None = None, headers: dict | None = None):
    """(status, parsed JSON, headers); `body` bytes are sent as they are, as JSON unless
    `headers` name another content type (urllib's own default is a form)."""
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    if data is not None:
        headers.setdefault("content-type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
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


class Answer(NamedTuple):
    """One request's outcome: an HTTP status, or the name and text of what went wrong."""

    at: float  # monotonic time the answer (or the error) arrived
    status: int | str
    version: str | None
    retry_after: str | None = None  # the Retry-After of a shed request


class Traffic:
    """Concurrent V2 load on one model from a background thread, until the block ends.

    The one load harness of the suite. Every request ends as an `Answer`: its status, or
    the connection error or timeout that ended it, so a hung or dropped request always
    shows in `failures`. A worker never dies silently, and leaving the block fails the
    test if a worker stopped before it was told to or the thread did not finish.

    Each request carries a routing key (`acct-<n>`) and one of `rows`.
    """

    def __init__(
        self,
        url: str,
        model: str,
        rows: list[list[float]] | None = None,
        workers: int = 8,
        timeout_s: float = 30.0,
        pause_s: float = 0.0,
    ):
        self.url = f"{url}/v2/models/{model}/infer"
        self.rows = rows or [ROW]
        self.workers = workers
        self.timeout_s = timeout_s
        self.pause_s = pause_s  # each worker waits this long between requests
        self.results: list[Answer] = []
        self._stop = threading.Event()
        self._crashed: list[str] = []
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        stopped_early = not self._thread.is_alive()
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 30)
        if exc[0] is not None:  # the test's own failure says more
            return
        assert not self._thread.is_alive(), "the load harness did not stop"
        assert not self._crashed, f"load workers crashed: {self._crashed[:3]}"
        assert not stopped_early, "the load harness stopped before the test ended"
        assert self.results, "the load harness sent no request"

    @property
    def failures(self) -> list[Answer]:
        return [r for r in self.results if r.status != 200]

    def versions(self, since: float = 0.0) -> set[str | None]:
        return {r.version for r in self.results if r.at >= since}

    async def _run(self) -> None:
        counter = itertools.count()

        async def send(session: aiohttp.ClientSession, n: int) -> Answer:
            payload = v2_payload([self.rows[n % len(self.rows)]])
            try:
                async with session.post(
                    self.url, json=payload, headers={"x-routing-key": f"acct-{n}"}
                ) as answer:
                    await answer.read()
                    version = answer.headers.get("x-model-version")
                    retry_after = answer.headers.get("retry-after")
                    return Answer(time.monotonic(), answer.status, version, retry_after)
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                return Answer(time.monotonic(), f"{type(error).__name__}: {error}", None)

        async def worker(session: aiohttp.ClientSession) -> None:
            try:
                while not self._stop.is_set():
                    self.results.append(await send(session, next(counter)))
                    if self.pause_s:
                        await asyncio.sleep(self.pause_s)
            except BaseException as error:  # anything else is the harness's own defect
                self._crashed.append(f"{type(error).__name__}: {error}")
                raise

        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(self.workers)))


def exported(family: str, **labels: str) -> float:
    """The sum of a metric family's samples on Ray's metrics port that carry `labels`."""
    from tests.conftest import METRICS_EXPORT_PORT

    url = f"http://127.0.0.1:{METRICS_EXPORT_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(family + "{") and all(w in line for w in wanted)
    )


def tables_adopted(url: str, timeout: float = 10.0, headers: dict | None = None) -> None:
    """Wait until every live replica serves from the control actor's current table
    (`headers`: the token, when the service closes its reads)."""
    from tests.conftest import wait_until

    def adopted() -> bool:
        status = call(f"{url}/admin/models", headers=headers)[1]
        replicas = status["replicas"].values()
        return bool(replicas) and all(
            r["table_revision"] == status["table_revision"] for r in replicas
        )

    wait_until(adopted, timeout=timeout, what="every replica to adopt the current table")


EXPORT_QUIET_S = 12.0  # longer than Ray's metrics export period (10 s) plus the 1 s flush


def settled(family: str, **labels: str) -> float:
    """`exported(...)` once it has stopped moving: a baseline that earlier tests' counts,
    still on their way through the buffered counters and Ray's exporter, cannot shift."""
    value, since = exported(family, **labels), time.monotonic()
    while time.monotonic() - since < EXPORT_QUIET_S:
        time.sleep(1.0)
        latest = exported(family, **labels)
        if latest != value:
            value, since = latest, time.monotonic()
    return value
