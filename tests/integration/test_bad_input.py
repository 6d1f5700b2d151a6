"""Every bad input gets its 4xx with a message naming the problem; the service stays ready."""

from __future__ import annotations

import json

import pytest

from serve_app.registry.seed import DEMO_MODELS
from tests.integration.helpers import ROW, call, v2_payload

MODEL = DEMO_MODELS[3]
SECRET_VALUE = 987654.25  # a feature value that must never come back in an error


def tensor(shape, data, datatype="FP32", name="input"):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


CASES = [
    ("POST", "/v2/models/no-such-model/infer", v2_payload(), 404, "not served"),
    ("POST", "/models/no-such-model/invocations", {"inputs": [ROW]}, 404, "not served"),
    ("GET", "/v2/models/no-such-model", None, 404, "not served"),
    ("GET", f"/v2/models/{MODEL}/versions/77", None, 404, "no version 77"),
    (
        "POST",
        f"/v2/models/{MODEL}/versions/latest/infer",
        v2_payload(),
        404,
        "not a registry version",
    ),
    ("POST", f"/v2/models/{MODEL}/infer", tensor([1, 11], ROW[:11]), 422, "expected 12 features"),
    (
        "POST",
        f"/v2/models/{MODEL}/infer",
        tensor([2, 12], [SECRET_VALUE, *ROW[1:]]),
        422,
        "needs 24",
    ),
    ("POST", f"/v2/models/{MODEL}/infer", tensor([1, 12], ["x"] * 12, "BYTES"), 422, "datatype"),
    ("POST", f"/v2/models/{MODEL}/infer", tensor([1, 12], ["x"] * 12), 422, "only numbers"),
    (
        "POST",
        f"/v2/models/{MODEL}/infer",
        tensor([1], [SECRET_VALUE], name="amount"),
        422,
        "missing feature(s)",
    ),
    (
        "POST",
        f"/models/{MODEL}/invocations",
        {"dataframe_records": [{"amount": SECRET_VALUE}]},
        422,
        "missing feature(s): hour",
    ),
    (
        "POST",
        f"/models/{MODEL}/invocations",
        {"instances": [ROW], "inputs": [ROW]},
        400,
        "exactly one",
    ),
    (
        "POST",
        f"/models/{MODEL}/invocations",
        {"dataframe_split": {"columns": ["amount"], "data": [[SECRET_VALUE, 1]]}},
        422,
        "one per column",
    ),
    ("POST", f"/v2/models/{MODEL}/infer", b'{"inputs": [', 400, "malformed JSON"),
    ("POST", f"/models/{MODEL}/invocations", b"not json at all", 400, "malformed JSON"),
    ("GET", f"/v2/models/{MODEL}/infer", None, 405, "not allowed"),
    ("GET", "/no/such/endpoint", None, 404, "no endpoint"),
]


def replica_ids(service) -> set[str]:
    return set(call(f"{service.url}/admin/models")[1]["replicas"])


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), CASES)
def test_bad_input_gets_a_clear_4xx(service, method, path, body, status, words):
    got, answer, _ = call(f"{service.url}{path}", body, method=method)
    assert got == status, answer
    assert words in answer["error"]
    assert str(SECRET_VALUE) not in json.dumps(answer)


def test_oversized_body_is_413_and_service_stays_ready(service):
    before = replica_ids(service)
    huge = b'{"inputs": [' + b" " * (5 * 1024 * 1024) + b"]}"
    status, answer, _ = call(f"{service.url}/v2/models/{MODEL}/infer", huge)
    assert status == 413 and "limit" in answer["error"]
    for method, path, body, _, _ in CASES:
        call(f"{service.url}{path}", body, method=method)
    assert call(f"{service.url}/v2/health/ready")[0] == 200
    assert call(f"{service.url}/v2/models/{MODEL}/infer", v2_payload())[0] == 200
    assert replica_ids(service) == before, "a bad input restarted a replica"
