"""Explanations against the real service (real MLflow registry, real Ray, HAProxy ingress):
contributions add up to the served score, the version that explains is the one that scores
(champion, pinned, canary-chosen by routing key), the budget answers 429 with Retry-After,
and a version registered without its LightGBM text model answers 409."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest

from serve_app.core.explain import sigmoid
from serve_app.core.routing import ModelRoute
from serve_app.registry.seed import (
    DEMO_MODELS,
    FEATURES,
    POOLED_DEMO_MODELS,
    seed_model,
    synthetic_transactions,
)
from serve_app.serving.controller import POLICY_TAG
from tests.conftest import ADMIN_TOKEN, wait_until
from tests.integration.helpers import call, exported, tables_adopted, v2_payload

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def rows_for(name: str, count: int) -> list[list[float]]:
    frame, _ = synthetic_transactions(name, count, "explain-requests")
    return frame.to_numpy().tolist()


def raw_scores(service, name: str, version: int, rows) -> np.ndarray:
    """What the version's registered LightGBM model says, read straight from MLflow."""
    booster = lgb.Booster(model_str=service.registry.booster_text(name, version))
    return booster.predict(np.asarray(rows), raw_score=True)


def explain(service, name: str, payload: dict, version: int | None = None, **headers):
    pinned = "" if version is None else f"/versions/{version}"
    return call(f"{service.url}/v2/models/{name}{pinned}/explain", payload, headers=headers)


@pytest.mark.parametrize("name", [DEMO_MODELS[41], POOLED_DEMO_MODELS[0]])
def test_contributions_add_up_to_the_served_score_of_the_version_that_scored(service, name):
    """A fast-lane model and a pool model: the score is the lane's, the reasons the router's."""
    rows = rows_for(name, 20)
    status, scored, headers = call(f"{service.url}/v2/models/{name}/infer", v2_payload(rows))
    assert status == 200, scored
    version = int(headers["x-model-version"])
    status, body, headers = explain(service, name, {**v2_payload(rows), "parameters": {"top_k": 3}})
    assert status == 200, body
    assert body["model_version"] == headers["x-model-version"] == str(version)
    served = np.array(scored["outputs"][0]["data"])
    raw = np.array([row["raw_score"] for row in body["rows"]])
    np.testing.assert_allclose([row["score"] for row in body["rows"]], served, atol=1e-6)
    np.testing.assert_allclose(sigmoid(raw), served, atol=1e-4)
    np.testing.assert_allclose(raw, raw_scores(service, name, version, rows), atol=1e-6)
    for row in body["rows"]:
        top = row["contributions"]
        assert len(top) == 3 and {c["feature"] for c in top} <= set(FEATURES)
        magnitudes = [abs(c["value_contribution"]) for c in top]
        assert magnitudes == sorted(magnitudes, reverse=True)
    status, everything, _ = explain(
        service, name, {**v2_payload(rows[:1]), "parameters": {"top_k": len(FEATURES)}}
    )
    row = everything["rows"][0]
    total = row["bias"] + sum(c["value_contribution"] for c in row["contributions"])
    assert total == pytest.approx(row["raw_score"], abs=1e-9), "all features add up exactly"


def test_a_pinned_version_explains_itself_and_one_without_a_text_model_answers_409(service):
    name = DEMO_MODELS[43]
    champion = service.registry.sweep()[name].aliases["champion"]
    newer = seed_model(service.registry, name, alias=None, salt="explain-pinned")
    rows = rows_for(name, 5)
    status, body, _ = explain(service, name, v2_payload(rows), version=newer)
    assert status == 200 and body["model_version"] == str(newer), body
    raw = np.array([row["raw_score"] for row in body["rows"]])
    np.testing.assert_allclose(raw, raw_scores(service, name, newer, rows), atol=1e-6)
    assert not np.allclose(raw, raw_scores(service, name, champion, rows), atol=1e-3)
    status, scored, _ = call(
        f"{service.url}/v2/models/{name}/versions/{newer}/infer", v2_payload(rows)
    )
    np.testing.assert_allclose(sigmoid(raw), scored["outputs"][0]["data"], atol=1e-4)

    # A version registered as before explanations existed: its ONNX graph, no text model.
    fetched = service.registry.fetch(name, champion)
    bare = service.registry.register(
        name, fetched.artifact.onnx_bytes, FEATURES, fetched.input_example
    )
    assert service.registry.booster_text(name, bare) is None
    status, _, _ = call(f"{service.url}/v2/models/{name}/versions/{bare}/infer", v2_payload(rows))
    assert status == 200, "it still scores"
    status, body, _ = explain(service, name, v2_payload(rows), version=bare)
    assert status == 409 and f"no explainer for version {bare}" in body["error"], body
    status, body, _ = explain(service, name, v2_payload(rows), version=999)
    assert status == 404 and "no version 999" in body["error"]


