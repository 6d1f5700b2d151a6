"""A local multi-node Ray cluster: router replicas spread over the worker nodes, and the
service keeps answering when one of those nodes is removed."""

from __future__ import annotations

import time

import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster

from serve_app.registry.seed import DEMO_MODELS
from serve_app.serving.app import build_app
from serve_app.settings import APP_NAME
from tests.conftest import http_ready, wait_until
from tests.integration.helpers import Traffic, call

HTTP_PORT = 8127


@pytest.fixture
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster, workers
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


def test_replicas_spread_and_survive_a_lost_node(cluster, seeded_home):
    cluster, workers = cluster
    serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT})
    args = {
        "home": str(seeded_home),
        "registry": {"tracking_uri": f"sqlite:///{seeded_home / 'mlflow.db'}"},
        "router": {"min_replicas": 2, "max_replicas": 2},
    }
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    url = f"http://127.0.0.1:{HTTP_PORT}"
    wait_until(lambda: http_ready(url), timeout=120, what="the service")

    def placement() -> dict[str, str]:
        replicas = call(f"{url}/admin/models")[1]["replicas"]
        return replicas if len(replicas) == 2 else None

    replicas = wait_until(placement, timeout=30, what="both replicas to report")
    nodes = {info["node"] for info in replicas.values()}
    worker_ids = {w.node_id for w in workers}
    assert nodes == worker_ids, "the two router replicas must sit on the two worker nodes"

    with Traffic(url, DEMO_MODELS[0]) as traffic:
        time.sleep(3.0)
        removed_at = time.monotonic()
        cluster.remove_node(workers[0])
        time.sleep(20.0)
    failures = traffic.failures
    late = [f for f in failures if f[0] > removed_at + 5.0]
    assert len(failures) <= traffic.workers, (
        f"more failures than requests in flight: {failures[:5]}"
    )
    assert not late, f"requests kept failing after the node was gone: {late[:5]}"
    after = [r for r in traffic.results if r[0] > removed_at + 5.0]
    assert len(after) > 50 and all(r[1] == 200 for r in after)
    print(f"node removed: {len(failures)} failed in flight, {len(after)} served after")
