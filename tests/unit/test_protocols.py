import numpy as np
import orjson
import pytest

from serve_app.protocol import mlflow_scoring, v2
from serve_app.protocol.errors import (
    BadRequest,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    Overloaded,
)
from serve_app.serving import http

FEATURES = ("amount", "hour", "merchant_risk")
ROW = [120.0, 3.0, 0.4]


def v2_body(inputs, **extra) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def decode_v2(body: bytes, header=None):
    return v2.decode_request(body, header, FEATURES, max_rows=100)


def test_v2_single_tensor_nested_and_flat():
    for data in (ROW, [ROW]):
        got = decode_v2(
            v2_body([{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": data}])
        )
        np.testing.assert_allclose(got.batch, [ROW])
        assert got.batch.dtype == np.float32


def test_v2_named_inputs_in_any_order_and_request_id():
    inputs = [
        {"name": "hour", "shape": [2], "datatype": "INT64", "data": [3, 4]},
        {"name": "amount", "shape": [2, 1], "datatype": "FP64", "data": [1.5, 2.5]},
        {"name": "merchant_risk", "shape": [2], "datatype": "FP32", "data": [0.1, 0.2]},
    ]
    got = decode_v2(v2_body(inputs, id="r-1"))
    np.testing.assert_allclose(got.batch, [[1.5, 3, 0.1], [2.5, 4, 0.2]], rtol=1e-6)
    assert got.request_id == "r-1"


def test_v2_binary_tensor_extension():
    tensor = np.array([ROW, ROW], dtype=np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": tensor.nbytes},
                }
            ]
        }
    )
    got = decode_v2(header + tensor.tobytes(), str(len(header)))
    np.testing.assert_allclose(got.batch, tensor)


