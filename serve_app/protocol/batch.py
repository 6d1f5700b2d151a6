"""Turn decoded JSON into the one thing every model takes: a float32 [rows, features] batch.

Both wire formats (V2 and MLflow scoring) end here, so the checks and their messages
are the same whichever protocol a client speaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_app.protocol.errors import InvalidInput

NUMERIC_KINDS = "biuf"


@dataclass(frozen=True)
class Decoded:
    """A request in either protocol, decoded: the batch plus what routing may read."""

    batch: np.ndarray
    request_id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


def json_numbers(values: Any, what: str) -> np.ndarray:
    """`values` as numpy infers them (bool, int, uint or float64), refusing strings, nulls,
    nesting errors and ragged rows.

    Kept apart from the float32 cast so that V2 can check a declared datatype against the
    values as sent: after the cast 0.4 and 2**31 no longer say what the client wrote.
    """
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise InvalidInput(f"{what} is ragged: every row needs the same number of values") from None
    if array.dtype.kind not in NUMERIC_KINDS:
        raise InvalidInput(f"{what} must hold only numbers (got non-numeric values)")
    return array


def numeric_array(values: Any, what: str) -> np.ndarray:
    """`values` as a float32 array, refused as `json_numbers` refuses them."""
    return json_numbers(values, what).astype(np.float32, copy=False)


def check_width(batch: np.ndarray, features: Sequence[str], max_rows: int) -> np.ndarray:
    if batch.ndim == 1 and len(features) == 1:
        batch = batch.reshape(-1, 1)
    if batch.ndim == 1 and batch.size == len(features):
        batch = batch.reshape(1, -1)
    if batch.ndim != 2:
        raise InvalidInput(
            f"expected a 2-D batch [rows, {len(features)}], got {batch.ndim} dimension(s)"
        )
    if batch.shape[1] != len(features):
        raise InvalidInput(f"expected {len(features)} features per row, got {batch.shape[1]}")
    if batch.shape[0] == 0:
        raise InvalidInput("the request holds no rows")
    if batch.shape[0] > max_rows:
        raise InvalidInput(f"{batch.shape[0]} rows exceed the limit of {max_rows} per request")
    return batch


def from_rows(rows: Any, features: Sequence[str], max_rows: int, what: str) -> np.ndarray:
    """Rows as lists of values in signature order."""
    if not isinstance(rows, list):
        raise InvalidInput(f"{what} must be a list of rows")
    return check_width(numeric_array(rows, what), features, max_rows)


def from_columns(
    columns: Mapping[str, Any], features: Sequence[str], max_rows: int, what: str
) -> np.ndarray:
    """One named column per feature, each a list of values (or a single value)."""
    missing = [f for f in features if f not in columns]
    if missing:
        raise InvalidInput(f"{what} is missing feature(s): {', '.join(missing[:10])}")
    unknown = sorted(set(columns) - set(features))
    if unknown:
        raise InvalidInput(f"{what} has unknown feature(s): {', '.join(unknown[:10])}")
    arrays = [numeric_array(columns[f], f"feature '{f}'").reshape(-1) for f in features]
    lengths = {a.size for a in arrays}
    if len(lengths) != 1:
        raise InvalidInput(f"{what}: every feature needs the same number of values")
    return check_width(np.stack(arrays, axis=1), features, max_rows)


def from_records(records: Any, features: Sequence[str], max_rows: int, what: str) -> np.ndarray:
    """A list of {feature: value} objects, one per row."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InvalidInput(f"{what} must be a list of objects mapping feature to value")
    if not records:
        raise InvalidInput("the request holds no rows")
    columns = {f: [r.get(f) for r in records] for f in features}
    for i, record in enumerate(records):
        missing = [f for f in features if f not in record]
        if missing:
            raise InvalidInput(f"{what}[{i}] is missing feature(s): {', '.join(missing[:10])}")
        unknown = sorted(set(record) - set(features))
        if unknown:
            raise InvalidInput(f"{what}[{i}] has unknown feature(s): {', '.join(unknown[:10])}")
    return from_columns(columns, features, max_rows, what)
