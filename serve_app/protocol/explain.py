"""The explain endpoint's wire: a V2 inference request in (decoded by `v2.py`), reason codes out.

The answer is V2-like JSON, one entry per row: the served score, the raw score (log-odds)
it came from, the bias, and the top-k feature contributions. It names features, never
their values: explain payloads hold the same card and account data as scoring ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import orjson

from serve_app.core.explain import RowExplanation
from serve_app.protocol.errors import InvalidInput

TOP_K = "top_k"  # the V2 request parameter naming how many features each row gets


def top_k(parameters: Mapping[str, Any], features: int, default: int) -> int:
    """The request's `top_k`: an integer in [1, features]; absent: `default` (capped)."""
    value = parameters.get(TOP_K)
    if value is None:
        return min(default, features)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= features:
        raise InvalidInput(f"parameter '{TOP_K}' must be an integer from 1 to {features}")
    return value


def encode_response(
    model: str,
    version: int,
    request_id: str,
    scores: np.ndarray,
    rows: Sequence[RowExplanation],
) -> bytes:
    answer = {
        "model_name": model,
        "model_version": str(version),
        "id": request_id,
        "rows": [
            {"score": float(score), **asdict(row)}
            for score, row in zip(scores.tolist(), rows, strict=True)
        ],
    }
    return orjson.dumps(answer)
