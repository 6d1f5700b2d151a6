"""A data scientist's self-service step: a model file in, a checked registry version out.

LightGBM files are converted to ONNX and refused unless the graph agrees with
LightGBM; ONNX files are opened and scored before they are logged. Sample rows come
from the model's registered evaluation set when it has one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from serve_app.registry.mlflow_registry import CHAMPION, LABEL_COLUMN, Registry
from serve_app.runtime.convert import ConversionError, convert_checked, load_booster
from serve_app.runtime.onnx import ModelArtifact, ModelLoadError, load_checked

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
) -> int:
    if not model_file.is_file():
        raise RegistrationError(f"{model_file} does not exist")
    evaluation = pd.read_csv(eval_set) if eval_set else None
    known = _registered_eval_rows(registry, name)
    try:
        if model_file.suffix == ".onnx":
            onnx_bytes = model_file.read_bytes()
            features = _features_for_onnx(registry, name, known, evaluation)
            rows = _sample_rows(features, known, evaluation)
            load_checked(ModelArtifact(name, 0, onnx_bytes, features), rows)
        else:
            booster = load_booster(model_file)
            features = tuple(booster.feature_name())
            rows = _sample_rows(features, known, evaluation)
            onnx_bytes = convert_checked(booster, rows)
    except (ConversionError, ModelLoadError) as error:
        raise RegistrationError(str(error)) from None
    return registry.register(
        name,
        onnx_bytes,
        features,
        rows[:3],
        alias=alias,
        eval_set=evaluation,
        tags={"origin": f"serve-app register {model_file.name}"},
    )


def _registered_eval_rows(registry: Registry, name: str) -> pd.DataFrame | None:
    if name not in registry.sweep(f"name = '{name}'"):
        return None
    found = registry.eval_set(name)
    if found is None:
        return None
    rows, _, features = found
    return pd.DataFrame(rows, columns=list(features))


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
) -> np.ndarray:
    for frame in (evaluation, known):
        if frame is not None:
            missing = [f for f in features if f not in frame.columns]
            if missing:
                raise RegistrationError(
                    f"the model's features differ from its evaluation set (missing {missing[:5]})"
                )
            return frame[list(features)].to_numpy(np.float32)[:SAMPLE_ROWS]
    rng = np.random.default_rng(0)
    return rng.normal(0.0, 3.0, size=(SAMPLE_ROWS, len(features))).astype(np.float32)
