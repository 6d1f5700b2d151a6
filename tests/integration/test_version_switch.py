"""New champions are served quickly with no failed request; broken versions never take traffic."""

from __future__ import annotations

import time
from pathlib import Path

from mlflow import MlflowClient

from serve_app.registry.seed import DEMO_MODELS, seed_model
from tests.conftest import wait_until
from tests.integration.helpers import Traffic, call, v2_payload

SWITCH_BUDGET_S = 15.0


def test_new_champion_served_within_budget_with_no_failed_request(service):
    name = DEMO_MODELS[10]
    old = service.registry.sweep()[name].aliases["champion"]
    new = seed_model(service.registry, name, alias=None, salt="retrained")
    with Traffic(service.url, name) as traffic:
        time.sleep(2.0)
        moved_at = time.monotonic()
        service.registry.set_alias(name, "champion", new)
        first_new = wait_until(
            lambda: next((t for t, _, v in traffic.results if v == str(new)), None),
            timeout=SWITCH_BUDGET_S + 5,
            interval=0.1,
            what="the new version to answer",
        )
        time.sleep(2.0)
    results = traffic.results
    failed = traffic.failures
    assert not failed, f"{len(failed)} failed requests during the switch, e.g. {failed[:3]}"
    assert first_new - moved_at < SWITCH_BUDGET_S
    last_old = max(t for t, _, v in results if v == str(old))
    assert last_old < first_new + 5.0, "the old version kept answering after the switch"
    tail = [v for t, _, v in results if t > last_old]
    assert tail and set(tail) == {str(new)}
    print(
        f"switch: first answer from v{new} {first_new - moved_at:.2f} s after the alias moved; "
        f"{len(results)} requests, 0 failed"
    )


def _artifact_dir(name: str, version: int, tracking_uri: str) -> Path:
    uri = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version_download_uri(
        name, str(version)
    )
    return Path(uri.removeprefix("file://"))


def test_corrupt_artifact_never_takes_traffic(service):
    name = DEMO_MODELS[11]
    good = service.registry.sweep()[name].aliases["champion"]
    bad = seed_model(service.registry, name, alias=None, salt="corrupt")
    onnx_file = _artifact_dir(name, bad, service.registry.tracking_uri) / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07garbage, not a graph" * 10)
    service.registry.set_alias(name, "champion", bad)

    def recorded_failure():
        model = call(f"{service.url}/admin/models")[1]["models"][name]
        return model if str(bad) in model["failed_versions"] else None

    model = wait_until(recorded_failure, timeout=10, what="the load failure to be recorded")
    assert "cannot load" in model["failed_versions"][str(bad)]
    assert model["serving"]["champion"] == good
    for _ in range(20):
        status, answer, headers = call(f"{service.url}/v2/models/{name}/infer", v2_payload())
        assert status == 200 and headers["x-model-version"] == str(good)
    status, answer, _ = call(f"{service.url}/v2/models/{name}/versions/{bad}/infer", v2_payload())
    assert status == 409 and "failed its load check" in answer["error"]
    events = call(f"{service.url}/admin/models/{name}/history")[1]["events"]
    assert any(e["kind"] == "load_failed" and e["version"] == bad for e in events)
    service.registry.set_alias(name, "champion", good)
