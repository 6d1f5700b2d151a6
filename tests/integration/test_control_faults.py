"""The control actor under client mistakes and bad registrations: a missing version is a
404 and nothing more, one model's bad registration never holds up another model, and
a model that leaves the registry leaves the exported gauges."""

from __future__ import annotations

import pandas as pd

from serve_app.registry.features import LABEL_COLUMN
from serve_app.registry.seed import DEMO_MODELS, FEATURES, seed_model, synthetic_transactions
from tests.conftest import wait_until
from tests.integration.helpers import call, exported, v2_payload

SWITCH_BUDGET_S = 15.0


def status_of(service, name: str) -> dict:
    return call(f"{service.url}/admin/models")[1]["models"][name]


def events(service, name: str) -> list[dict]:
    return call(f"{service.url}/admin/models/{name}/history")[1]["events"]


def test_a_version_that_does_not_exist_is_a_404_not_a_load_failure(service):
    name = DEMO_MODELS[46]
    failures = exported("ray_serve_app_model_load_failures_total", model=name)
    for version in (77, 78, 77):
        url = f"{service.url}/v2/models/{name}/versions/{version}/infer"
        status, answer, _ = call(url, v2_payload())
        assert status == 404 and f"no version {version}" in answer["error"], answer
    status, answer, _ = call(f"{service.url}/v2/models/{name}/versions/79/ready")
    assert status == 404, answer
    model = status_of(service, name)
    assert model["failed_versions"] == {}, model["failed_versions"]
    assert not any(e["kind"] in ("load_failed", "load_retry") for e in events(service, name))
    assert exported("ray_serve_app_model_load_failures_total", model=name) == failures


def _bad_eval_challenger(service, name: str, eval_set: pd.DataFrame) -> int:
    """A challenger registered (past the CLI's checks, as another tool could) with `eval_set`."""
    champion = service.registry.sweep()[name].aliases["champion"]
    fetched = service.registry.fetch(name, champion)
    return service.registry.register(
        name,
        fetched.artifact.onnx_bytes,
        FEATURES,
        fetched.input_example,
        alias="challenger",
        eval_set=eval_set,
    )


def _rejection(service, name: str, version: int) -> dict:
    return wait_until(
        lambda: next(
            (
                e
                for e in events(service, name)
                if e["kind"] == "gate_rejected" and e["version"] == version
            ),
            None,
        ),
        timeout=30,
        what=f"the gate to reject v{version} of {name}",
    )


def test_a_challenger_without_labels_never_holds_up_another_models_champion(service):
    broken, other = DEMO_MODELS[47], DEMO_MODELS[48]
    frame, _ = synthetic_transactions(broken, 300, "no-labels")
    candidate = _bad_eval_challenger(service, broken, frame)  # no is_fraud column
    new = seed_model(service.registry, other, alias=None, salt="isolation")
    service.registry.set_alias(other, "champion", new)
    wait_until(
        lambda: (
            call(f"{service.url}/v2/models/{other}/infer", v2_payload())[2]["x-model-version"]
            == str(new)
        ),
        timeout=SWITCH_BUDGET_S,
        what="the other model's new champion to serve",
    )
    rejected = _rejection(service, broken, candidate)
    assert f"no '{LABEL_COLUMN}' label column" in rejected["detail"], rejected
    assert "challenger" not in service.registry.sweep()[broken].aliases


def test_an_evaluation_set_with_one_class_cannot_pass_the_gate(service):
    name = DEMO_MODELS[49]
    frame, _ = synthetic_transactions(name, 300, "one-class")
    candidate = _bad_eval_challenger(service, name, frame.assign(**{LABEL_COLUMN: 0}))
    rejected = _rejection(service, name, candidate)
    assert "both classes" in rejected["detail"], rejected
    assert status_of(service, name)["serving"]["challenger"] is None


def test_a_model_removed_from_the_registry_leaves_the_gauges(service):
    name = "fraud-removed-eu"
    version = seed_model(service.registry, name)
    served = {"model": name, "role": "champion"}
    wait_until(
        lambda: exported("ray_serve_app_served_version", **served) == version,
        timeout=30,
        interval=1,
        what="the served-version gauge",
    )
    service.registry.client.delete_registered_model(name)
    wait_until(
        lambda: call(f"{service.url}/v2/models/{name}/infer", v2_payload())[0] == 404,
        timeout=SWITCH_BUDGET_S,
        what="the removed model to stop answering",
    )
    wait_until(
        lambda: exported("ray_serve_app_served_version", **served) == 0,
        timeout=30,
        interval=1,
        what="the removed model's gauge to drop to 0",
    )
    assert exported("ray_serve_app_rollout_state", model=name) == 0


def test_history_filters_by_time_and_refuses_a_bad_since(service):
    name = DEMO_MODELS[0]
    url = f"{service.url}/admin/models/{name}/history"
    everything = call(url)[1]["events"]
    assert everything and everything[0]["kind"] == "champion_serving"
    recent = call(f"{url}?since={everything[-1]['at']}")[1]["events"]
    assert recent and all(e["at"] >= everything[-1]["at"] for e in recent)
    assert call(f"{url}?since=1s")[1]["events"] == [], "nothing happened to it in the last second"
    status, answer, _ = call(f"{url}?since=yesterday")
    assert status == 400 and "'since'" in answer["error"]
