"""LightGBM → ONNX, refused unless the converted graph agrees with LightGBM.

Serving only ONNX keeps pickle and LightGBM's own threads off the scoring path; the
parity check makes sure the conversion did not change a single decision.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
from onnx import TensorProto, helper
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType

from serve_app.runtime.onnx import ModelArtifact, OnnxModel

TARGET_OPSET = 15
PARITY_TOLERANCE = 1e-4
OUTPUT = "probability"


class ConversionError(Exception):
    pass


def load_booster(path: Path) -> lgb.Booster:
    """A Booster from a file saved by `Booster.save_model`, text or binary."""
    try:
        return lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as error:
        raise ConversionError(f"{path} is not a LightGBM model file: {error}") from None


def booster_to_onnx(booster: lgb.Booster) -> bytes:
    if not str(booster.dump_model().get("objective", "")).startswith("binary"):
        raise ConversionError("only binary classifiers are served (objective 'binary')")
    width = booster.num_feature()
    graph = convert_lightgbm(
        booster,
        initial_types=[("input", FloatTensorType([None, width]))],
        zipmap=False,
        target_opset=TARGET_OPSET,
    )
    return _single_probability_output(graph).SerializeToString()


def _single_probability_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the `label` and `probabilities` outputs by one `probability` [N] column.

    The positive-class probability is all a fraud score needs; a single 1-D output also
    keeps MLflow's ONNX pyfunc (and so `mlflow models serve`) able to frame the answer,
    and avoids onnxmltools' static `[1]` label shape that makes onnxruntime warn.
    """
    graph = model.graph
    graph.initializer.append(helper.make_tensor("positive_class", TensorProto.INT64, [], [1]))
    graph.node.append(
        helper.make_node("Gather", ["probabilities", "positive_class"], [OUTPUT], axis=1)
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N"]))
    return model


def check_parity(booster: lgb.Booster, onnx_bytes: bytes, rows: np.ndarray) -> float:
    """Largest absolute difference between LightGBM and ONNX probabilities on `rows`."""
    names = tuple(booster.feature_name())
    expected = booster.predict(rows, num_threads=1)
    actual = OnnxModel(ModelArtifact("parity", 0, onnx_bytes, names)).predict(rows)
    worst = float(np.max(np.abs(expected - actual)))
    if worst > PARITY_TOLERANCE:
        raise ConversionError(
            f"the ONNX conversion disagrees with LightGBM by {worst:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e}); refusing to register it"
        )
    return worst


def convert_checked(booster: lgb.Booster, sample_rows: np.ndarray) -> bytes:
    onnx_bytes = booster_to_onnx(booster)
    onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
    check_parity(booster, onnx_bytes, sample_rows.astype(np.float32))
    return onnx_bytes
