"""serve-app on a local multi-node Ray cluster, and what its scoring pool's replicas do.

Each worker node is its own raylet on this machine (`ray.cluster_utils.Cluster`), so
Serve places, starts and stops router replicas across nodes as it would on a real
cluster; the head has no CPUs, so every replica lands on a worker. Shared by
`benchmarks/autoscaling.py` and `tests/e2e/test_autoscaling.py`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from benchmarks.peers import HOUSEKEEPING
from benchmarks.servers import port_is_free
from serve_app.settings import APP_NAME, AppSettings

PORTS = range(8450, 8500)  # autoscaling runs only (tests: 8123-8278, benchmarks.run: 83xx)
POOL_DEPLOYMENT = "Router"
# Set before the first raylet starts: every Ray process and replica inherits them. No token
# auth (a stray ~/.ray/auth_token must not turn it on), Ray Serve's default proxy on every
# node (HAProxy's header hash would remap models whenever the replica count changes), and
# the benchmarks' start/stop housekeeping (a proxy slow to start on 2 busy cores is kept).
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_ENABLE_HA_PROXY": "0",
    **HOUSEKEEPING,
}


@dataclass(frozen=True)
class PoolSample:
    """The pool at one instant, as the Serve controller sees it."""

    at: float  # unix time
    target: int  # the autoscaler's target replica count
    running: tuple[str, ...]  # node label of each RUNNING replica, sorted
    starting: int
    stopping: int

    @property
    def replicas(self) -> int:
        return len(self.running)

    @property
    def nodes(self) -> set[str]:
        return set(self.running)

    def placement(self) -> str:
        """'worker-1:2 worker-2:1': running replicas per node."""
        return " ".join(f"{node}:{n}" for node, n in sorted(Counter(self.running).items()))


@contextlib.contextmanager
def local_cluster(workers: int, cpus_per_worker: int) -> Iterator[dict[str, str]]:
    """A head with 0 CPUs plus `workers` worker raylets, this process connected to it.

    Yields node id -> label ("head", "worker-1", ...). On exit Serve, the driver and every
    node process of this cluster are stopped (Cluster.shutdown stops only its own nodes).
    """
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        labels = {cluster.head_node.node_id: "head"}
        for index in range(workers):
            labels[cluster.add_node(num_cpus=cpus_per_worker).node_id] = f"worker-{index + 1}"
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        try:
            yield labels
        finally:
            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()
    finally:
        cluster.shutdown()


def free_port() -> int:
    for port in PORTS:
        if port_is_free(port):
            return port
    raise RuntimeError(f"no free port in {PORTS}")


def deploy(settings: AppSettings, port: int) -> str:
    """Deploy serve-app with `settings` (the config file's schema); return its base URL."""
    from ray import serve

    from serve_app.serving.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(settings.model_dump(mode="json")), name=APP_NAME, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def sample_pool(labels: dict[str, str]) -> PoolSample:
    """The pool's replicas now, from the controller's details (what `serve status` reads).

    Not /admin/models: it keeps listing a stopped replica for up to 30 s, which would hide
    the moment the pool is back at its minimum.
    """
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    pool = details["applications"][APP_NAME]["deployments"][POOL_DEPLOYMENT]
    states = [(str(getattr(r["state"], "value", r["state"])), r) for r in pool["replicas"]]
    count = Counter(state for state, _ in states)
    running = [labels.get(r.get("node_id", ""), "?") for state, r in states if state == "RUNNING"]
    return PoolSample(
        at=time.time(),
        target=int(pool["target_num_replicas"]),
        running=tuple(sorted(running)),
        starting=count["STARTING"] + count["UPDATING"] + count["RECOVERING"],
        stopping=count["STOPPING"] + count["PENDING_MIGRATION"],
    )
