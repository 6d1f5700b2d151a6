"""The environment that puts Ray Serve's HAProxy ingress in front of serve-app.

It has to be in the environment of every Ray process before the cluster starts, so it
cannot live in the Serve config. `serve-app up` and the integration tests apply it to
the local cluster they start; `serve-app k8s render` writes it into every Ray container
of the RayService; a cluster started by `ray start` needs it in its own environment.
"""

from __future__ import annotations

import socket

# Ray Serve's HAProxy ingress with the throughput-optimised replica settings: measured
# here at ~1.3 ms p50 against ~18 ms for the default proxy (benchmarks/results/levers.md).
# Least connections, not a hash of the model header: every router replica keeps every
# model open (the LRU holds the working set), so a new replica costs one cold load per
# model and a hot model spreads over all replicas; Ray's header hash is map-based, so a
# scale event remaps most models, and it pins a hot model to one replica
# (benchmarks/results/router-scaling.md).
FAST_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_BALANCE_ALGORITHM": "leastconn",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    "RAY_SERVE_HAPROXY_NBTHREAD": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # HAProxy's manager can take longer than Serve's 5 s default to report ready on a
    # busy 2-core machine; Ray then kills it and `serve.start` fails.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
}


# On Kubernetes, HAProxy's request metrics are on: they are the only count of the 502/503
# that HAProxy answers itself when no router replica can take a request (the outage alerts
# read them), worth their cost there. `RAY_SERVE_THROUGHPUT_OPTIMIZED` never goes without
# `RAY_SERVE_ENABLE_HA_PROXY`: alone it keeps Serve's proxy on the head only, the workers
# stay NotReady and the serve Service has no endpoints (tests/deploy checks both).
CLUSTER_INGRESS_ENV = {**FAST_INGRESS_ENV, "RAY_SERVE_HAPROXY_METRICS_ENABLED": "1"}


# A local cluster that `serve-app up` started and stops: Serve keeps its ingress draining
# for at least 30 s on shutdown (for a load balancer to notice), which is what made Ctrl-C
# take over 30 s. Nothing balances in front of a local cluster; 1 s is plenty. Never on
# Kubernetes, where the Service needs that time to take a terminating pod out.
LOCAL_SHUTDOWN_ENV = {
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": "1",
}


def fast_ingress_env(folder: str) -> dict[str, str]:
    """`FAST_INGRESS_ENV` plus per-run HAProxy files and ports under `folder`.

    Two instances on one machine must not share HAProxy's files or ports. HAProxy
    appends a 56-character node id to socket names, which must stay under ~97
    characters: hence a short folder under /tmp.
    """
    return {
        **FAST_INGRESS_ENV,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
