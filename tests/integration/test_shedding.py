"""Overload is answered, not queued: a router replica holds at most `max_queued_requests`
requests waiting for a slot and sheds the rest at once with 503 and Retry-After (Serve's
backpressure, configured from the router's settings), so a burst never builds a queue that
outlives every client's deadline. Every request ends as a 200 or a prompt 503; none hangs,
none is a 5xx of another kind, and the service scores again once the burst is over."""

from __future__ import annotations

import time
from collections import Counter

import mlflow
import pytest
from ray import serve

from serve_app.registry.mlflow_registry import Registry
from serve_app.registry.seed import seed_demo_models
from serve_app.serving.app import build_app
from tests.conftest import wait_until
from tests.integration.helpers import Traffic, call, v2_payload

APP = "shedding"


@pytest.fixture
def own_registry(tmp_path):
    """A one-model registry of this test's own. `Registry(uri)` makes its URI MLflow's in
    the whole process: the session's is put back after, or later tests read this one."""
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        (model,) = seed_demo_models(Registry(uri, tmp_path / "artifacts"), 1, lambda _: None)
        yield uri, model
    finally:
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous)


def test_a_burst_over_the_queue_is_shed_with_retry_after(service, own_registry, tmp_path):
    registry_uri, model = own_registry
    args = {
        "home": str(tmp_path / "home"),
        "registry": {"tracking_uri": registry_uri, "poll_interval_s": 0.5},
        "router": {
            "min_replicas": 1,
            "max_replicas": 1,
            "num_cpus": 0.1,
            "max_ongoing_requests": 1,
            "max_queued_requests": 1,
            "retry_after_s": 2.0,
        },
        "pools": [],
    }
    url = f"{service.url}/{APP}"
    infer = f"{url}/v2/models/{model}/infer"
    try:
        serve.run(build_app(args), name=APP, route_prefix=f"/{APP}")  # returns once RUNNING
        wait_until(lambda: call(infer, v2_payload())[0] == 200, 60, what="the app to score")
        with Traffic(url, model, workers=24, timeout_s=10) as traffic:
            time.sleep(4.0)
        statuses = Counter(answer.status for answer in traffic.results)
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[503] > 0 and statuses[200] > 0, statuses
        shed = [a for a in traffic.results if a.status == 503]
        assert {a.retry_after for a in shed} == {"2"}, Counter(a.retry_after for a in shed)
        status, body, headers = call(infer, v2_payload())  # the burst is over: scored again
        assert status == 200 and headers["x-model-name"] == model, body
    finally:
        serve.delete(APP)
