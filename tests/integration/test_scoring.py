"""Every seeded model scores through both protocols, over real HTTP, on a real cluster."""

from __future__ import annotations

import json
import urllib.request
from importlib.metadata import version

import numpy as np
import pytest
import tritonclient.http as triton

from serve_app.registry.seed import DEMO_MODELS, FEATURES
from tests.conftest import wait_until
from tests.integration.helpers import ROW, call, records_payload, v2_payload


def test_at_least_fifty_models_are_served(service):
    status, body, _ = call(f"{service.url}/v2/health/ready")
    assert status == 200 and body["models"] >= 50


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_every_model_scores_through_v2_and_mlflow(service, name):
    status, v2_answer, headers = call(
        f"{service.url}/v2/models/{name}/infer", v2_payload([ROW, ROW])
    )
    assert status == 200, v2_answer
    assert (
        v2_answer["model_name"] == name and v2_answer["model_version"] == headers["x-model-version"]
    )
    scores = v2_answer["outputs"][0]["data"]
    assert len(scores) == 2 and 0.0 <= scores[0] <= 1.0
    status, mlflow_answer, headers = call(
        f"{service.url}/models/{name}/invocations", records_payload()
    )
    assert status == 200 and headers["x-model-version"] == v2_answer["model_version"]
    assert mlflow_answer["predictions"][0] == pytest.approx(scores[0], abs=1e-6)


def test_scores_match_the_registered_model(service):
    name = DEMO_MODELS[0]
    version = service.registry.sweep()[name].aliases["champion"]
    fetched = service.registry.fetch(name, version)
    from serve_app.runtime.onnx import OnnxModel

    expected = OnnxModel(fetched.artifact).predict(fetched.input_example)
    _, answer, _ = call(
        f"{service.url}/v2/models/{name}/infer", v2_payload(fetched.input_example.tolist())
    )
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-5)


def test_pinned_version_path(service):
    name = DEMO_MODELS[1]
    status, answer, headers = call(f"{service.url}/v2/models/{name}/versions/1/infer", v2_payload())
    assert status == 200 and answer["model_version"] == "1" and headers["x-model-version"] == "1"
    status, answer, _ = call(f"{service.url}/v2/models/{name}/versions/99/infer", v2_payload())
    assert status == 404 and "no version 99" in answer["error"]


def test_tritonclient_talks_to_the_service(service):
    client = triton.InferenceServerClient(service.url.removeprefix("http://"))
    name = DEMO_MODELS[2]
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert server["name"] == "serve-app" and server["version"] == version("serve-app")
    assert client.is_model_ready(name)
    metadata = client.get_model_metadata(name)
    assert metadata["inputs"][0]["shape"] == [-1, len(FEATURES)]
    batch = np.array([ROW, ROW, ROW], dtype=np.float32)
    for binary in (True, False):
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        result = client.infer(
            name, [tensor], outputs=[triton.InferRequestedOutput("probability", binary_data=False)]
        )
        scores = result.as_numpy("probability")
        assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    named = []
    for index, feature in enumerate(FEATURES):
        tensor = triton.InferInput(feature, [3], "FP32")
        tensor.set_data_from_numpy(batch[:, index].copy())
        named.append(tensor)
    by_name = client.infer(name, named).as_numpy("probability")
    np.testing.assert_allclose(by_name, scores, rtol=1e-6)


def test_admin_lists_models_versions_aliases_and_placement(service):
    call(f"{service.url}/v2/models/{DEMO_MODELS[0]}/infer", v2_payload())

    def placement():
        status, body, _ = call(f"{service.url}/admin/models")
        assert status == 200
        return body if body["models"][DEMO_MODELS[0]]["loaded_on"] else None

    body = wait_until(placement, timeout=5, what="the scored model to show as loaded")
    model = body["models"][DEMO_MODELS[0]]
    assert model["aliases"]["champion"] == model["serving"]["champion"]
    assert body["last_poll"]["ok"] is True


def test_mlflows_scoring_contract_csv_content_types_and_its_root_paths(service):
    """As `mlflow models serve` answers: CSV with a header row, 415 for another content type
    or MLflow 1.x's `format=`, `/ping`, `/health` and `/version`."""
    name = DEMO_MODELS[2]
    url = f"{service.url}/models/{name}/invocations"
    _, json_answer, _ = call(url, records_payload())
    header = ",".join(reversed(FEATURES))
    row = ",".join(str(value) for value in reversed(ROW))
    csv = f"{header}\n{row}\n{row}\n".encode()
    status, csv_answer, headers = call(url, csv, headers={"content-type": "text/csv"})
    assert status == 200 and headers["x-model-name"] == name, csv_answer
    assert csv_answer["predictions"] == pytest.approx([json_answer["predictions"][0]] * 2)

    body = json.dumps(records_payload()).encode()
    for content_type, words in (
        ("application/xml", "unsupported content type 'application/xml'"),
        ("application/json; format=pandas-split", "parameters: format"),
        ("application/json; charset=latin-1", "UTF-8"),
    ):
        status, answer, _ = call(url, body, headers={"content-type": content_type})
        assert status == 415 and words in answer["error"], (content_type, answer)
    status, answer, _ = call(url, b"amount\n1\n", headers={"content-type": "text/csv"})
    assert status == 422 and "missing feature" in answer["error"]

    for path in ("/ping", "/health"):
        with urllib.request.urlopen(f"{service.url}{path}", timeout=10) as answer:
            assert answer.status == 200 and answer.read() == b"\n"
    with urllib.request.urlopen(f"{service.url}/version", timeout=10) as answer:
        assert answer.read().decode() == version("mlflow")
    status, answer, _ = call(f"{service.url}/invocations", records_payload())
    assert status == 404 and "routing.default_model" in answer["error"]


def test_a_request_past_its_deadline_is_a_504_and_is_not_scored(service):
    """The budget from the header or the V2 parameters; spent before scoring: 504, counted
    per model, no version answered; a budget that is not a number of ms: 400."""
    from tests.integration.helpers import exported, settled

    name = DEMO_MODELS[3]
    url = f"{service.url}/v2/models/{name}/infer"
    family = "ray_serve_app_deadline_exceeded_total"
    before = settled(family, model=name)
    status, answer, headers = call(url, v2_payload(), headers={"x-request-timeout-ms": "0.001"})
    assert status == 504 and "deadline of 0.001 ms passed" in answer["error"], answer
    assert "x-model-version" not in headers  # not scored
    late = {**v2_payload(), "parameters": {"timeout_ms": 0.001}}
    status, answer, _ = call(url, late)
    assert status == 504 and "not scored" in answer["error"]
    status, answer, headers = call(url, v2_payload(), headers={"x-request-timeout-ms": "5000"})
    assert status == 200 and headers["x-model-version"]
    status, answer, _ = call(url, v2_payload(), headers={"x-request-timeout-ms": "soon"})
    assert status == 400 and "x-request-timeout-ms" in answer["error"]
    wait_until(lambda: exported(family, model=name) == before + 2, timeout=30, what="the 504 count")
