"""`serve-app register` on real LightGBM and onnxruntime, against an in-memory registry."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from serve_app.core.drift import ReferenceProfile
from serve_app.registry.features import FEATURES, LABEL_COLUMN
from serve_app.registry.mlflow_registry import EVAL_FPR_TAG, EVAL_RECALL_TAG, THRESHOLD_TAG
from serve_app.registry.register import RegistrationError, register_file
from serve_app.registry.seed import synthetic_transactions, train_booster
from serve_app.runtime import convert
from serve_app.runtime.evaluation import calibrate
from serve_app.runtime.onnx import ModelArtifact, OnnxModel

SECRET = "4111-1111-SECRET"  # a value that must never reach a message


class MemoryRegistry:
    """The part of `Registry` that `register_file` uses, for a model with no versions yet."""

    def __init__(self) -> None:
        self.versions: list[dict] = []

    def sweep(self, filter_string: str = "") -> dict:
        return {}

    def register(
        self, name, onnx_bytes, features, example, *, alias=None, eval_set=None, tags=None, **_
    ):
        self.versions.append(
            {
                "features": features,
                "example": example,
                "eval_set": eval_set,
                "tags": tags or {},
                "profile": _.get("profile"),
                "booster_text": _.get("booster_text"),
            }
        )
        return len(self.versions)


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    return train_booster(*synthetic_transactions("fraud-register-eu", 3_000), rounds=20)


@pytest.fixture(scope="module")
def model_file(booster, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.txt"
    booster.save_model(str(path))
    return path


@pytest.fixture
def labelled() -> pd.DataFrame:
    frame, labels = synthetic_transactions("fraud-register-eu", 1_000, "eval")
    return frame.assign(**{LABEL_COLUMN: labels})


def _csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "eval.csv"
    frame.to_csv(path, index=False)
    return path


def test_an_eval_set_is_stored_in_signature_order(model_file, labelled, tmp_path):
    """The gate reads every non-label column as a feature, in file order."""
    shuffled = labelled[[LABEL_COLUMN, *reversed(FEATURES)]].assign(transaction_id=1)
    registry = MemoryRegistry()
    register_file(registry, model_file, "fraud-x", eval_set=_csv(tmp_path, shuffled))
    stored = registry.versions[0]["eval_set"]
    assert list(stored.columns) == [*FEATURES, LABEL_COLUMN]


def _without_label(frame):
    return frame.drop(columns=[LABEL_COLUMN])


def _one_class(frame):
    return frame.assign(**{LABEL_COLUMN: 0})


def _labels_0_2(frame):
    return frame.assign(**{LABEL_COLUMN: frame[LABEL_COLUMN] * 2})


def _text_labels(frame):
    return frame.assign(**{LABEL_COLUMN: np.where(frame[LABEL_COLUMN] == 1, "yes", "no")})


def _blank_label(frame):
    return frame.assign(**{LABEL_COLUMN: frame[LABEL_COLUMN].where(frame.index != 3)})


def _missing_feature(frame):
    return frame.drop(columns=["amount"])


def _text_feature(frame):
    return frame.assign(amount=frame["amount"].astype(object).where(frame.index != 5, SECRET))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_without_label, "has no 'is_fraud' label column"),
        (_one_class, "needs both classes"),
        (_labels_0_2, "other than 0 and 1"),
        (_text_labels, "'is_fraud' is not numeric"),
        (_blank_label, "other than 0 and 1"),
        (_missing_feature, "missing ['amount']"),
        (_text_feature, "['amount'] are not numeric"),
    ],
)
def test_an_eval_set_the_gate_could_not_judge_on_is_refused(
    model_file, labelled, tmp_path, damage, reason
):
    registry = MemoryRegistry()
    with pytest.raises(RegistrationError, match="evaluation set") as refused:
        register_file(registry, model_file, "fraud-x", eval_set=_csv(tmp_path, damage(labelled)))
    assert reason in str(refused.value)
    assert SECRET not in str(refused.value)
    assert registry.versions == []


def test_an_onnx_file_with_an_unlabelled_eval_set_is_refused(booster, labelled, tmp_path):
    """An ONNX graph takes its feature names from the set, so the label must be told apart."""
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(convert.booster_to_onnx(booster))
    eval_set = _csv(tmp_path, _without_label(labelled))
    with pytest.raises(RegistrationError, match="has no 'is_fraud' label column"):
        register_file(MemoryRegistry(), onnx_file, "fraud-x", eval_set=eval_set)


def _shifted(booster: lgb.Booster, feature: str, factor: float) -> lgb.Booster:
    """The same model with `feature`'s thresholds scaled: it differs only inside their range."""
    index = booster.feature_name().index(feature)
    lines, splits = [], []
    for line in booster.model_to_string().splitlines():
        if line.startswith("tree_sizes="):
            continue  # byte offsets of the trees, which the edit moves
        if line.startswith("split_feature="):
            splits = [int(v) for v in line.split("=")[1].split()]
        elif line.startswith("threshold="):
            values = [float(v) for v in line.split("=")[1].split()]
            moved = (v * factor if f == index else v for f, v in zip(splits, values, strict=True))
            line = "threshold=" + " ".join(repr(v) for v in moved)
        lines.append(line)
    return lgb.Booster(model_str="\n".join(lines) + "\n")


