"""MLflow's scoring protocol (`/invocations`): the four input layouts `mlflow models serve` takes.

Exactly one of `dataframe_split`, `dataframe_records`, `instances` or `inputs` (plus an
optional `params`); the answer is `{"predictions": [...]}`, plus serve-app's `decisions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serve_app.protocol import batch as batching
from serve_app.protocol.errors import BadRequest, InvalidInput
from serve_app.protocol.v2 import optional_object, parse_json

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def decode_request(body: bytes, features: Sequence[str], max_rows: int) -> batching.Decoded:
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    params = optional_object(payload, "params", "'params'")
    batch = _decode_batch(payload, features, max_rows)
    return batching.Decoded(batch, None, params)


def _decode_batch(payload: dict[str, Any], features: Sequence[str], max_rows: int) -> np.ndarray:
    present = [key for key in FORMATS if key in payload]
    unknown = sorted(set(payload) - set(FORMATS) - {"params"})
    if unknown:
        raise BadRequest(
            f"unknown field(s) {', '.join(unknown)}; expected one of {', '.join(FORMATS)}"
        )
    if len(present) != 1:
        raise BadRequest(f"the request needs exactly one of {', '.join(FORMATS)}")
    key = present[0]
    data = payload[key]
    if key == "dataframe_split":
        return _dataframe_split(data, features, max_rows)
    if key == "dataframe_records":
        return batching.from_records(data, features, max_rows, key)
    if isinstance(data, dict):
        return batching.from_columns(data, features, max_rows, key)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return batching.from_records(data, features, max_rows, key)
    return batching.from_rows(data, features, max_rows, key)


def _dataframe_split(split: Any, features: Sequence[str], max_rows: int) -> np.ndarray:
    if not isinstance(split, dict) or "data" not in split:
        raise BadRequest("dataframe_split must be an object with 'data' (and 'columns')")
    rows = split["data"]
    columns = split.get("columns")
    if columns is None:
        return batching.from_rows(rows, features, max_rows, "dataframe_split.data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest("dataframe_split.columns must be a list of feature names")
    if len(set(columns)) != len(columns):
        raise InvalidInput("dataframe_split.columns names a feature twice")
    batch = batching.numeric_array(rows, "dataframe_split.data")
    if batch.ndim != 2 or batch.shape[1] != len(columns):
        raise InvalidInput(
            f"dataframe_split.data must hold rows of {len(columns)} values, one per column"
        )
    by_name = {name: batch[:, i] for i, name in enumerate(columns)}
    return batching.from_columns(by_name, features, max_rows, "dataframe_split")


def encode_response(scores: np.ndarray, decisions: np.ndarray) -> bytes:
    """`predictions` as `mlflow models serve` answers; `decisions` beside them (MLflow
    clients read `predictions` and ignore the rest)."""
    return orjson.dumps({"predictions": scores.tolist(), "decisions": decisions.tolist()})
