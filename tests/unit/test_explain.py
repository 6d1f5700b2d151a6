"""Reason codes from real LightGBM models: the TreeSHAP arithmetic, the ranking, the
explainer's checks, the rate limit and the explain wire, without Ray."""

from __future__ import annotations

import math

import lightgbm as lgb
import numpy as np
import orjson
import pytest

from serve_app.core.explain import sigmoid, top_contributions
from serve_app.core.ratelimit import TokenBucket, retry_after_header
from serve_app.protocol import explain as wire
from serve_app.protocol.errors import InvalidInput
from serve_app.registry.seed import FEATURES, synthetic_transactions, train_booster
from serve_app.runtime.convert import convert_checked
from serve_app.runtime.explainer import ExplainerLoadError, TreeExplainer
from serve_app.runtime.onnx import ModelArtifact, OnnxModel
from serve_app.serving import http


@pytest.fixture(scope="module")
def trained() -> tuple[lgb.Booster, np.ndarray]:
    frame, labels = synthetic_transactions("fraud-explain-eu", 2_000, "explain")
    return train_booster(frame, labels, rounds=30), frame.to_numpy()[:50]


def test_contributions_and_bias_add_up_to_the_raw_score_and_the_served_probability(trained):
    booster, rows = trained
    explainer = TreeExplainer(booster.model_to_string(), FEATURES)
    explained = top_contributions(explainer.contributions(rows), FEATURES, 3)
    raw = np.array([row.raw_score for row in explained])
    np.testing.assert_allclose(raw, booster.predict(rows, raw_score=True), atol=1e-9)
    served = OnnxModel(ModelArtifact("m", 1, convert_checked(booster, rows), FEATURES))
    np.testing.assert_allclose(sigmoid(raw), served.predict(rows), atol=1e-4)
    assert all(len(row.contributions) == 3 for row in explained)
    assert len({row.bias for row in explained}) == 1, "the bias is the model's, not the row's"


def test_the_top_k_are_the_largest_by_magnitude_and_ties_keep_signature_order():
    contributions = np.array([[0.1, -0.7, 0.3, 0.3, 0.7, -2.0]])  # five features, then bias
    names = ["a", "b", "c", "d", "e"]
    (row,) = top_contributions(contributions, names, 4)
    assert [c.feature for c in row.contributions] == ["b", "e", "c", "d"]
    assert [c.value_contribution for c in row.contributions] == [-0.7, 0.7, 0.3, 0.3]
    assert row.bias == -2.0 and row.raw_score == pytest.approx(-1.3)
    (everything,) = top_contributions(contributions, names, 5)  # the raw score ignores k
    assert everything.raw_score == row.raw_score


def test_a_contribution_matrix_or_k_that_does_not_fit_the_features_is_refused():
    with pytest.raises(ValueError, match="shape"):
        top_contributions(np.zeros((2, 3)), ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="top_k"):
        top_contributions(np.zeros((2, 4)), ["a", "b", "c"], 4)


def test_an_explainer_needs_readable_text_of_a_binary_model_with_the_signatures_features(
    trained,
):
    booster, rows = trained
    text = booster.model_to_string()
    with pytest.raises(ExplainerLoadError, match="features differ"):
        TreeExplainer(text, tuple(reversed(FEATURES)))
    with pytest.raises(ExplainerLoadError, match="cannot be read"):
        TreeExplainer("not a model", FEATURES)
    regression = lgb.train(
        {"objective": "regression", "verbose": -1, "num_threads": 1},
        lgb.Dataset(rows, np.arange(len(rows), dtype=float), feature_name=list(FEATURES)),
        3,
    )
    with pytest.raises(ExplainerLoadError, match="binary"):
        TreeExplainer(regression.model_to_string(), FEATURES)


def test_the_bucket_takes_rows_refills_at_its_rate_and_says_how_long_to_wait():
    bucket = TokenBucket(rate=10.0, burst=20.0, now=0.0)
    assert bucket.take(20, now=0.0) == 0.0
    assert bucket.take(5, now=0.0) == pytest.approx(0.5)  # refused: nothing taken
    assert bucket.take(5, now=0.5) == 0.0
    assert bucket.take(1, now=0.5) == pytest.approx(0.1)
    assert bucket.take(20, now=100.0) == 0.0, "refills up to the burst, not beyond"
    assert bucket.take(1, now=100.0) > 0
    assert bucket.take(21, now=1_000.0) == math.inf
    assert [retry_after_header(s) for s in (0.01, 1.0, 1.2)] == ["1", "1", "2"]
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, burst=1.0, now=0.0)


def test_top_k_comes_from_the_parameters_bounded_by_the_features():
    assert wire.top_k({}, 12, 5) == 5
    assert wire.top_k({}, 3, 5) == 3, "the default is capped by the model's features"
    assert wire.top_k({"top_k": 12}, 12, 5) == 12
    for bad in (0, 13, 2.5, True, "3"):
        with pytest.raises(InvalidInput, match="top_k"):
            wire.top_k({"top_k": bad}, 12, 5)


def test_the_answer_holds_scores_and_contributions_by_feature_name():
    contributions = np.array([[0.25, -0.5, -1.0]])
    rows = top_contributions(contributions, ["amount", "hour"], 1)
    body = orjson.loads(wire.encode_response("m", 3, "req-1", np.array([0.2]), rows))
    assert body == {
        "model_name": "m",
        "model_version": "3",
        "id": "req-1",
        "rows": [
            {
                "score": pytest.approx(0.2),
                "raw_score": -1.25,
                "bias": -1.0,
                "contributions": [{"feature": "hour", "value_contribution": -0.5}],
            }
        ],
    }


def test_explain_routes_with_and_without_a_version():
    assert http.match("POST", "/v2/models/fraud-card-eu/explain") == http.Match(
        "v2_explain", "fraud-card-eu", None
    )
    assert http.match("POST", "/v2/models/m/versions/3/explain").version == "3"
    with pytest.raises(Exception, match="not allowed"):
        http.match("GET", "/v2/models/m/explain")
