"""Real onnxruntime and LightGBM on a tiny model: no Ray, no MLflow."""

import numpy as np
import pytest

from serve_app.core.stats import roc_auc
from serve_app.registry.seed import FEATURES, synthetic_transactions, train_booster
from serve_app.runtime.convert import (
    ConversionError,
    booster_to_onnx,
    check_parity,
    convert_checked,
)
from serve_app.runtime.onnx import ModelArtifact, ModelLoadError, OnnxModel, load_checked


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
