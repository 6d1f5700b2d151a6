"""LightGBM → ONNX, refused unless the converted graph agrees with LightGBM.

Serving only ONNX keeps pickle and LightGBM's own threads off the scoring path; the
parity check makes sure the conversion did not change a single decision.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
PARITY_LEAF_ROWS = 8_192  # at most one row per leaf, trees taken in random order
PARITY_MIXED_ROWS = 512  # rows that mix every feature's values at random


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


def parity_rows(booster: lgb.Booster, seed: int = 0) -> np.ndarray:
    """Rows inside the ranges the model splits on: one reaching each leaf, then random mixes.

    Noise around zero leaves most of a fraud model unvisited (amounts, ages and counts
    split far from zero), so a conversion wrong inside the features' real ranges would
    pass. Reaching every leaf exercises both sides of every split.
    """
    model = booster.dump_model()
    rng = np.random.default_rng(seed)
    values = _feature_values(model)
    paths: list[dict[int, np.ndarray]] = []
    for tree in rng.permutation(len(model["tree_info"])):
        if len(paths) >= PARITY_LEAF_ROWS:
            break
        paths.extend(_leaf_paths(model["tree_info"][tree]["tree_structure"], values, {}))
    paths = paths[:PARITY_LEAF_ROWS] + [{}] * PARITY_MIXED_ROWS
    rows = np.column_stack([rng.choice(v, size=len(paths)) for v in values])
    for row, path in zip(rows, paths, strict=True):
        for feature, allowed in path.items():
            row[feature] = rng.choice(allowed)
    return rows.astype(np.float32)


def _feature_values(model: dict[str, Any]) -> list[np.ndarray]:
    """Per feature, values on both sides of each of its splits (float32-exact, as served)."""
    thresholds: defaultdict[int, list[float]] = defaultdict(list)
    categories: defaultdict[int, set[int]] = defaultdict(set)
    for tree in model["tree_info"]:
        for node in _splits(tree["tree_structure"]):
            if node["decision_type"] == "==":
                categories[node["split_feature"]].update(_categories(node))
            else:
                thresholds[node["split_feature"]].append(node["threshold"])
    infos = model["feature_infos"]
    return [
        _category_values(categories[index])
        if index in categories
        else _numeric_values(np.array(thresholds[index]), infos.get(name, {}))
        for index, name in enumerate(model["feature_names"])
    ]


def _numeric_values(thresholds: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """The feature's observed extremes and the midpoints between its thresholds inside them.

    Outside them lie only LightGBM's 1e300 "missing goes right" thresholds. Never a
    threshold itself: ONNX compares against the threshold rounded to float32, so an input
    equal to that rounded value may legitimately go the other way.
    """
    low, high = info.get("min_value", 0.0), info.get("max_value", 0.0)
    cuts = np.unique(thresholds)
    cuts = cuts[(low <= cuts) & (cuts <= high)]
    values = np.concatenate([[low, high], (cuts[:-1] + cuts[1:]) / 2]).astype(np.float32)
    values = np.unique(values[~np.isin(values, cuts.astype(np.float32))])
    return values.astype(np.float64) if values.size else np.zeros(1)


def _category_values(categories: set[int]) -> np.ndarray:
    """The categories the splits name, and one they never do."""
    return np.array([*sorted(categories), max(categories) + 1], np.float64)


def _categories(node: dict[str, Any]) -> list[int]:
    return [int(c) for c in str(node["threshold"]).split("||")]


def _splits(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "split_feature" in node:
        yield node
        yield from _splits(node["left_child"])
        yield from _splits(node["right_child"])


def _leaf_paths(
    node: dict[str, Any], values: list[np.ndarray], path: dict[int, np.ndarray]
) -> Iterator[dict[int, np.ndarray]]:
    """For each leaf under `node`: per feature split on the way, the values that lead there."""
    if "split_feature" not in node:
        yield path
        return
    feature = node["split_feature"]
    here = path.get(feature, values[feature])
    if node["decision_type"] == "==":
        left = np.isin(here, _categories(node))
    else:
        left = here <= node["threshold"]  # float64, as LightGBM compares
    for child, allowed in (("left_child", here[left]), ("right_child", here[~left])):
        if allowed.size:
            yield from _leaf_paths(node[child], values, {**path, feature: allowed})


def convert_checked(booster: lgb.Booster, sample_rows: np.ndarray) -> bytes:
    """The ONNX graph, checked against LightGBM on `sample_rows` and on `parity_rows`."""
    onnx_bytes = booster_to_onnx(booster)
    onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
    rows = np.vstack([sample_rows.astype(np.float32), parity_rows(booster)])
    check_parity(booster, onnx_bytes, rows)
    return onnx_bytes
