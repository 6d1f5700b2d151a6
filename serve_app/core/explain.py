"""Reason codes: a TreeSHAP contribution matrix turned into each row's top-k features.

Pure numpy, so the ranking and the arithmetic an analyst relies on (contributions plus
the bias add up to the raw score) are unit-tested without LightGBM or a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Contribution:
    feature: str
    value_contribution: float  # the feature's share of the raw score (log-odds)


@dataclass(frozen=True)
class RowExplanation:
    raw_score: float  # log-odds: bias plus every feature's contribution
    bias: float  # the expected raw score (the model's average log-odds)
    contributions: tuple[Contribution, ...]  # the top k, largest magnitude first


def top_contributions(
    contributions: np.ndarray, features: Sequence[str], top_k: int
) -> list[RowExplanation]:
    """Per row, the `top_k` features with the largest contributions by magnitude.

    `contributions` is LightGBM's `pred_contrib` output for a binary model: [rows, F + 1],
    one column per feature then the bias. The raw score sums every column, not only the
    top k, so it is the model's own raw score whatever k is. Ties keep the signature's
    feature order, so the same row always gets the same reasons.
    """
    matrix = np.asarray(contributions, dtype=np.float64)
    width = len(features)
    if matrix.ndim != 2 or matrix.shape[1] != width + 1:
        raise ValueError(f"expected contributions of shape [rows, {width + 1}], got {matrix.shape}")
    if not 1 <= top_k <= width:
        raise ValueError(f"top_k must lie in [1, {width}]")
    per_feature, bias = matrix[:, :width], matrix[:, width]
    raw = matrix.sum(axis=1)
    order = np.argsort(-np.abs(per_feature), axis=1, kind="stable")[:, :top_k]
    return [
        RowExplanation(
            float(raw[row]),
            float(bias[row]),
            tuple(Contribution(features[i], float(per_feature[row, i])) for i in order[row]),
        )
        for row in range(matrix.shape[0])
    ]


def sigmoid(raw: np.ndarray) -> np.ndarray:
    """A binary model's probability from its raw score (log-odds)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(raw, dtype=np.float64)))
