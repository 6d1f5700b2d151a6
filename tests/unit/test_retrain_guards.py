"""The guards between a drift alarm and a new version, and the time-based holdout."""

import numpy as np
import pytest

from serve_app.core.retrain_guards import (
    BUSY,
    COOLDOWN,
    LABEL_RATE,
    LEAKAGE,
    NO_DATA,
    TOO_FEW_FRAUDS,
    TOO_FEW_ROWS,
    judge_training_set,
    leaking_features,
    may_start,
)
from serve_app.retraining.dataset import TrainingSet
from serve_app.settings import RetrainSettings

POLICY = RetrainSettings(min_labelled_rows=1_000, min_frauds=40, cooldown_s=3_600)
FEATURES = ("amount", "merchant_risk", "is_foreign")


def data(rows: int, rate: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < rate).astype(int)
    x = np.column_stack(
        [rng.lognormal(3, 1, rows), rng.beta(2, 8, rows) + 0.05 * labels, rng.random(rows) < 0.1]
    ).astype(np.float32)
    return x, labels


def test_a_sound_training_set_passes():
    x, y = data(5_000, 0.04)
    assert judge_training_set(POLICY, FEATURES, x, y, reference_label_rate=0.04) is None


@pytest.mark.parametrize(
    ("rows", "rate", "reference", "reason"),
    [
        (0, 0.04, 0.04, NO_DATA),
        (900, 0.04, 0.04, TOO_FEW_ROWS),
        (5_000, 0.005, None, TOO_FEW_FRAUDS),  # 25 frauds: the gate's margin is noise
        (5_000, 0.5, 0.04, LABEL_RATE),  # a feed labelling half the traffic fraud
        (5_000, 0.04, 0.4, LABEL_RATE),  # ... or a tenth of what it was
    ],
)
def test_refusals_name_their_reason(rows, rate, reference, reason):
    x, y = data(rows, rate)
    refusal = judge_training_set(POLICY, FEATURES, x, y, reference_label_rate=reference)
    assert refusal is not None and refusal.reason == reason, refusal


def test_a_feature_that_alone_ranks_the_labels_is_leakage_in_either_direction():
    x, y = data(5_000, 0.04)
    x[:, 2] = 1 - y  # a "not charged back" flag: perfectly inverted
    refusal = judge_training_set(POLICY, FEATURES, x, y, reference_label_rate=0.04)
    assert refusal.reason == LEAKAGE and "is_foreign (AUC 1.000)" in refusal.detail
    x[:, 2] = np.where(np.random.default_rng(1).random(5_000) < 0.9, y, 1 - y)  # 10% noise
    assert leaking_features(FEATURES, x, y, POLICY.leakage_auc) == []


def test_one_retrain_per_model_a_bound_on_all_and_a_cooldown():
    assert may_start(POLICY, 10_000.0, None, 0, False) is None
    assert may_start(POLICY, 10_000.0, None, 0, True).reason == BUSY
    assert may_start(POLICY, 10_000.0, None, POLICY.max_concurrent, False).reason == BUSY
    assert may_start(POLICY, 10_000.0, 9_000.0, 0, False).reason == COOLDOWN
    assert may_start(POLICY, 10_000.0, 6_000.0, 0, False) is None


def test_the_holdout_is_the_newest_rows_never_a_sample():
    times = np.arange(100, dtype=float)
    found = TrainingSet(("a",), times[:, None].astype(np.float32), times.astype(int) % 2, times)
    train, holdout = found.split(0.25)
    assert len(train) == 75 and len(holdout) == 25
    assert train.times.max() < holdout.times.min()
    assert holdout.window == (75.0, 99.0)


def test_after_a_drift_the_holdout_is_the_newest_rows_of_the_new_traffic():
    """A holdout straddling the onset calibrates the threshold on a mix of old and new
    traffic; the demo's retrained version then flagged half the champion's share live."""
    times = np.arange(100, dtype=float)
    found = TrainingSet(("a",), times[:, None].astype(np.float32), times.astype(int) % 2, times)
    train, holdout = found.split(0.25, onset=60.0)  # 40 rows since the onset
    assert len(holdout) == 10 and holdout.window == (90.0, 99.0)
    assert len(train) == 90 and train.times.max() < holdout.times.min()
    assert found.split(0.25, onset=-1.0)[1].window == (75.0, 99.0)  # onset before every row
