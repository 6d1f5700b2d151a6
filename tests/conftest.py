"""Shared fixtures. One Ray cluster and one seeded registry serve the whole session."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ADMIN_TOKEN = "integration-admin-token"
os.environ["SERVE_APP_ADMIN_TOKEN"] = ADMIN_TOKEN  # replicas inherit the driver's environment

SHIPPED_CONFIG = Path(__file__).parents[1] / "configs/serve_config.yaml"
TEST_HTTP_PORT = 8123  # outside Ray's worker port range (10002-19999)
METRICS_EXPORT_PORT = 8129  # Ray's Prometheus endpoint for this session's node
POLL_INTERVAL_S = 0.5
BROKEN_RETRY_S = 2.0  # a champion that failed its load check is checked again this often
CACHED_MODEL = "fraud-crypto-eu"  # the one model with a prediction cache in the session
CACHE_TTL_S = 2.0
PINS_FILE = "pins.yaml"  # in the session's home: tests/integration/test_pins.py writes it


@dataclass
class Service:
    url: str
    home: Path
    registry: object  # serve_app.registry.mlflow_registry.Registry


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def seeded_home(tmp_path_factory) -> Path:
    from serve_app.registry.mlflow_registry import Registry
    from serve_app.registry.seed import seed_demo_models

    home = tmp_path_factory.mktemp("serve-app-home")
    registry = Registry(f"sqlite:///{home / 'mlflow.db'}", home / "artifacts")
    seed_demo_models(registry, progress=lambda line: None)
    (home / PINS_FILE).write_text("pins: {}\n")
    return home


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A local cluster with the ingress `serve-app up` ships: HAProxy with header hashing.

    The ingress is chosen by environment variables that every Ray process reads at start,
    so they are set here, before `ray.init`, exactly as `up` sets them.
    """
    import ray

    from serve_app.proxy_env import LOCAL_SHUTDOWN_ENV, fast_ingress_env

    haproxy_dir = tempfile.mkdtemp(prefix="sa-test-haproxy-")
    environment = {**fast_ingress_env(haproxy_dir), **LOCAL_SHUTDOWN_ENV}  # as `up` sets it
    previous = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=2,
        logging_level="WARNING",
        _metrics_export_port=METRICS_EXPORT_PORT,
    )
    context = ray.get_runtime_context()
    session_dir = Path(context.get_temp_dir()) / context.get_session_name()
    yield
    ray.shutdown()
    # The pool's runtime_env alone clones the 1.3 GB virtualenv into the session's folder,
    # and Ray keeps every session's folder: a few suites fill a disk.
    shutil.rmtree(session_dir, ignore_errors=True)
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(haproxy_dir, ignore_errors=True)


def service_args(home: Path) -> dict:
    """The session's application `args`: what a test that redeploys with other settings
    starts from, and restores."""
    from serve_app.settings import AppSettings

    shipped = AppSettings.from_serve_config(yaml.safe_load(SHIPPED_CONFIG.read_text()))
    return {
        "home": str(home),
        "registry": {
            "poll_interval_s": POLL_INTERVAL_S,
            "pins_file": str(home / PINS_FILE),
            "broken_retry_s": BROKEN_RETRY_S,
        },
        "cache": {"models": [CACHED_MODEL], "ttl_s": CACHE_TTL_S},
        # the shipped model pools: their own runtime_env, built by Ray on first use
        "pools": [pool.model_dump(mode="json") for pool in shipped.pools],
        # one router replica: the prediction cache and the rollout windows are per replica,
        # and HAProxy balances by least connections (router scaling: tests/e2e)
        "router": {"min_replicas": 1, "max_replicas": 1},
        # the loop in test time: logged rows joinable within a fraction of a second, Parquet
        # files closed every second, quality (gauges, the guard) measured every second
        "prediction_log": {"flush_interval_s": 0.2, "file_max_age_s": 1.0},
        "quality": {"interval_s": 1.0},
        # drift judged in 200-row windows of any span; no retrain on its own: other tests'
        # traffic (one row repeated) drifts, their labels make poor live quality;
        # tests/integration/test_drift_loop.py retrains by hand, guards sized for its rows
        "drift": {"window_rows": 200, "min_window_span_s": 0},
        "retrain": {
            "on_drift": False,
            "on_quality": False,
            "min_labelled_rows": 400,
            "min_frauds": 10,
            "cooldown_s": 0,
            "retry_s": 1,
        },
    }


@pytest.fixture(scope="session")
def service(seeded_home: Path, ray_cluster) -> Iterator[Service]:
    from ray import serve

    from serve_app.registry.mlflow_registry import Registry
    from serve_app.serving.app import build_app
    from serve_app.settings import APP_NAME

    serve.start(http_options={"host": "127.0.0.1", "port": TEST_HTTP_PORT})
    args = service_args(seeded_home)
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    url = f"http://127.0.0.1:{TEST_HTTP_PORT}"
    wait_until(lambda: http_ready(url), timeout=120, what="the service to be ready")
    registry = Registry(f"sqlite:///{seeded_home / 'mlflow.db'}", seeded_home / "artifacts")
    yield Service(url, seeded_home, registry)
    serve.shutdown()
