"""New champions are served quickly with no failed request; broken versions never take traffic."""

from __future__ import annotations

import time
from pathlib import Path

from mlflow import MlflowClient

from serve_app.registry.seed import DEMO_MODELS, seed_model
from tests.conftest import BROKEN_RETRY_S, wait_until
from tests.integration.helpers import Traffic, call, exported, v2_payload

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
            lambda: next((r.at for r in traffic.results if r.version == str(new)), None),
            timeout=SWITCH_BUDGET_S + 5,
            interval=0.1,
            what="the new version to answer",
        )
        time.sleep(2.0)
    results = traffic.results
    failed = traffic.failures
    assert not failed, f"{len(failed)} failed requests during the switch, e.g. {failed[:3]}"
    assert first_new - moved_at < SWITCH_BUDGET_S
    last_old = max(r.at for r in results if r.version == str(old))
    assert last_old < first_new + 5.0, "the old version kept answering after the switch"
    tail = [r.version for r in results if r.at > last_old]
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


def test_corrupt_artifact_never_takes_traffic_and_serves_once_repaired(service):
    """Fault drill 2: the new champion's artifact is unreadable when it downloads (its ONNX
    file corrupted in the file artifact store). Under load, the previous version keeps
    answering with no failed request; the failure is recorded (status, history, metric);
    the version is checked again every `registry.broken_retry_s`, and once the file is
    repaired in place it serves, with no other alias move."""
    name = DEMO_MODELS[11]
    good = service.registry.sweep()[name].aliases["champion"]
    bad = seed_model(service.registry, name, alias=None, salt="corrupt")
    onnx_file = _artifact_dir(name, bad, service.registry.tracking_uri) / "model.onnx"
    intact = onnx_file.read_bytes()
    failures_before = exported("ray_serve_app_model_load_failures_total", model=name)

    def recorded_failure():
        model = call(f"{service.url}/admin/models")[1]["models"][name]
        return model if str(bad) in model["failed_versions"] else None

    with Traffic(service.url, name) as traffic:
        onnx_file.write_bytes(b"\x08\x07garbage, not a graph" * 10)
        service.registry.set_alias(name, "champion", bad)
        model = wait_until(recorded_failure, timeout=10, what="the load failure to be recorded")
        assert "cannot load" in model["failed_versions"][str(bad)]
        assert model["serving"]["champion"] == good
        url = f"{service.url}/v2/models/{name}/versions/{bad}/infer"
        status, answer, _ = call(url, v2_payload())
        assert status == 409 and "failed its load check" in answer["error"]
        time.sleep(2 * BROKEN_RETRY_S)  # checked again meanwhile, failing the same way
        assert call(f"{service.url}/admin/models")[1]["models"][name]["serving"]["champion"] == good
        assert traffic.versions() == {str(good)}
        onnx_file.write_bytes(intact)
        repaired_at = time.monotonic()
        wait_until(
            lambda: traffic.versions(since=time.monotonic() - 0.3) == {str(bad)},
            timeout=BROKEN_RETRY_S + SWITCH_BUDGET_S,
            interval=0.2,
            what="the repaired version to take the traffic",
        )
        print(f"repaired v{bad} answering {time.monotonic() - repaired_at:.1f} s after repair")
    assert not traffic.failures, traffic.failures[:3]
    kinds = [
        e["kind"]
        for e in call(f"{service.url}/admin/models/{name}/history")[1]["events"]
        if e["version"] == bad
    ]
    assert kinds == ["load_failed", "champion_serving"], kinds  # one failure, recorded once
    assert call(f"{service.url}/admin/models")[1]["models"][name]["failed_versions"] == {}
    wait_until(
        lambda: (
            exported("ray_serve_app_model_load_failures_total", model=name) >= failures_before + 2
        ),
        timeout=30,
        interval=1,
        what="the load-failure counter to count the check and its retries",
    )
