"""Every bad input gets its 4xx with a message naming the problem; the service stays ready.

Every value a bad payload carries is SECRET_VALUE (or its text), so one check per case shows
that no error echoes feature values: payloads hold card and account data.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from serve_app.registry.features import FEATURES
from serve_app.registry.seed import DEMO_MODELS
from tests.integration.helpers import call, v2_payload

MODEL = DEMO_MODELS[3]
SECRET_VALUE = 123456.789  # a feature value that must never come back in an error
SECRET = "123456"  # its digits, in whatever format an echo would print the value
SECRET_ROW = [SECRET_VALUE] * len(FEATURES)
INFER = f"/v2/models/{MODEL}/infer"
INVOCATIONS = f"/models/{MODEL}/invocations"


def tensor(shape, data, datatype="FP32", name="input", **fields) -> dict:
    return {
        "inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data, **fields}]
    }


def per_feature(feature: str, datatype: str, value: Any) -> dict:
    """One FP32 input per feature holding secrets, but `feature`: `datatype` holding `value`."""
    inputs = [
        {"name": f, "shape": [1], "datatype": "FP32", "data": [SECRET_VALUE]} for f in FEATURES
    ]
    inputs[FEATURES.index(feature)].update(datatype=datatype, data=[value])
    return {"inputs": inputs}


NOT_AN_OBJECT = ["routing_key=acct-1", ["routing_key", "acct-1"]]

CASES = [
    ("POST", "/v2/models/no-such-model/infer", v2_payload([SECRET_ROW]), 404, "not served"),
    ("POST", "/models/no-such-model/invocations", {"inputs": [SECRET_ROW]}, 404, "not served"),
    ("GET", "/v2/models/no-such-model", None, 404, "not served"),
    ("GET", f"/v2/models/{MODEL}/versions/77", None, 404, "no version 77"),
    (
        "POST",
        f"/v2/models/{MODEL}/versions/latest/infer",
        v2_payload([SECRET_ROW]),
        404,
        "not a registry version",
    ),
    ("POST", INFER, tensor([1, 11], SECRET_ROW[:11]), 422, "expected 12 features"),
    ("POST", INFER, tensor([2, 12], SECRET_ROW), 422, "needs 24"),
    ("POST", INFER, tensor([1, 12], [str(SECRET_VALUE)] * 12, "BYTES"), 422, "datatype"),
    ("POST", INFER, tensor([1, 12], [str(SECRET_VALUE)] * 12), 422, "only numbers"),
    ("POST", INFER, tensor([1], [SECRET_VALUE], name="amount"), 422, "missing feature(s)"),
    *(
        (
            "POST",
            INFER,
            {**v2_payload([SECRET_ROW]), "parameters": bad},
            400,
            "'parameters' must be an object",
        )
        for bad in NOT_AN_OBJECT
    ),
    *(
        (
            "POST",
            INFER,
            tensor([1, 12], SECRET_ROW, parameters=bad),
            400,
            "inputs[0].parameters must be an object",
        )
        for bad in NOT_AN_OBJECT
    ),
    (
        "POST",
        INFER,
        per_feature("hour", "INT8", 0.4),
        422,
        "input 'hour': datatype INT8 needs integers in [-128, 127]",
    ),
    (
        "POST",
        INFER,
        per_feature("txn_count_1h", "UINT8", -1),
        422,
        "input 'txn_count_1h': datatype UINT8 needs integers in [0, 255]",
    ),
    (
        "POST",
        INFER,
        per_feature("is_foreign", "BOOL", 2),
        422,
        "input 'is_foreign': datatype BOOL needs true or false",
    ),
    (
        "POST",
        INVOCATIONS,
        {"dataframe_records": [{"amount": SECRET_VALUE}]},
        422,
        "missing feature(s): hour",
    ),
    (
        "POST",
        INVOCATIONS,
        {"instances": [SECRET_ROW], "inputs": [SECRET_ROW]},
        400,
        "exactly one",
    ),
    (
        "POST",
        INVOCATIONS,
        {"dataframe_split": {"columns": ["amount"], "data": [[SECRET_VALUE, 1]]}},
        422,
        "one per column",
    ),
    *(
        (
            "POST",
            INVOCATIONS,
            {"inputs": [SECRET_ROW], "params": bad},
            400,
            "'params' must be an object",
        )
        for bad in NOT_AN_OBJECT
    ),
    ("POST", INFER, f'{{"inputs": [{SECRET_VALUE}, '.encode(), 400, "malformed JSON"),
    ("POST", INVOCATIONS, f"{SECRET_VALUE} is not json".encode(), 400, "malformed JSON"),
    ("GET", INFER, None, 405, "not allowed"),
    ("GET", "/no/such/endpoint", None, 404, "no endpoint"),
]


def replica_ids(service) -> set[str]:
    return set(call(f"{service.url}/admin/models")[1]["replicas"])


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), CASES)
def test_bad_input_gets_a_clear_4xx(service, method, path, body, status, words):
    got, answer, _ = call(f"{service.url}{path}", body, method=method)
    assert got == status, answer
    assert words in answer["error"]
    assert SECRET not in json.dumps(answer), "an error echoed a feature value"


def test_oversized_body_is_413_and_service_stays_ready(service):
    before = replica_ids(service)
    huge = b'{"inputs": [' + b" " * (5 * 1024 * 1024) + b"]}"
    status, answer, _ = call(f"{service.url}{INFER}", huge)
    assert status == 413 and "limit" in answer["error"]
    for method, path, body, _, _ in CASES:
        call(f"{service.url}{path}", body, method=method)
    assert call(f"{service.url}/v2/health/ready")[0] == 200
    assert call(f"{service.url}{INFER}", v2_payload())[0] == 200
    assert replica_ids(service) == before, "a bad input restarted a replica"
