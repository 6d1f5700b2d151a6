"""Real onnxruntime and LightGBM on a tiny model: no Ray, no MLflow."""

import lightgbm as lgb
import numpy as np
import pytest

from serve_app.core import rollout as machine
from serve_app.core.stats import roc_auc
from serve_app.registry.seed import FEATURES, synthetic_transactions, train_booster
from serve_app.runtime.convert import (
    ConversionError,
    booster_to_onnx,
    check_parity,
    convert_checked,
    parity_rows,
)
from serve_app.runtime.evaluation import evaluate_on_set
from serve_app.runtime.onnx import ModelArtifact, ModelLoadError, OnnxModel, load_checked
from serve_app.settings import RolloutPolicy


@pytest.fixture(scope="module")
def trained():
    frame, labels = synthetic_transactions("fraud-unit-eu", 3_000)
    return frame, labels, train_booster(frame, labels, rounds=20)


def test_converted_model_matches_lightgbm_and_scores(trained):
    frame, labels, booster = trained
    rows = frame.to_numpy()[:200]
    onnx_bytes = convert_checked(booster, rows)
    model = OnnxModel(ModelArtifact("m", 1, onnx_bytes, FEATURES))
    scores = model.predict(rows)
    assert scores.shape == (200,)
    np.testing.assert_allclose(scores, booster.predict(rows), atol=1e-5)
    assert 0.0 < labels.mean() < 0.15  # a few percent fraud
    assert roc_auc(labels[:200], scores) > 0.7


def test_parity_check_refuses_a_disagreeing_graph(trained):
    frame, _, booster = trained
    other = train_booster(*synthetic_transactions("fraud-other-us", 3_000), rounds=20)
    with pytest.raises(ConversionError, match="disagrees with LightGBM"):
        check_parity(booster, booster_to_onnx(other), frame.to_numpy()[:100])


def test_corrupt_or_mismatched_artifacts_are_refused(trained):
    frame, _, booster = trained
    with pytest.raises(ModelLoadError, match="cannot load"):
        OnnxModel(ModelArtifact("m", 1, b"not an onnx graph", FEATURES))
    with pytest.raises(ModelLoadError, match="signature names 2"):
        OnnxModel(ModelArtifact("m", 1, booster_to_onnx(booster), ("a", "b")))
    good = ModelArtifact("m", 1, booster_to_onnx(booster), FEATURES)
    assert load_checked(good, frame.to_numpy()[:3]).version == 1


def test_auc():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(np.array([0, 1]), np.array([0.9, 0.1])) == 0.0


def test_parity_rows_reach_every_leaf_inside_the_observed_ranges(trained):
    """Both sides of every split are exercised, with values the features really take."""
    _, _, booster = trained
    rows = parity_rows(booster)
    model = booster.dump_model()
    leaves = booster.predict(rows, pred_leaf=True)
    reached = sum(np.unique(leaves[:, tree]).size for tree in range(leaves.shape[1]))
    assert reached == sum(tree["num_leaves"] for tree in model["tree_info"])
    for index, name in enumerate(model["feature_names"]):
        info = model["feature_infos"][name]
        column = rows[:, index]
        assert np.float32(info["min_value"]) <= column.min()
        assert column.max() <= np.float32(info["max_value"])


def test_parity_rows_stay_in_range_beside_missing_value_splits():
    """LightGBM writes "missing goes right" as a 1e300 threshold: no row may go out there."""
    rng = np.random.default_rng(1)
    amount = rng.uniform(100, 200, 5_000)
    kind = rng.integers(0, 8, 5_000).astype(float)
    other = np.where(rng.random(5_000) < 0.3, 0.0, rng.normal(5, 2, 5_000))
    amount[rng.random(5_000) < 0.1] = np.nan
    labels = ((np.nan_to_num(amount) > 150) ^ np.isin(kind, [2, 5]) ^ (other > 5)).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 63, "num_threads": 1}
    data = lgb.Dataset(np.column_stack([amount, kind, other]), labels)
    booster = lgb.train(params, data, 50)
    assert booster.trees_to_dataframe()["threshold"].max() == 1e300
    rows = parity_rows(booster)
    assert rows[:, 0].min() >= 100 and rows[:, 0].max() <= 200
    check_parity(booster, booster_to_onnx(booster), rows)


def test_parity_rows_are_float32_and_repeatable(trained):
    _, _, booster = trained
    rows = parity_rows(booster)
    assert rows.dtype == np.float32 and rows.shape[1] == len(FEATURES)
    np.testing.assert_array_equal(rows, parity_rows(booster))


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (np.zeros(300), "the evaluation set needs both classes"),
        (np.tile([0, 2], 150), "other than 0 and 1"),
        (np.tile(["no", "yes"], 150).astype(object), "'is_fraud' is not numeric"),
    ],
)
def test_evaluation_names_why_a_set_cannot_judge_and_the_gate_refuses(trained, labels, reason):
    frame, _, booster = trained
    model = OnnxModel(ModelArtifact("m", 1, booster_to_onnx(booster), FEATURES))
    result = evaluate_on_set(model, frame.to_numpy()[:300], labels, 0.05)
    assert reason in result.problem
    assert machine.gate(RolloutPolicy(), result, result) == result.problem


def test_evaluation_on_a_good_set_gives_finite_numbers(trained):
    frame, labels, booster = trained
    model = OnnxModel(ModelArtifact("m", 1, booster_to_onnx(booster), FEATURES))
    result = evaluate_on_set(model, frame.to_numpy()[:1000], labels[:1000], 0.05)
    assert result.problem is None
    assert 0.7 < result.auc <= 1.0 and 0.0 < result.recall <= 1.0 and result.p99_ms > 0.0
    assert machine.gate(RolloutPolicy(), result, result) is None
