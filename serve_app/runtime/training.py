"""LightGBM training as serve-app does it: the seeder and the retraining job share it, and
the parameters a version was trained with are stored with it (`TRAIN_PARAMS_TAG`), so a
retrain uses the serving version's parameters rather than guessing."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd

TRAIN_PARAMS_TAG = "serve_app.train_params"
ROUNDS = "num_boost_round"  # kept in the tag beside LightGBM's own parameters
DEFAULT_PARAMS: dict[str, object] = {
    "objective": "binary",
    "num_leaves": 15,
    "learning_rate": 0.08,
    "min_data_in_leaf": 40,
    "verbose": -1,
    "num_threads": 1,  # 2 threads on 2 busy cores thrash: 10x slower
    "seed": 7,
    ROUNDS: 60,
}


def params_from_tag(text: str | None) -> dict[str, object]:
    """The tag's parameters over the defaults (a version registered before the tag, or
    from a file without them, trains with the defaults)."""
    found = json.loads(text) if text else {}
    if not isinstance(found, dict):
        raise ValueError(f"{TRAIN_PARAMS_TAG} is not a JSON object")
    return {**DEFAULT_PARAMS, **found}


def params_tag(params: dict[str, object]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def train_booster(
    frame: pd.DataFrame,
    labels: np.ndarray,
    rounds: int | None = None,
    params: dict[str, object] | None = None,
) -> lgb.Booster:
    """A binary LightGBM booster; `rounds` overrides the parameters' `num_boost_round`."""
    chosen = dict(params or DEFAULT_PARAMS)
    boost = int(chosen.pop(ROUNDS, DEFAULT_PARAMS[ROUNDS]))
    return lgb.train(chosen, lgb.Dataset(frame, labels), num_boost_round=rounds or boost)
