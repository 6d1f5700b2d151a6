"""When a retrain must not happen: the guards between a drift alarm and a new version.

A retrain that learns from a broken label feed or a leaking column would still be gated,
but the gate judges on the new evaluation set, which is cut from the same data: a model
trained on poisoned labels can pass a gate made of poisoned labels. So the data is checked
first, and every refusal carries a reason code (a bounded metric label) and a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serve_app.core.stats import roc_auc
from serve_app.settings import RetrainSettings

# Reason codes: `serve_app_retrain_refusals{reason}` and the `retrain_refused` event.
NO_DATA = "no_data"
TOO_FEW_ROWS = "too_few_rows"
TOO_FEW_FRAUDS = "too_few_frauds"
LABEL_RATE = "implausible_label_rate"
LEAKAGE = "leakage"
COOLDOWN = "cooldown"
BUSY = "concurrency"
REASONS = (NO_DATA, TOO_FEW_ROWS, TOO_FEW_FRAUDS, LABEL_RATE, LEAKAGE, COOLDOWN, BUSY)


@dataclass(frozen=True)
class Refusal:
    reason: str  # one of REASONS
    detail: str


def may_start(
    policy: RetrainSettings,
    now: float,
    last_registered_at: float | None,
    running: int,
    already_running: bool,
) -> Refusal | None:
    """Whether a retrain may start now: one per model at a time, at most
    `max_concurrent` in all, none within `cooldown_s` of the model's last new version."""
    if already_running or running >= policy.max_concurrent:
        what = "this model's" if already_running else f"{running} retrains are"
        return Refusal(BUSY, f"{what} retrain is already running" if already_running else
                       f"{what} running (max_concurrent {policy.max_concurrent})")  # fmt: skip
    if last_registered_at is not None and now - last_registered_at < policy.cooldown_s:
        wait = policy.cooldown_s - (now - last_registered_at)
        return Refusal(COOLDOWN, f"retrained {now - last_registered_at:.0f} s ago; cooldown "
                       f"{policy.cooldown_s:g} s ({wait:.0f} s left)")  # fmt: skip
    return None


def judge_training_set(
    policy: RetrainSettings,
    features: tuple[str, ...],
    rows: np.ndarray,
    labels: np.ndarray,
    reference_label_rate: float | None,
) -> Refusal | None:
    """Whether the labelled rows can make a model worth gating.

    The gate's recall margin (0.05) moves by one fraud in twenty: with fewer than a few
    hundred labelled frauds its verdict is noise. A label rate far from the reference's
    (the serving version's evaluation set) is a feed that broke or was poisoned, more
    often than fraud that tripled overnight. A single feature that ranks the labels almost
    perfectly is a column written after the fact (a chargeback flag, a case id).
    """
    count, frauds = int(labels.size), int(np.sum(labels == 1))
    if not count:
        return Refusal(NO_DATA, "no labelled rows in the data window")
    if count < policy.min_labelled_rows:
        return Refusal(
            TOO_FEW_ROWS, f"{count} labelled rows, fewer than {policy.min_labelled_rows}"
        )
    if frauds < policy.min_frauds:
        return Refusal(TOO_FEW_FRAUDS, f"{frauds} labelled frauds, fewer than {policy.min_frauds}")
    rate = frauds / count
    if reference_label_rate:
        ratio = rate / reference_label_rate
        if not 1 / policy.max_label_rate_ratio <= ratio <= policy.max_label_rate_ratio:
            return Refusal(
                LABEL_RATE,
                f"label rate {rate:.2%} is {ratio:.1f}x the reference's "
                f"{reference_label_rate:.2%} (allowed 1/{policy.max_label_rate_ratio:g}x to "
                f"{policy.max_label_rate_ratio:g}x)",
            )
    leaking = leaking_features(features, rows, labels, policy.leakage_auc)
    if leaking:
        named = ", ".join(f"{name} (AUC {auc:.3f})" for name, auc in leaking)
        return Refusal(LEAKAGE, f"a feature alone predicts the label: {named}")
    return None


def leaking_features(
    features: tuple[str, ...], rows: np.ndarray, labels: np.ndarray, limit: float
) -> list[tuple[str, float]]:
    """Features whose values alone rank frauds above legitimate rows with AUC >= `limit`
    (either direction; missing values ranked lowest)."""
    found = []
    for index, name in enumerate(features):
        column = np.nan_to_num(rows[:, index].astype(np.float64), nan=-np.inf)
        auc = roc_auc(labels, column)
        separation = max(auc, 1.0 - auc)
        if separation >= limit:
            found.append((name, round(separation, 4)))
    return found
