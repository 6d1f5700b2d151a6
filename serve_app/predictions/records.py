"""What the prediction log records: one scored request, expanded into one record per row.

The request path hands the writer a `LoggedBatch` (references to arrays it already has,
about a microsecond to build); rows, hashes and encodings are made in the writer's thread,
never on the event loop. Every sink writes the same fields (`FIELDS`, schema `SCHEMA`):
Parquet as columns (features as a struct), Kafka as one JSON object per row.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

SCHEMA = 1  # bump on any change to FIELDS or their meaning
FIELDS = (
    "schema",
    "request_id",
    "row",
    "time",
    "model",
    "version",
    "role",  # champion | challenger | shadow
    "lane",  # "fast" or the pool's name
    "key_hash",  # keyed hash of the routing key, never the key; None without a key
    "features",  # {feature name: value}
    "score",
    "threshold",
    "decision",  # score >= threshold
    "latency_ms",  # the request's, the same for every row of it
    "cache",  # "hit" | "miss" for models with a prediction cache, else None
)
ROLES = ("champion", "challenger", "shadow", "pinned")  # pinned: a version asked for by number
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True, slots=True)
class LoggedBatch:
    """One scored request as the router saw it."""

    request_id: str
    time: float  # Unix seconds
    model: str
    version: int
    role: str
    lane: str
    routing_key: str | None  # raw: hashed by the writer, never written
    features: tuple[str, ...]
    rows: np.ndarray  # float32 [n, len(features)]
    scores: np.ndarray  # float [n]
    threshold: float
    latency_ms: float
    cache: str | None = None

    @property
    def size(self) -> int:
        return int(self.scores.shape[0])

    @property
    def day(self) -> int:
        """The prediction-date cohort: days since the Unix epoch, UTC."""
        return int(self.time // SECONDS_PER_DAY)


def decisions(scores: np.ndarray, threshold: float) -> np.ndarray:
    """score >= threshold, compared in float64 as every sink and the store compare it
    (numpy would compare float32 scores against a float32-rounded threshold)."""
    return scores.astype(np.float64) >= threshold


def key_hash(secret: bytes, model: str, routing_key: str | None) -> str | None:
    """A keyed hash of a routing key (often a card or account number): stable for one
    secret, so the same customer can be followed across records, never reversible."""
    if routing_key is None:
        return None
    message = model.encode() + b"\0" + routing_key.encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def rows_of(batch: LoggedBatch, secret: bytes) -> Iterator[dict[str, Any]]:
    """The batch's records as dicts in `FIELDS` order, one per row."""
    hashed = key_hash(secret, batch.model, batch.routing_key)
    values = batch.rows.tolist()
    scores = batch.scores.tolist()
    for index, (row, score) in enumerate(zip(values, scores, strict=True)):
        yield {
            "schema": SCHEMA,
            "request_id": batch.request_id,
            "row": index,
            "time": batch.time,
            "model": batch.model,
            "version": batch.version,
            "role": batch.role,
            "lane": batch.lane,
            "key_hash": hashed,
            "features": dict(zip(batch.features, row, strict=True)),
            "score": score,
            "threshold": batch.threshold,
            "decision": score >= batch.threshold,
            "latency_ms": batch.latency_ms,
            "cache": batch.cache,
        }


def to_json(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)
