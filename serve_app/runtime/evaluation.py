"""Score a version on the model's evaluation set: the evidence a gate decision rests on."""

from __future__ import annotations

import time

import numpy as np

from serve_app.core.rollout import EvalResult
from serve_app.core.stats import DECISION_THRESHOLD, recall_at_rate, roc_auc
from serve_app.runtime.onnx import OnnxModel

TIMED_ROWS = 300
MIN_ALERT_RATE = 0.005


def alert_rate(model: OnnxModel, rows: np.ndarray) -> float:
    """The share of transactions the model flags at the decision threshold."""
    return max(float(np.mean(model.predict(rows) >= DECISION_THRESHOLD)), MIN_ALERT_RATE)


def single_row_p99_ms(model: OnnxModel, rows: np.ndarray) -> float:
    timings = []
    for row in rows[:TIMED_ROWS]:
        started = time.perf_counter()
        model.predict(row.reshape(1, -1))
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(timings, 99))


def evaluate_on_set(
    model: OnnxModel, rows: np.ndarray, labels: np.ndarray, rate: float
) -> EvalResult:
    scores = model.predict(rows)
    return EvalResult(
        auc=roc_auc(labels, scores),
        recall=recall_at_rate(labels, scores, rate),
        p99_ms=single_row_p99_ms(model, rows),
    )