@pytest.mark.parametrize(
    ("inputs", "error", "words"),
    [
        (
            [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
            InvalidInput,
            "expected 3 features",
        ),
        (
            [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2]}],
            InvalidInput,
            "needs 3",
        ),
        (
            [{"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}],
            InvalidInput,
            "datatype",
        ),
        (
            [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": ["a", "b", "c"]}],
            InvalidInput,
            "only numbers",
        ),
        (
            [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [[1, 2], [3]]}],
            InvalidInput,
            "ragged",
        ),
        (
            [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": ROW}],
            InvalidInput,
            "2-D",
        ),
        (
            [
                {"name": "amount", "shape": [1], "datatype": "FP32", "data": [1]},
                {"name": "hour", "shape": [1], "datatype": "FP32", "data": [1]},
            ],
            InvalidInput,
            "missing feature(s): merchant_risk",
        ),
        ([{"name": "input", "shape": [1, 3], "datatype": "FP32"}], BadRequest, "no 'data'"),
        ([{"name": "input", "shape": "1x3", "datatype": "FP32", "data": ROW}], BadRequest, "shape"),
        (["nope"], BadRequest, "must be an object"),
        ([], BadRequest, "non-empty"),
    ],
)
def test_v2_bad_inputs_name_the_problem(inputs, error, words):
    with pytest.raises(error, match=None) as caught:
        decode_v2(v2_body(inputs))
    assert words in caught.value.message
    assert "0.4" not in caught.value.message  # feature values are never echoed


def spec(data, datatype="FP32", **fields) -> dict:
    return {"name": "input", "shape": [1, 3], "datatype": datatype, "data": data, **fields}


NOT_AN_OBJECT = ["routing_key=a", ["routing_key", "a"], [], 3, True]


@pytest.mark.parametrize("bad", NOT_AN_OBJECT)
def test_v2_request_parameters_must_be_an_object(bad):
    with pytest.raises(BadRequest) as caught:
        decode_v2(v2_body([spec(ROW)], parameters=bad))
    assert caught.value.message == "'parameters' must be an object"


@pytest.mark.parametrize("bad", NOT_AN_OBJECT)
def test_v2_tensor_parameters_must_be_an_object(bad):
    with pytest.raises(BadRequest) as caught:
        decode_v2(v2_body([spec(ROW), spec(ROW, parameters=bad) | {"name": "x"}]))
    assert caught.value.message == "inputs[1].parameters must be an object"


def test_v2_null_parameters_count_as_absent():
    got = decode_v2(v2_body([spec(ROW, parameters=None)], parameters=None))
    np.testing.assert_allclose(got.batch, [ROW], rtol=1e-6)
    assert got.parameters == {}
    got = decode_v2(v2_body([spec(ROW, parameters={})], parameters={"routing_key": "a"}))
    assert got.parameters == {"routing_key": "a"}


@pytest.mark.parametrize(
    ("datatype", "data", "needs"),
    [
        ("INT8", [1, 0.4, 2], "integers in [-128, 127]"),
        ("INT8", [1, 128, 2], "integers in [-128, 127]"),
        ("INT8", [1, -129, 2], "integers in [-128, 127]"),
        ("UINT8", [1, -1, 2], "integers in [0, 255]"),
        ("UINT16", [1, 65536, 2], "integers in [0, 65535]"),
        ("INT32", [1, 2**31, 2], "integers in [-2147483648, 2147483647]"),
        ("INT64", [1, 2**63, 2], "integers in [-9223372036854775808, 9223372036854775807]"),
        ("INT64", [1, 2.0**63, 2], "integers in [-9223372036854775808, 9223372036854775807]"),
        ("UINT64", [1, 2.0**64, 2], "integers in [0, 18446744073709551615]"),
        ("UINT64", [0.5, 2**64 - 1, 2], "integers in [0, 18446744073709551615]"),
        ("UINT64", [1, -1, 2**64 - 1], "integers in [0, 18446744073709551615]"),
        ("BOOL", [True, 2, False], "true or false"),
        ("BOOL", [1, 0, 1], "true or false"),
        ("BOOL", [True, 0.5, False], "true or false"),
    ],
)
def test_v2_json_data_must_fit_its_datatype(datatype, data, needs):
    with pytest.raises(InvalidInput) as caught:
        decode_v2(v2_body([spec(data, datatype)]))
    assert caught.value.message == f"input 'input': datatype {datatype} needs {needs}"


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("INT8", [-128, 127, 3.0]),
        ("UINT8", [0, 255, True]),
        ("INT64", [-(2**63), 2**63 - 1, 0]),
        ("UINT64", [0, 2**64 - 1, 7]),
        ("UINT64", [0, 2**64 - 1, 7.0]),
        ("INT64", [-(2**63), 2.0**62, 7]),
        ("BOOL", [True, False, True]),
        ("FP16", [1e6, 0.4, -3]),
        ("FP64", [1e30, 0.4, -3]),
    ],
)
def test_v2_json_data_that_fits_its_datatype_is_accepted(datatype, data):
    got = decode_v2(v2_body([spec(data, datatype)]))
    np.testing.assert_allclose(got.batch, np.array([data], dtype=np.float32))
    assert got.batch.dtype == np.float32


def test_v2_binary_data_is_typed_by_its_bytes():
    tensor = np.array([[-1, 0, 1]], dtype=np.int8)
    header = orjson.dumps(
        {"inputs": [spec(None, "INT8", parameters={"binary_data_size": tensor.nbytes})]}
    )
    got = decode_v2(header + tensor.tobytes(), str(len(header)))
    np.testing.assert_allclose(got.batch, tensor)


def test_v2_malformed_json_and_bad_header():
    with pytest.raises(BadRequest, match="malformed JSON"):
        decode_v2(b"{not json")
    with pytest.raises(BadRequest, match="JSON object"):
        decode_v2(b"[1, 2]")
    with pytest.raises(BadRequest, match="exceeds the body"):
        decode_v2(b"{}", "99")


def test_v2_row_limit():
    data = [ROW] * 101
    with pytest.raises(InvalidInput, match="exceed the limit of 100"):
        decode_v2(v2_body([{"name": "input", "shape": [101, 3], "datatype": "FP32", "data": data}]))


def test_v2_response_and_metadata():
    scores = np.array([0.25, 0.75], np.float32)
    answer = orjson.loads(v2.encode_response("m", 3, scores, scores >= 0.5, "id-9"))
    assert answer["model_version"] == "3" and answer["id"] == "id-9"
    probability, decision = answer["outputs"]
    assert probability["data"] == [0.25, 0.75] and probability["shape"] == [2]
    assert decision == {"name": "decision", "datatype": "BOOL", "shape": [2], "data": [False, True]}
    mlflow_answer = orjson.loads(mlflow_scoring.encode_response(scores, scores >= 0.5))
    assert mlflow_answer == {"predictions": [0.25, 0.75], "decisions": [False, True]}
    meta = v2.model_metadata("m", [3], FEATURES)
    assert meta["inputs"][0]["shape"] == [-1, 3]
    assert meta["parameters"]["feature_names"] == list(FEATURES)


