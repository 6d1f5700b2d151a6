"""Router autoscaling on a local multi-node Ray cluster (one raylet per worker): under
sustained load the router scales out, within its bounds and onto more than one node,
without failing a request, and back to min_replicas once the load stops.

Behaviour, not speed: the bounds are generous, the delays short (benchmarks/autoscaling.py
measures the timings)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from benchmarks.localcluster import PoolSample, deploy, local_cluster, sample_pool
from serve_app.registry.seed import DEMO_MODELS
from serve_app.settings import AppSettings, RouterSettings
from tests.conftest import http_ready, wait_until
from tests.integration.helpers import Traffic

HTTP_PORT = 8470  # in benchmarks.localcluster.PORTS, clear of the session service's port
ROUTER = RouterSettings(
    min_replicas=1,
    max_replicas=3,
    target_ongoing_requests=2,
    upscale_delay_s=1,
    downscale_delay_s=5,
)
IN_FLIGHT = 16  # asks for 16 / 2 = 8 replicas: more than max_replicas, so the cap is tested


@pytest.fixture
def cluster():
    """Its own cluster, as in test_multinode.py: 2 workers x 1 CPU hold at most
    2 replicas (0.5 CPU) each, and the head has no CPUs for replicas."""
    with local_cluster(workers=2, cpus_per_worker=1) as labels:
        yield labels


def test_pool_scales_out_under_load_and_back_in_when_idle(cluster, seeded_home):
    url = deploy(AppSettings(home=str(seeded_home), router=ROUTER), HTTP_PORT)
    wait_until(lambda: http_ready(url), timeout=120, what="the service")
    samples = [sample_pool(cluster)]
    assert samples[0].replicas == ROUTER.min_replicas

    def sampled(condition: Callable[[PoolSample], bool]) -> Callable[[], bool]:
        def check() -> bool:
            samples.append(sample_pool(cluster))
            return condition(samples[-1])

        return check

    with Traffic(url, DEMO_MODELS[0], workers=IN_FLIGHT) as traffic:
        wait_until(
            sampled(lambda s: s.replicas == ROUTER.max_replicas),
            timeout=75,
            interval=0.5,
            what=f"the router to scale out to {ROUTER.max_replicas} replicas",
        )
    scaled = samples[-1]
    assert len(scaled.nodes) > 1, f"all replicas on one node: {scaled.placement()}"
    assert traffic.results, "no request was answered"
    assert not traffic.failures, f"requests failed under load: {traffic.failures[:5]}"

    wait_until(
        sampled(
            lambda s: s.replicas == s.target == ROUTER.min_replicas and not s.starting + s.stopping
        ),
        timeout=90,
        interval=0.5,
        what=f"the idle router to scale back to {ROUTER.min_replicas} replica(s)",
    )
    over = [s for s in samples if max(s.target, s.replicas + s.starting) > ROUTER.max_replicas]
    assert not over, f"more than max_replicas: {over[:3]}"
    print(
        f"scaled to {scaled.placement()} and back to {samples[-1].placement()}; "
        f"{len(traffic.results)} requests, none failed; {len(samples)} samples"
    )
