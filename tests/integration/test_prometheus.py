"""A real Prometheus server scrapes the running service's metrics endpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from serve_app.registry.seed import DEMO_MODELS
from tests.conftest import METRICS_EXPORT_PORT, wait_until
from tests.integration.helpers import call, v2_payload

PROMETHEUS_PORT = 8139


@pytest.fixture
def prometheus(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "Prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)"
        )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: serve-app\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{METRICS_EXPORT_PORT}']}}]\n"
    )
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield f"http://127.0.0.1:{PROMETHEUS_PORT}"
    process.terminate()
    process.wait(timeout=30)


def query(prometheus: str, promql: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(promql)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())["data"]["result"]
    except OSError:
        return []


def test_prometheus_scrapes_per_model_counts_and_latency(service, prometheus):
    model = DEMO_MODELS[40]
    for _ in range(30):
        assert call(f"{service.url}/v2/models/{model}/infer", v2_payload())[0] == 200
    selector = f'model="{model}",outcome="ok"'

    def counted() -> float:
        found = query(prometheus, f"sum(ray_serve_app_requests_total{{{selector}}})")
        return float(found[0]["value"][1]) if found else 0.0

    # Replicas flush counters every second and Ray exports every few: wait for all 30.
    wait_until(lambda: counted() >= 30, timeout=60, interval=1, what="all 30 requests counted")
    latency = wait_until(
        lambda: query(
            prometheus,
            "histogram_quantile(0.99, sum by (le) "
            f'(ray_serve_app_request_latency_ms_bucket{{model="{model}"}}))',
        ),
        timeout=30,
        interval=1,
        what="the latency histogram",
    )
    assert 0 < float(latency[0]["value"][1]) < 2500
    assert query(prometheus, "ray_serve_app_models_routed")[0]["value"][1] != "0"
    assert call(f"{service.url}/v2/health/ready")[0] == 200