def decode_mlflow(payload) -> np.ndarray:
    return mlflow_scoring.decode_request(orjson.dumps(payload), FEATURES, max_rows=100).batch


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": list(FEATURES), "data": [ROW]}},
        {
            "dataframe_split": {
                "columns": ["hour", "amount", "merchant_risk"],
                "data": [[3, 120, 0.4]],
            }
        },
        {"dataframe_split": {"data": [ROW]}},
        {"dataframe_records": [dict(zip(FEATURES, ROW, strict=True))]},
        {"instances": [ROW]},
        {"instances": [dict(zip(FEATURES, ROW, strict=True))]},
        {"inputs": [ROW]},
        {"inputs": {f: [v] for f, v in zip(FEATURES, ROW, strict=True)}},
        {"inputs": [ROW], "params": {}},
    ],
)
def test_mlflow_formats_decode_to_the_same_batch(payload):
    np.testing.assert_allclose(decode_mlflow(payload), [ROW], rtol=1e-6)


@pytest.mark.parametrize(
    ("payload", "error", "words"),
    [
        ({"instances": [ROW], "inputs": [ROW]}, BadRequest, "exactly one"),
        ({}, BadRequest, "exactly one"),
        ({"data": [ROW]}, BadRequest, "unknown field"),
        (
            {"dataframe_records": [{"amount": 1, "hour": 2}]},
            InvalidInput,
            "missing feature(s): merchant_risk",
        ),
        (
            {"dataframe_records": [{**dict(zip(FEATURES, ROW, strict=True)), "zip": 1}]},
            InvalidInput,
            "unknown feature(s): zip",
        ),
        (
            {"dataframe_split": {"columns": ["amount"], "data": [[1, 2, 3]]}},
            InvalidInput,
            "one per column",
        ),
        ({"instances": [[1, 2]]}, InvalidInput, "expected 3 features"),
        ({"instances": "abc"}, InvalidInput, "list of rows"),
        (
            {"inputs": {"amount": [1, 2], "hour": [1], "merchant_risk": [1, 2]}},
            InvalidInput,
            "same number",
        ),
        ({"dataframe_records": []}, InvalidInput, "no rows"),
    ],
)
def test_mlflow_bad_inputs(payload, error, words):
    with pytest.raises(error) as caught:
        decode_mlflow(payload)
    assert words in caught.value.message


@pytest.mark.parametrize("bad", NOT_AN_OBJECT)
def test_mlflow_params_must_be_an_object(bad):
    with pytest.raises(BadRequest) as caught:
        decode_mlflow({"inputs": [ROW], "params": bad})
    assert caught.value.message == "'params' must be an object"


def test_mlflow_null_params_count_as_absent():
    decoded = mlflow_scoring.decode_request(
        orjson.dumps({"inputs": [ROW], "params": None}), FEATURES, max_rows=100
    )
    assert decoded.parameters == {}


def test_http_routes():
    assert http.match("POST", "/v2/models/m/infer") == http.Match("v2_infer", "m")
    assert http.match("POST", "/v2/models/m/versions/3/infer") == http.Match("v2_infer", "m", "3")
    assert http.match("GET", "/v2/models/m/versions/3") == http.Match("v2_model_metadata", "m", "3")
    assert http.match("GET", "/v2/models/m/ready").handler == "v2_model_ready"
    assert http.match("POST", "/models/m/invocations").handler == "mlflow_invocations"
    assert http.match("GET", "/admin/models/m/history") == http.Match("admin_history", "m")
    with pytest.raises(MethodNotAllowed) as refused:
        http.match("GET", "/v2/models/m/infer")
    assert refused.value.headers() == {"allow": "POST"}  # RFC 9110: a 405 names what is
    with pytest.raises(MethodNotAllowed) as refused:
        http.match("DELETE", "/v2/models/m")
    assert refused.value.headers() == {"allow": "GET"}
    with pytest.raises(NotFound):
        http.match("GET", "/nope")
    with pytest.raises(NotFound, match="not a registry version"):
        http.parse_version("latest")


