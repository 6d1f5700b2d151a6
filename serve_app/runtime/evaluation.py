"""Score a version on the model's evaluation set: the evidence a gate decision rests on."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from serve_app.core.drift import build_profile
from serve_app.core.quality import rates_at_threshold, threshold_for_alert_rate
from serve_app.core.rollout import EvalResult
from serve_app.core.stats import recall_at_rate, roc_auc
from serve_app.predictions.records import decisions
from serve_app.registry.features import LABEL_COLUMN
from serve_app.runtime.onnx import OnnxModel

TIMED_ROWS = 300
FIRST_THRESHOLD = 0.5  # a model's first version, with no champion to match
MIN_ALERT_RATE = 0.005


def alert_rate(model: OnnxModel, rows: np.ndarray) -> float:
    """The share of transactions the model flags at its own alert threshold."""
    return max(float(np.mean(decisions(model.predict(rows), model.threshold))), MIN_ALERT_RATE)


@dataclass(frozen=True)
class Calibration:
    """A new version's alert threshold and its evaluation-set figures at it."""

    threshold: float
    recall: float | None
    false_positive_rate: float | None
    alert_rate: float


def calibrate(
    model: OnnxModel,
    rows: np.ndarray,
    labels: np.ndarray,
    champion: OnnxModel | None,
    threshold: float | None = None,
) -> Calibration:
    """The threshold as given, else the one at which the version flags as many of the
    evaluation set as the champion does at its own (the review team's capacity does not
    change with the model), else 0.5 for a first version."""
    scores = model.predict(rows)
    if threshold is None and champion is not None:
        rate = float(np.mean(decisions(champion.predict(rows), champion.threshold)))
        threshold = threshold_for_alert_rate(scores, rate)
    if threshold is None:
        threshold = FIRST_THRESHOLD
    recall, fpr, rate = rates_at_threshold(labels, scores.astype(np.float64), threshold)
    return Calibration(threshold, recall, fpr, rate)


def single_row_p99_ms(model: OnnxModel, rows: np.ndarray) -> float:
    timings = []
    for row in rows[:TIMED_ROWS]:
        started = time.perf_counter()
        model.predict(row.reshape(1, -1))
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(timings, 99))


def label_problem(labels: np.ndarray | None) -> str | None:
    """Why these labels cannot judge a version, or None (`None` labels: no label column).

    AUC and recall need 0/1 labels of both classes; anything else makes them NaN or
    silently wrong (a 2 would count as a legitimate transaction).
    """
    if labels is None:
        return f"the evaluation set has no '{LABEL_COLUMN}' label column"
    if labels.dtype.kind not in "biuf":
        return f"the evaluation set's label column '{LABEL_COLUMN}' is not numeric"
    if not np.isin(labels, (0, 1)).all():
        return (
            f"the evaluation set's label column '{LABEL_COLUMN}' holds values other than "
            "0 and 1 (or blanks)"
        )
    if np.unique(labels).size < 2:
        return f"the evaluation set needs both classes ({LABEL_COLUMN} 0 and 1)"
    return None


def evaluate_on_set(
    model: OnnxModel, rows: np.ndarray, labels: np.ndarray, rate: float
) -> EvalResult:
    """The version's numbers on the set, or an unusable result naming why the set cannot judge.

    Bad labels become a reason the gate refuses on, not an exception in the control loop.
    """
    problem = label_problem(labels)
    if problem is not None:
        return EvalResult.unusable(problem)
    scores = model.predict(rows)
    return EvalResult(
        auc=roc_auc(labels, scores),
        recall=recall_at_rate(labels, scores, rate),
        p99_ms=single_row_p99_ms(model, rows),
    )


def reference_profile(model: OnnxModel, rows: np.ndarray, threshold: float) -> str:
    """The version's drift reference from its evaluation rows, as JSON: feature and score
    deciles, missing rates, and the alert rate expected at its threshold."""
    return build_profile(model.features, rows, model.predict(rows), threshold).to_json()
