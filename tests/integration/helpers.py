"""Small HTTP helpers for integration tests (real HTTP against the running service)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

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
