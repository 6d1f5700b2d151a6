"""The numbers rollout decisions rest on: per-version windows, p99, error rate, PSI, AUC.

Replicas fill `VersionWindow`s as they score and ship them to the control actor, which
merges them per rollout step. Fixed buckets keep a window small and mergeable.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

LATENCY_BUCKETS_MS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100, 250, 500, 1000, 2500, math.inf)
SCORE_BINS = 10
PSI_PSEUDO_COUNT = 0.5  # Laplace smoothing: empty bins in small windows stay finite


def _zeros(n: int) -> list[int]:
    return [0] * n


@dataclass
class VersionWindow:
    """Traffic one version saw in one window."""

    requests: int = 0
    errors: int = 0  # server-side failures attributed to the version
    latency: list[int] = field(default_factory=lambda: _zeros(len(LATENCY_BUCKETS_MS)))
    scores: list[int] = field(default_factory=lambda: _zeros(SCORE_BINS))
    compared: int = 0  # shadow rows scored against the champion's answer
    agreed: int = 0  # ... of which both took the same decision

    def record(
        self, latency_ms: float, scores: np.ndarray | None = None, error: bool = False
    ) -> None:
        self.requests += 1
        self.errors += error
        self.latency[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        if scores is None or not scores.size:
            return
        if scores.size == 1:  # the common case, without numpy's per-call overhead
            self.scores[min(max(int(float(scores.flat[0]) * SCORE_BINS), 0), SCORE_BINS - 1)] += 1
            return
        bins = np.clip((scores.ravel() * SCORE_BINS).astype(int), 0, SCORE_BINS - 1)
        for index, count in enumerate(np.bincount(bins, minlength=SCORE_BINS).tolist()):
            self.scores[index] += count

    def compare(self, champion: np.ndarray, shadow: np.ndarray) -> None:
        """Count the shadow rows whose decision (each at its version's threshold) agreed."""
        self.compared += int(champion.size)
        self.agreed += int(np.sum(champion == shadow))

    def merge(self, other: VersionWindow) -> VersionWindow:
        return VersionWindow(
            self.requests + other.requests,
            self.errors + other.errors,
            [a + b for a, b in zip(self.latency, other.latency, strict=True)],
            [a + b for a, b in zip(self.scores, other.scores, strict=True)],
            self.compared + other.compared,
            self.agreed + other.agreed,
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def p99_ms(self) -> float:
        """Upper edge of the bucket holding the 99th percentile (the last finite edge at most)."""
        total = sum(self.latency)
        if not total:
            return 0.0
        rank = math.ceil(0.99 * total)
        running = 0
        for edge, count in zip(LATENCY_BUCKETS_MS, self.latency, strict=True):
            running += count
            if running >= rank:
                return edge if math.isfinite(edge) else LATENCY_BUCKETS_MS[-2]
        return LATENCY_BUCKETS_MS[-2]


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of `actual` against `expected` (same bins)."""
    if not sum(expected) or not sum(actual):
        return 0.0
    e_total = sum(expected) + PSI_PSEUDO_COUNT * len(expected)
    a_total = sum(actual) + PSI_PSEUDO_COUNT * len(actual)
    value = 0.0
    for e, a in zip(expected, actual, strict=True):
        p = (e + PSI_PSEUDO_COUNT) / e_total
        q = (a + PSI_PSEUDO_COUNT) / a_total
        value += (q - p) * math.log(q / p)
    return value


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC by the rank-sum formula (ties broken by order; no scikit-learn on the serving side)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def recall_at_rate(labels: np.ndarray, scores: np.ndarray, alert_rate: float) -> float:
    """Share of frauds caught when the top `alert_rate` of transactions are flagged."""
    positives = int(np.sum(labels == 1))
    if positives == 0:
        return float("nan")
    flagged = max(1, round(alert_rate * len(scores)))
    top = np.argsort(-scores, kind="mergesort")[:flagged]
    return float(np.sum(labels[top] == 1)) / positives
