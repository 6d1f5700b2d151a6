"""Model pools: a model that needs another environment is scored by its pool, beside the
fast lane, and swaps, canaries and rolls back like every other model."""

from __future__ import annotations

import json
import time

import numpy as np
import onnxruntime

from serve_app.registry.seed import DEMO_POOL, POOLED_DEMO_MODELS, seed_model
from serve_app.runtime.onnx import OnnxModel
from serve_app.serving.controller import POLICY_TAG
from tests.conftest import wait_until
from tests.integration.helpers import ROW, Traffic, call, tables_adopted, v2_payload
from tests.integration.test_rollouts import FAST, cli, event, gate_verdict, register_challenger

POOLED = POOLED_DEMO_MODELS[0]
POOL_RUNTIME = "onnxruntime 1.20.1"  # configs/serve_config.yaml pins it for the pool


def score(service, name: str, rows: list[list[float]]):
    status, answer, headers = call(f"{service.url}/v2/models/{name}/infer", v2_payload(rows))
    assert status == 200, answer
    return np.array(answer["outputs"][0]["data"]), headers


def test_a_pool_model_is_scored_in_its_own_environment_beside_the_fast_lane(service):
    rows = [ROW, [v * 1.5 for v in ROW]]
    pooled, pooled_headers = score(service, POOLED, rows)
    fast, fast_headers = score(service, "fraud-card-eu", rows)
    assert pooled_headers["x-serve-app-lane"] == DEMO_POOL
    assert pooled_headers["x-model-runtime"] == POOL_RUNTIME
    assert fast_headers["x-serve-app-lane"] == "fast"
    assert fast_headers["x-model-runtime"] == f"onnxruntime {onnxruntime.__version__}"
    assert fast_headers["x-model-runtime"] != POOL_RUNTIME, "the environments must differ"
    version = int(pooled_headers["x-model-version"])
    offline = OnnxModel(service.registry.fetch(POOLED, version).artifact).predict(
        np.array(rows, dtype=np.float32)
    )
    np.testing.assert_allclose(pooled, offline, atol=1e-6)
    status = call(f"{service.url}/admin/models")[1]["models"]
    assert status[POOLED]["serving"]["pool"] == DEMO_POOL
    assert status["fraud-card-eu"]["serving"]["pool"] is None
    assert len(fast) == 2


def test_a_pool_model_swaps_champions_with_no_failed_request(service):
    old = service.registry.sweep()[POOLED].aliases["champion"]
    new = seed_model(service.registry, POOLED, alias=None, salt="pool-retrained")
    with Traffic(service.url, POOLED) as traffic:
        time.sleep(1.0)
        service.registry.set_alias(POOLED, "champion", new)
        wait_until(
            lambda: str(new) in traffic.versions(since=time.monotonic() - 0.5),
            timeout=20,
            what="the pool's new champion to answer",
        )
        tables_adopted(service.url)
        switched_at = time.monotonic()
        time.sleep(1.0)
    assert not traffic.failures, traffic.failures[:3]
    assert traffic.versions(since=switched_at + 0.2) == {str(new)}
    assert str(old) in traffic.versions()


def test_a_canary_on_a_pool_model_splits_and_rolls_back(service, tmp_path):
    service.registry.set_model_tag(POOLED, POLICY_TAG, json.dumps({**FAST, "step_dwell_s": 600}))
    champion = service.registry.sweep()[POOLED].aliases["champion"]
    candidate = register_challenger(service, tmp_path, POOLED)
    gate_verdict(service, POOLED, candidate)
    assert cli(service, "canary", POOLED, "--weight", "50").returncode == 0
    tables_adopted(service.url)
    with Traffic(service.url, POOLED) as traffic:
        wait_until(
            lambda: {str(champion), str(candidate)} <= traffic.versions(),
            timeout=20,
            what="both versions to answer",
        )
        done = cli(service, "rollback", POOLED)
        assert done.returncode == 0, done.stderr
        tables_adopted(service.url)
        rolled_at = time.monotonic()
        time.sleep(1.0)
    assert not traffic.failures, traffic.failures[:3]
    assert traffic.versions(since=rolled_at + 0.2) == {str(champion)}
    assert event(service, POOLED, "rolled_back", candidate)
    assert "challenger" not in service.registry.sweep()[POOLED].aliases