def test_the_canary_version_a_routing_key_gets_is_the_one_that_explains(service):
    name = DEMO_MODELS[45]
    service.registry.set_model_tag(name, POLICY_TAG, json.dumps({"step_dwell_s": 600}))
    old = service.registry.sweep()[name].aliases["champion"]
    new = seed_model(service.registry, name, alias="challenger", salt="explain-canary")
    history = f"{service.url}/admin/models/{name}/history"
    verdict = wait_until(
        lambda: next(
            (
                e
                for e in call(history)[1]["events"]
                if e["version"] == new and e["kind"] in ("gate_passed", "gate_rejected")
            ),
            None,
        ),
        timeout=60,
        what="the gate",
    )
    assert verdict["kind"] == "gate_passed", verdict
    try:
        status, answer, _ = call(
            f"{service.url}/admin/models/{name}/canary", {"weight": 50}, headers=ADMIN
        )
        assert status == 200, answer
        wait_until(
            lambda: (
                call(f"{service.url}/admin/models")[1]["models"][name]["serving"][
                    "challenger_weight"
                ]
                == 50
            ),
            timeout=10,
            what="the manual weight",
        )
        tables_adopted(service.url)
        route = ModelRoute(name, old, FEATURES, challenger=new, challenger_weight=50.0)
        rows = rows_for(name, 1)
        seen = set()
        for key in (f"acct-{n}" for n in range(30)):
            headers = {"x-routing-key": key}
            infer = call(f"{service.url}/v2/models/{name}/infer", v2_payload(rows), headers=headers)
            status, body, _ = explain(service, name, v2_payload(rows), **headers)
            assert status == 200, body
            assert body["model_version"] == infer[2]["x-model-version"] == str(route.choose(key))
            assert body["rows"][0]["score"] == pytest.approx(infer[1]["outputs"][0]["data"][0])
            seen.add(int(body["model_version"]))
        assert seen == {old, new}, "the keys reach both versions"
    finally:
        call(f"{service.url}/admin/models/{name}/rollback", {}, headers=ADMIN)
        service.registry.delete_model_tag(name, POLICY_TAG)


def test_explanations_have_a_budget_of_their_own_and_metrics_of_their_own(service):
    """Shipped settings: 50 rows/s, bursts of 100 rows, per model and router replica."""
    name = DEMO_MODELS[44]
    rows = rows_for(name, 100)
    status, body, _ = explain(service, name, v2_payload(rows))
    assert status == 200 and len(body["rows"]) == 100, body
    status, body, headers = explain(service, name, v2_payload(rows))
    assert status == 429 and "rate limit" in body["error"], body
    assert headers["retry-after"] == "2"
    status, _, _ = call(f"{service.url}/v2/models/{name}/infer", v2_payload(rows))
    assert status == 200, "scoring has no part in the explanations' budget"
    status, body, _ = explain(service, name, v2_payload(rows_for(name, 101)))
    assert status == 422 and "limit of 100" in body["error"]
    wait_until(
        lambda: explain(service, name, v2_payload(rows[:1]))[0] == 200,
        timeout=5,
        what="the budget to refill",
    )
    wait_until(
        lambda: (
            exported("ray_serve_app_explanations_total", model=name, outcome="ok") >= 2
            and exported("ray_serve_app_explanations_total", model=name, outcome="client_error")
            >= 2
            and exported("ray_serve_app_explain_latency_ms_count", model=name) >= 4
        ),
        timeout=40,
        interval=1,
        what="the explanation metrics",
    )
