"""A data scientist's self-service step: a model file in, a checked registry version out.

LightGBM files are converted to ONNX and refused unless the graph agrees with
LightGBM; ONNX files are opened and scored before they are logged. Sample rows come
from the model's evaluation set when it has one. An evaluation set is refused here
unless the gate could judge on it: a broken one would otherwise surface only when a
challenger is gated, as a rejection the data scientist never saw coming.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from serve_app.registry.features import LABEL_COLUMN
from serve_app.registry.mlflow_registry import (
    CHAMPION,
    Registry,
    RegistryError,
    calibration_tags,
)
from serve_app.runtime.convert import ConversionError, convert_checked, load_booster, parity_rows
from serve_app.runtime.evaluation import calibrate, label_problem, reference_profile
from serve_app.runtime.onnx import ModelArtifact, ModelLoadError, OnnxModel, load_checked

SAMPLE_ROWS = 256


class RegistrationError(Exception):
    pass


def register_file(
    registry: Registry,
    model_file: Path,
    name: str,
    *,
    alias: str | None = None,
    eval_set: Path | None = None,
    threshold: float | None = None,
) -> int:
    if not model_file.is_file():
        raise RegistrationError(f"{model_file} does not exist")
    evaluation = _read_eval_set(eval_set) if eval_set else None
    known = _registered_eval_rows(registry, name) if evaluation is None else None
    booster_text = None  # an ONNX file has no LightGBM model to explain scores with
    try:
        if model_file.suffix == ".onnx":
            onnx_bytes = model_file.read_bytes()
            features = _features_for_onnx(registry, name, known, evaluation)
            rows = _sample_rows(features, known, evaluation)
            if rows is None:
                rows = _noise_rows(features)
            load_checked(ModelArtifact(name, 0, onnx_bytes, features), rows)
        else:
            booster = load_booster(model_file)
            features = tuple(booster.feature_name())
            rows = _sample_rows(features, known, evaluation)
            if rows is None:
                rows = parity_rows(booster)[:SAMPLE_ROWS]
            onnx_bytes = convert_checked(booster, rows)
            booster_text = booster.model_to_string()
    except (ConversionError, ModelLoadError) as error:
        raise RegistrationError(str(error)) from None
    tags = {"origin": f"serve-app register {model_file.name}"}
    labelled = evaluation if evaluation is not None else known
    calibration, profile = _calibration(registry, name, onnx_bytes, features, labelled, threshold)
    tags.update(calibration)
    return registry.register(
        name,
        onnx_bytes,
        features,
        rows[:3],
        alias=alias,
        # The gate reads every other column as a feature, in file order.
        eval_set=None if evaluation is None else evaluation[[*features, LABEL_COLUMN]],
        tags=tags,
        profile=profile,
        booster_text=booster_text,
    )


def _calibration(
    registry: Registry,
    name: str,
    onnx_bytes: bytes,
    features: tuple[str, ...],
    labelled: pd.DataFrame | None,
    threshold: float | None,
) -> tuple[dict[str, str], str | None]:
    """The version's threshold tags: given, or matched to the champion's alert rate on the
    evaluation set (`labelled`: the new one, else the registered one), with the figures at
    it; and its drift reference profile from the same rows (None without an evaluation set)."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise RegistrationError("the threshold must lie in [0, 1]")
    if labelled is None:
        return ({} if threshold is None else calibration_tags(threshold, None, None)), None
    rows = labelled[list(features)].to_numpy(np.float32)
    labels = labelled[LABEL_COLUMN].to_numpy()
    model = OnnxModel(ModelArtifact(name, 0, onnx_bytes, features))
    champion = champion_model(registry, name, features)
    try:
        found = calibrate(model, rows, labels, champion, threshold)
    except ValueError as error:  # no threshold in [0, 1] flags the champion's share
        raise RegistrationError(f"cannot calibrate a threshold: {error}") from None
    tags = calibration_tags(found.threshold, found.recall, found.false_positive_rate)
    return tags, reference_profile(model, rows, found.threshold)


def champion_model(registry: Registry, name: str, features: tuple[str, ...]) -> OnnxModel | None:
    """The serving champion, opened, when its signature matches (else nothing to match)."""
    info = registry.sweep(f"name = '{name}'").get(name)
    if info is None or CHAMPION not in info.aliases:
        return None
    artifact = registry.fetch(name, info.aliases[CHAMPION]).artifact
    return OnnxModel(artifact) if artifact.features == features else None


def _read_eval_set(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise RegistrationError(f"the evaluation set {path} does not exist")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise RegistrationError(f"the evaluation set {path} is not a readable CSV file") from None


def _registered_eval_rows(registry: Registry, name: str) -> pd.DataFrame | None:
    """The model's registered evaluation set (features and labels), downloaded once."""
    if name not in registry.sweep(f"name = '{name}'"):
        return None
    try:
        found = registry.eval_set(name)
    except RegistryError as error:
        raise RegistrationError(f"{error}: pass --eval-set to replace it") from None
    if found is None:
        return None
    rows, labels, features = found
    return pd.DataFrame(rows, columns=list(features)).assign(**{LABEL_COLUMN: labels})


def _features_for_onnx(
    registry: Registry, name: str, known: pd.DataFrame | None, evaluation: pd.DataFrame | None
) -> tuple[str, ...]:
    """An ONNX graph has no feature names: take them from the eval set or the champion."""
    for frame in (evaluation, known):
        if frame is not None:
            return tuple(c for c in frame.columns if c != LABEL_COLUMN)
    aliases = registry.sweep(f"name = '{name}'").get(name)
    if aliases and CHAMPION in aliases.aliases:
        return registry.fetch(name, aliases.aliases[CHAMPION]).artifact.features
    raise RegistrationError(
        "an ONNX file carries no feature names: pass --eval-set, or register a champion first"
    )


def _sample_rows(
    features: tuple[str, ...], known: pd.DataFrame | None, evaluation: pd.DataFrame | None
) -> np.ndarray | None:
    """Rows from the new evaluation set, else from the registered one, else None."""
    if evaluation is not None:
        _check_eval_set(evaluation, features)
        frame = evaluation
    elif known is not None:
        _require_features(known, features, "registered evaluation set")
        frame = known
    else:
        return None
    return frame[list(features)].to_numpy(np.float32)[:SAMPLE_ROWS]


def _check_eval_set(frame: pd.DataFrame, features: tuple[str, ...]) -> None:
    """Refuse a set the gate could not judge on: 0/1 labels of both classes, numeric features.

    Messages name columns, never values: evaluation sets hold customers' transactions.
    """
    labels = frame[LABEL_COLUMN].to_numpy() if LABEL_COLUMN in frame.columns else None
    problem = label_problem(labels)
    if problem is not None:
        raise RegistrationError(problem)
    _require_features(frame, features, "evaluation set")
    text = [f for f in features if not pd.api.types.is_numeric_dtype(frame[f])]
    if text:
        raise RegistrationError(f"the evaluation set's feature columns {text[:5]} are not numeric")


def _require_features(frame: pd.DataFrame, features: tuple[str, ...], what: str) -> None:
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise RegistrationError(
            f"the model's features differ from its {what} (missing {missing[:5]})"
        )


def _noise_rows(features: tuple[str, ...]) -> np.ndarray:
    """Only an ONNX graph's smoke test: it has no splits to read ranges from."""
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 3.0, size=(SAMPLE_ROWS, len(features))).astype(np.float32)
