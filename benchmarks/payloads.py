"""Request bodies for each peer's protocol, built once from deterministic transaction rows.

Imports only `serve_app.registry.features` (no LightGBM, pandas or MLflow), so that the
load generator stays a light process.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np

from serve_app.registry.features import FEATURES

Kind = Literal["v2", "mlserver-v2", "mlflow"]
KINDS: tuple[Kind, ...] = ("v2", "mlserver-v2", "mlflow")


def transactions(rows: int, seed: int = 7) -> np.ndarray:
    """Plausible transactions (same ranges as the demo models' training data), float32."""
    rng = np.random.default_rng(seed)
    columns = (
        rng.lognormal(3.5, 1.2, rows),
        rng.integers(0, 24, rows),
        rng.beta(2, 8, rows),
        rng.poisson(1.2, rows),
        rng.poisson(6, rows),
        rng.lognormal(3.5, 0.8, rows),
        rng.exponential(700, rows),
        rng.exponential(30, rows),
        rng.random(rows) < 0.1,
        rng.random(rows) < 0.6,
        rng.beta(1.5, 10, rows),
        rng.gamma(2, 0.5, rows),
    )
    return np.round(np.column_stack(columns).astype(np.float32), 4)


def body(kind: Kind, batch: np.ndarray) -> bytes:
    """One request body scoring `batch` ([rows, features]) in the peer's protocol."""
    rows = [[round(float(x), 4) for x in row] for row in batch]
    if kind == "mlflow":
        document: dict = {"dataframe_split": {"columns": list(FEATURES), "data": rows}}
    else:
        tensor: dict = {
            "name": "input",
            "shape": list(batch.shape),
            "datatype": "FP32",
            "data": [x for row in rows for x in row],
        }
        if kind == "mlserver-v2":
            tensor["parameters"] = {"content_type": "np"}
        document = {"inputs": [tensor]}
    return json.dumps(document, separators=(",", ":")).encode()


def single_row_bodies(kind: Kind, count: int = 64) -> list[bytes]:
    """`count` different single-row bodies, cycled through by the load generator."""
    return [body(kind, row[None, :]) for row in transactions(count)]