def test_without_eval_set_a_conversion_wrong_inside_the_feature_ranges_is_refused(
    booster, model_file, monkeypatch
):
    """Account ages split in the hundreds of days: noise around zero never reaches them."""
    wrong = convert.booster_to_onnx(_shifted(booster, "account_age_days", 1.3))
    noise = np.random.default_rng(0).normal(0.0, 3.0, size=(256, len(FEATURES)))
    convert.check_parity(booster, wrong, noise.astype(np.float32))  # noise cannot tell

    monkeypatch.setattr(convert, "booster_to_onnx", lambda _: wrong)
    with pytest.raises(RegistrationError, match="disagrees with LightGBM"):
        register_file(MemoryRegistry(), model_file, "fraud-x")


def test_without_eval_set_the_input_example_lies_in_the_feature_ranges(booster, model_file):
    registry = MemoryRegistry()
    register_file(registry, model_file, "fraud-x")
    example = registry.versions[0]["example"]
    infos = booster.dump_model()["feature_infos"]
    low = np.array([infos[f]["min_value"] for f in FEATURES], np.float32)
    high = np.array([infos[f]["max_value"] for f in FEATURES], np.float32)
    assert example.shape == (3, len(FEATURES))
    assert np.all((low <= example) & (example <= high))


def test_register_refuses_a_missing_eval_set_file(model_file, tmp_path):
    with pytest.raises(RegistrationError, match="does not exist"):
        register_file(MemoryRegistry(), model_file, "fraud-x", eval_set=tmp_path / "none.csv")


def test_a_first_version_is_tagged_with_its_threshold_and_figures_at_it(
    model_file, labelled, tmp_path
):
    registry = MemoryRegistry()
    register_file(registry, model_file, "fraud-x", eval_set=_csv(tmp_path, labelled))
    tags = registry.versions[0]["tags"]
    assert float(tags[THRESHOLD_TAG]) == 0.5  # no champion to match: the default
    assert 0.0 < float(tags[EVAL_RECALL_TAG]) <= 1.0
    assert 0.0 <= float(tags[EVAL_FPR_TAG]) < 0.5


def test_a_version_with_an_eval_set_carries_its_drift_reference(model_file, labelled, tmp_path):
    registry = MemoryRegistry()
    register_file(registry, model_file, "fraud-x", eval_set=_csv(tmp_path, labelled))
    profile = ReferenceProfile.from_json(registry.versions[0]["profile"])
    assert profile.names[:-1] == FEATURES and profile.rows == len(labelled)
    assert profile.threshold == float(registry.versions[0]["tags"][THRESHOLD_TAG])
    register_file(registry, model_file, "fraud-x")  # no eval set: no reference
    assert registry.versions[1]["profile"] is None


def test_a_given_threshold_is_kept_and_checked(model_file, labelled, tmp_path):
    registry = MemoryRegistry()
    register_file(registry, model_file, "fraud-x", eval_set=_csv(tmp_path, labelled), threshold=0.2)
    assert float(registry.versions[0]["tags"][THRESHOLD_TAG]) == 0.2
    register_file(registry, model_file, "fraud-x", threshold=0.3)  # no eval set: just the tag
    assert registry.versions[1]["tags"][THRESHOLD_TAG] == "0.3"
    with pytest.raises(RegistrationError, match=r"threshold must lie in \[0, 1\]"):
        register_file(registry, model_file, "fraud-x", threshold=1.5)


def test_a_new_version_matches_the_champions_alert_rate(booster, labelled):
    """The threshold moves with the version: a recalibrated model flags as many
    transactions as the champion did, not as many as 0.5 happens to give."""
    rows = labelled[list(FEATURES)].to_numpy(np.float32)
    champion = OnnxModel(ModelArtifact("m", 1, convert.booster_to_onnx(booster), FEATURES, 0.3))
    squashed = _Scaled(champion, 0.5)  # the same ranking, scores halved
    found = calibrate(squashed, rows, labelled[LABEL_COLUMN].to_numpy(), champion)
    champion_rate = np.mean(champion.predict(rows).astype(np.float64) >= 0.3)
    assert found.alert_rate == pytest.approx(champion_rate, abs=2 / len(rows))
    assert found.threshold == pytest.approx(0.15, abs=0.02)


class _Scaled:
    def __init__(self, model, factor: float) -> None:
        self._model, self._factor = model, factor

    def predict(self, rows):
        return (self._model.predict(rows) * self._factor).astype(np.float32)


def test_a_lightgbm_file_is_registered_with_its_text_model_and_an_onnx_file_without(
    booster, model_file, labelled, tmp_path
):
    """The text model is what explanations are computed from; an ONNX file has none."""
    registry = MemoryRegistry()
    register_file(registry, model_file, "fraud-x", eval_set=_csv(tmp_path, labelled))
    text = registry.versions[0]["booster_text"]
    assert text == booster.model_to_string()
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(convert.booster_to_onnx(booster))
    register_file(registry, onnx_file, "fraud-x", eval_set=_csv(tmp_path, labelled))
    assert registry.versions[1]["booster_text"] is None
