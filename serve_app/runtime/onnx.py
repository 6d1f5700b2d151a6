"""An onnxruntime session for one registry version: the only module that imports onnxruntime.

Sessions use one intra-op thread: a tree model scores a row in tens of microseconds,
and on a small machine several replicas share the cores, so threads only contend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

PROBABILITY_OUTPUTS = ("probability", "probabilities")
RUNTIME = f"onnxruntime {ort.__version__}"  # named in every answer: which environment scored


class ModelLoadError(Exception):
    """The artifact is not a usable model: it never takes traffic."""


@dataclass(frozen=True)
class ModelArtifact:
    """What a replica needs to serve a version, shipped from the control actor."""

    name: str
    version: int
    onnx_bytes: bytes
    features: tuple[str, ...]
    threshold: float = 0.5  # the version's alert threshold (registry tag serve_app.threshold)


class OnnxModel:
    def __init__(self, artifact: ModelArtifact) -> None:
        self.name = artifact.name
        self.version = artifact.version
        self.features = artifact.features
        self.threshold = artifact.threshold
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                artifact.onnx_bytes, options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises several unrelated types
            raise ModelLoadError(f"onnxruntime cannot load the artifact: {error}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"expected one tensor input, the graph has {len(inputs)}")
        self._input = inputs[0].name
        width = inputs[0].shape[-1] if inputs[0].shape else None
        if isinstance(width, int) and width != len(self.features):
            raise ModelLoadError(
                f"the graph takes {width} features, the signature names {len(self.features)}"
            )
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = next((o for o in PROBABILITY_OUTPUTS if o in outputs), outputs[-1])

    @property
    def runtime(self) -> str:
        """This process's onnxruntime, read where the model runs.

        Not a module constant: Serve pickles a deployment class by value, and a constant
        its methods use would carry the building process's value into the replica.
        """
        return RUNTIME

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Fraud probability (positive class) per row."""
        (result,) = self._session.run([self._output], {self._input: batch})
        result = np.asarray(result)
        return result[:, -1] if result.ndim == 2 else result.reshape(-1)


def check_scores(model: OnnxModel, example: np.ndarray) -> None:
    """Score a known-good input and refuse a model whose answers are not probabilities."""
    try:
        scores = model.predict(example)
    except Exception as error:
        raise ModelLoadError(f"scoring the input example failed: {error}") from None
    if scores.shape != (example.shape[0],):
        raise ModelLoadError(f"expected {example.shape[0]} scores, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)) or scores.min() < 0.0 or scores.max() > 1.0:
        raise ModelLoadError("the input example scored outside [0, 1]")


def load_checked(artifact: ModelArtifact, example: Sequence[Sequence[float]]) -> OnnxModel:
    model = OnnxModel(artifact)
    check_scores(model, np.asarray(example, dtype=np.float32).reshape(-1, len(model.features)))
    return model
