"""Every seeded model scores through both protocols, over real HTTP, on a real cluster."""

from __future__ import annotations

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