# -- MLflow's content types and CSV bodies ------------------------------------------------------
def test_mlflow_content_types_are_checked_as_mlflows_scoring_server_does():
    from serve_app.protocol.errors import UnsupportedMediaType

    assert mlflow_scoring.media_type("application/json") == "application/json"
    assert mlflow_scoring.media_type("Application/JSON; charset=UTF-8") == "application/json"
    assert mlflow_scoring.media_type("text/csv") == "text/csv"
    refused = {
        None: "Content-Type header is needed",
        "": "Content-Type header is needed",
        "application/xml": "unsupported content type 'application/xml'",
        "application/json; charset=latin-1": "only supports UTF-8",
        "application/json; format=pandas-split": "unrecognized content type parameters: format",
    }
    for content_type, message in refused.items():
        with pytest.raises(UnsupportedMediaType, match=message) as error:
            mlflow_scoring.media_type(content_type)
        assert error.value.status == 415
    with pytest.raises(UnsupportedMediaType, match="dataframe_split"):  # says what to send
        mlflow_scoring.media_type("application/json; format=pandas-split")


def csv_batch(text: str, max_rows: int = 100) -> np.ndarray:
    decoded = mlflow_scoring.decode_request(text.encode(), FEATURES, max_rows, "text/csv")
    return decoded.batch


def test_a_csv_body_with_a_header_row_scores_like_json_records():
    rows = [[float(i + j) for j in range(len(FEATURES))] for i in range(3)]
    shuffled = list(reversed(FEATURES))
    text = ",".join(shuffled) + "\n"
    text += "\n".join(",".join(str(row[FEATURES.index(f)]) for f in shuffled) for row in rows)
    records = [dict(zip(FEATURES, r, strict=True)) for r in rows]
    expected = decode_mlflow({"dataframe_records": records})
    np.testing.assert_array_equal(csv_batch(text + "\n"), expected)
    np.testing.assert_array_equal(csv_batch(text.replace("\n", "\r\n")), expected)


def test_bad_csv_bodies_get_a_4xx_naming_the_problem_and_never_a_value():
    header = ",".join(FEATURES)
    secret = "4111111111111111"
    row = ",".join(["1"] * len(FEATURES))
    cases = {
        "": "empty",
        header: "no rows",
        header + "\n" + row + ",1": "row 1 has",
        header + "\n" + row.replace("1", secret, 1).replace(secret, "x" + secret, 1): "numbers",
        header + "\n" + row.replace("1", "nan", 1): "finite",
        ",".join([FEATURES[0], *FEATURES[:-1]]) + "\n" + row: "twice",
        ",".join(FEATURES[:-1]) + ",other\n" + row: "missing feature",
        "\r\x9a\xf3x": "row 1 has",  # a bare CR: csv.Error, a 500 before (the fuzz run)
        secret * 10_000: "malformed",  # one field over the csv module's limit
    }
    for text, message in cases.items():
        with pytest.raises((InvalidInput, BadRequest), match=message) as error:
            csv_batch(text)
        assert secret not in error.value.message
    with pytest.raises(InvalidInput, match="exceed the limit"):
        csv_batch(header + "\n" + "\n".join([row] * 3), max_rows=2)
    with pytest.raises(BadRequest, match="UTF-8"):
        mlflow_scoring.decode_request(b"\xff\xfe", FEATURES, 10, "text/csv")


def test_mlflows_single_model_paths_are_routed():
    assert http.match("POST", "/invocations").handler == "mlflow_root_invocations"
    assert http.match("GET", "/ping").handler == "mlflow_ping"
    assert http.match("GET", "/health").handler == "mlflow_ping"
    assert http.match("GET", "/version").handler == "mlflow_version"
    with pytest.raises(MethodNotAllowed):
        http.match("GET", "/invocations")


def test_a_shed_request_says_when_to_retry_in_whole_seconds():
    assert Overloaded("full", 503, 1.5).headers() == {"retry-after": "2"}
    assert Overloaded("full", 429, None).headers() == {}
    assert Overloaded("full", 429, 0).status == 429
