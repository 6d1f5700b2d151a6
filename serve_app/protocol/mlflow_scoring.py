"""MLflow's scoring protocol (`/invocations`) as `mlflow models serve` takes it.

A JSON body has exactly one of `dataframe_split`, `dataframe_records`, `instances` or
`inputs` (plus an optional `params`); a CSV body has a header row naming the features. The
content type is checked as MLflow's scoring server checks it: UTF-8 only, no parameters
but `charset` (MLflow 1.x's `format=pandas-split` gets MLflow's own 415), JSON or CSV.
The answer is `{"predictions": [...]}`, plus serve-app's `decisions`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serve_app.protocol import batch as batching
from serve_app.protocol.errors import BadRequest, InvalidInput, UnsupportedMediaType
from serve_app.protocol.v2 import optional_object, parse_json

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON = "application/json"
CSV = "text/csv"
PROTOCOL_CHANGE = (
    "MLflow 2.0 changed the scoring protocol: send application/json with one of "
    f"{', '.join(FORMATS)} (for MLflow 1.x's format=pandas-split, use dataframe_split)"
)


def media_type(content_type: str | None) -> str:
    """`application/json` or `text/csv`, or the 415 MLflow's scoring server answers."""
    if not content_type:
        raise UnsupportedMediaType(f"a Content-Type header is needed: {JSON} or {CSV}")
    mime, *pairs = [part.strip() for part in content_type.split(";")]
    parameters = {key.strip().lower(): value for key, _, value in (p.partition("=") for p in pairs)}
    if parameters.pop("charset", "utf-8").strip().strip('"').lower() != "utf-8":
        raise UnsupportedMediaType("the scoring server only supports UTF-8")
    if parameters:
        names = ", ".join(sorted(parameters))
        raise UnsupportedMediaType(
            f"unrecognized content type parameters: {names}. {PROTOCOL_CHANGE}"
        )
    if mime.lower() not in (JSON, CSV):
        raise UnsupportedMediaType(f"unsupported content type '{mime[:64]}': send {JSON} or {CSV}")
    return mime.lower()


def decode_request(
    body: bytes, features: Sequence[str], max_rows: int, content_type: str | None = JSON
) -> batching.Decoded:
    if media_type(content_type) == CSV:
        return batching.Decoded(decode_csv(body, features, max_rows), None, {})
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


def decode_csv(body: bytes, features: Sequence[str], max_rows: int) -> np.ndarray:
    """A header row naming every feature once, then one row of numbers per record."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the CSV body is not valid UTF-8") from None
    try:  # newline="": the csv module reads line ends itself, quoted ones included
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:  # found by the fuzz run: was a 500
        raise BadRequest(f"the CSV body is malformed ({error})") from None
    while rows and not rows[-1]:
        rows.pop()  # a trailing newline
    if not rows:
        raise InvalidInput("the CSV body is empty: it needs a header row and rows")
    header, records = [name.strip() for name in rows[0]], rows[1:]
    if len(set(header)) != len(header):
        raise InvalidInput("the CSV header names a feature twice")
    if len(records) > max_rows:
        raise InvalidInput(f"{len(records)} rows exceed the limit of {max_rows} per request")
    values = []
    for index, record in enumerate(records, 1):
        if len(record) != len(header):
            raise InvalidInput(
                f"CSV row {index} has {len(record)} values, the header {len(header)}"
            )
        try:
            values.append([float(value) for value in record])
        except ValueError:
            raise InvalidInput(f"CSV row {index} must hold only numbers") from None
    batch = np.asarray(values, dtype=np.float32).reshape(len(records), len(header))
    if not np.isfinite(batch).all():  # as in JSON, which has no NaN or infinity
        raise InvalidInput("CSV rows must hold only finite numbers")
    columns = {name: batch[:, i] for i, name in enumerate(header)}
    return batching.from_columns(columns, features, max_rows, "the CSV header")


def encode_response(scores: np.ndarray, decisions: np.ndarray) -> bytes:
    """`predictions` as `mlflow models serve` answers; `decisions` beside them (MLflow
    clients read `predictions` and ignore the rest)."""
    return orjson.dumps({"predictions": scores.tolist(), "decisions": decisions.tolist()})
