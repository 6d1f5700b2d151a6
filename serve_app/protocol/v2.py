"""Open Inference Protocol (KServe V2) over REST: decode requests, encode answers.

Two input layouts are accepted: one tensor of shape [N, F] (any name that is not a
feature name), or one input per feature named as in the model signature. Tensors may
come as JSON `data` or through the binary tensor extension that `tritonclient` uses
by default (`Inference-Header-Content-Length` plus raw little-endian bytes).

JSON `data` must fit the tensor's declared `datatype` (see `_unfit`): a client that
declares INT8 and sends 0.4 has a bug we should report, not a value to round. Binary
data needs no such check: its bytes are read as the declared datatype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serve_app.protocol import batch as batching
from serve_app.protocol.errors import BadRequest, InvalidInput

TENSOR_INPUT = "input"
OUTPUT_NAME = "probability"
DECISION_OUTPUT = "decision"  # score >= the version's alert threshold
PLATFORM = "onnxruntime_onnx"
HEADER_LENGTH = "inference-header-content-length"
FLOAT64_EXACT_INTS = 2**53  # float64 holds every integer up to here, and not all beyond

DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(dt)
    for name, dt in {
        "BOOL": "?",
        "UINT8": "<u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "<i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"malformed JSON: {error.args[0].split(':')[0]}") from None


def optional_object(payload: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """`payload[key]` if it is a JSON object, {} if it is absent or null.

    Anything else is refused rather than ignored: routing reads these parameters (a routing
    key), so a dropped one would quietly route the request as if it had none.
    """
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be an object")
    return value


def decode_request(
    body: bytes, header_length: str | None, features: Sequence[str], max_rows: int
) -> batching.Decoded:
    binary = b""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise BadRequest("Inference-Header-Content-Length must be an integer") from None
        if not 0 <= split <= len(body):
            raise BadRequest("Inference-Header-Content-Length exceeds the body")
        body, binary = body[:split], body[split:]
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    parameters = optional_object(payload, "parameters", "'parameters'")
    tensors = _read_tensors(inputs, binary)
    request_id = payload.get("id")
    request_id = str(request_id) if request_id is not None else None
    if len(tensors) == 1 and next(iter(tensors)) not in features:
        (tensor,) = tensors.values()
        batch = batching.check_width(tensor, features, max_rows)
        return batching.Decoded(batch, request_id, parameters)
    columns = {
        name: t.reshape(-1) if t.ndim == 2 and t.shape[1] == 1 else t for name, t in tensors.items()
    }
    for name, column in columns.items():
        if column.ndim != 1:
            raise InvalidInput(f"input '{name}' must have shape [N] or [N, 1]")
    batch = batching.from_columns(columns, features, max_rows, "inputs")
    return batching.Decoded(batch, request_id, parameters)


def _read_tensors(inputs: list[Any], binary: bytes) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for index, spec in enumerate(inputs):
        if not isinstance(spec, dict):
            raise BadRequest(f"inputs[{index}] must be an object")
        name, shape, datatype = spec.get("name"), spec.get("shape"), spec.get("datatype")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"inputs[{index}] needs a 'name'")
        if name in tensors:
            raise BadRequest(f"input '{name}' appears twice")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(f"input '{name}' needs a 'shape' of non-negative integers")
        if datatype not in DATATYPES:
            raise InvalidInput(
                f"input '{name}' has datatype {datatype!r}; "
                "expected one of FP32, FP64, INT*, UINT*, BOOL"
            )
        size = math.prod(shape)
        parameters = optional_object(spec, "parameters", f"inputs[{index}].parameters")
        binary_size = parameters.get("binary_data_size")
        if binary_size is not None:
            if not isinstance(binary_size, int) or binary_size < 0:
                raise BadRequest(f"input '{name}': binary_data_size must be a non-negative integer")
            chunk = binary[offset : offset + binary_size]
            offset += binary_size
            dtype = DATATYPES[datatype]
            if len(chunk) != binary_size or len(chunk) != size * dtype.itemsize:
                raise InvalidInput(f"input '{name}': binary data does not match shape {shape}")
            array = np.frombuffer(chunk, dtype=dtype).astype(np.float32)
        else:
            if "data" not in spec:
                raise BadRequest(f"input '{name}' has no 'data'")
            array = _json_tensor(spec["data"], datatype, name).reshape(-1)
            if array.size != size:
                raise InvalidInput(
                    f"input '{name}' holds {array.size} values but its shape {shape} needs {size}"
                )
        tensors[name] = array.reshape(shape)
    return tensors


def _json_tensor(data: Any, datatype: str, name: str) -> np.ndarray:
    """JSON `data` as float32, once every value is one the declared datatype can hold."""
    what = f"input '{name}'"
    values = batching.json_numbers(data, what)
    needs = _unfit(data, values, DATATYPES[datatype])
    if needs is not None:
        raise InvalidInput(f"{what}: datatype {datatype} needs {needs}")
    return values.astype(np.float32, copy=False)


def _unfit(data: Any, values: np.ndarray, dtype: np.dtype) -> str | None:
    """What `dtype` needs when some of `values` (parsed from `data`) do not fit it, else None.

    FP types take any JSON number, as before (JSON has no NaN or Infinity literal, and a
    number beyond float32 becomes inf in the cast), so the common FP32 path costs nothing.
    Integer types need integral values in range. JSON true/false count as 1/0 there, as in
    numpy: no value is lost, and numpy folds a boolean into a list of numbers before it could
    be told apart without a Python loop. BOOL needs true/false only.
    """
    if dtype.kind == "f" or values.size == 0:
        return None
    if dtype.kind == "b":
        return None if values.dtype.kind == "b" else "true or false"
    info = np.iinfo(dtype)
    integral = values.dtype.kind != "f" or np.array_equal(values, np.trunc(values))
    if integral and _within(data, values, info):
        return None
    return f"integers in [{info.min}, {info.max}]"


def _within(data: Any, values: np.ndarray, info: np.iinfo) -> bool:
    """Whether the integral `values` lie in [info.min, info.max], compared exactly.

    min and max are compared as Python numbers (exact across int and float). numpy infers
    float64 for ints mixed with floats or beyond int64, which rounds ints past 2**53 (2**64-1
    becomes 2**64); only then are the JSON numbers themselves compared, a Python loop that
    only integer datatypes with huge values take.
    """
    low, high = values.min().item(), values.max().item()
    if values.dtype.kind == "f" and max(-low, high) >= FLOAT64_EXACT_INTS:
        numbers = np.asarray(data, dtype=object).ravel().tolist()
        low, high = min(numbers), max(numbers)
    return info.min <= low and high <= info.max


def encode_response(
    model: str, version: int, scores: np.ndarray, decisions: np.ndarray, request_id: str
) -> bytes:
    rows = [int(scores.shape[0])]
    answer: dict[str, Any] = {
        "model_name": model,
        "model_version": str(version),
        "id": request_id,
        "outputs": [
            {"name": OUTPUT_NAME, "datatype": "FP32", "shape": rows, "data": scores.tolist()},
            {
                "name": DECISION_OUTPUT,
                "datatype": "BOOL",
                "shape": rows,
                "data": decisions.tolist(),
            },
        ],
    }
    return orjson.dumps(answer)


def model_metadata(model: str, versions: Sequence[int], features: Sequence[str]) -> dict[str, Any]:
    """Metadata from the signature: the [N, F] tensor form, then one input per feature."""
    return {
        "name": model,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [{"name": TENSOR_INPUT, "datatype": "FP32", "shape": [-1, len(features)]}],
        "outputs": [
            {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]},
            {"name": DECISION_OUTPUT, "datatype": "BOOL", "shape": [-1]},
        ],
        "parameters": {
            "feature_names": list(features),
            "per_feature_inputs": [
                {"name": f, "datatype": "FP32", "shape": [-1]} for f in features
            ],
        },
    }
