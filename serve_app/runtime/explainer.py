"""TreeSHAP for one registry version, from the LightGBM text model its ONNX graph came from.

onnxruntime cannot explain a tree ensemble, LightGBM can (`pred_contrib=True`), and the
text model is the very booster the registered graph was converted from and checked
against. It is read from text, never from a pickle. LightGBM is imported on the first
explanation only: importing it takes about 2 s here, and most replicas never explain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class ExplainerLoadError(Exception):
    """The version's LightGBM model cannot explain it: it never answers an explanation."""


class TreeExplainer:
    def __init__(self, model_text: str, features: Sequence[str]) -> None:
        import lightgbm as lgb

        try:
            self._booster: Any = lgb.Booster(model_str=model_text)
        except lgb.basic.LightGBMError:
            raise ExplainerLoadError("its LightGBM model text cannot be read") from None
        names = tuple(self._booster.feature_name())
        if names != tuple(features):
            raise ExplainerLoadError("its LightGBM model's features differ from its signature")
        if not _objective(model_text).startswith("binary"):
            raise ExplainerLoadError("its LightGBM model is not a binary classifier")
        self.features = names

    def contributions(self, batch: np.ndarray) -> np.ndarray:
        """[rows, F + 1]: each feature's contribution to the raw score, then the bias."""
        return np.asarray(self._booster.predict(batch, pred_contrib=True, num_threads=1))


def _objective(model_text: str) -> str:
    """The `objective=` line of the model's header (dump_model costs ~15 ms, this ~0)."""
    for line in model_text.splitlines():
        if line.startswith("objective="):
            return line.partition("=")[2]
        if line.startswith("Tree="):  # past the header
            break
    return ""
