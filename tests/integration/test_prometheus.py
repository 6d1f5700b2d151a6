"""A real Prometheus server scrapes the running service's metrics endpoint."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve_app.registry.seed import DEMO_MODELS
from tests.conftest import METRICS_EXPORT_PORT, wait_until
from tests.integration.helpers import call, v2_payload
from tests.needs import tool

PROMETHEUS_PORT = 8139
REQUESTS = 30
# No other test sends to this model before this one (test_scoring's sweep of every model
# runs later); the baseline still keeps earlier traffic out of the deltas.
MODEL = DEMO_MODELS[40]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    """A Prometheus of the test's own, scraping the session's Ray node every second."""
    binary = tool("prometheus", "Debian package 'prometheus' (.ci/run installs it)")
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
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}"
    try:
        wait_until(lambda: scraped(url), timeout=60, interval=1, what="Prometheus's first scrape")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def query(prometheus: str, promql: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())["data"]["result"]


def scraped(prometheus: str) -> bool:
    """Prometheus answers and has scraped the Ray node: a baseline read now is a real one."""
    try:
        found = query(prometheus, 'up{job="serve-app"}')
    except OSError:
        return False
    return bool(found) and found[0]["value"][1] == "1"


@dataclass(frozen=True)
class Totals:
    """The model's cumulative series as Prometheus has them (0 before its first request)."""

    requests_ok: float
    latency_count: float
    latency_sum_ms: float

    def __sub__(self, other: Totals) -> Totals:
        return Totals(
            self.requests_ok - other.requests_ok,
            self.latency_count - other.latency_count,
            self.latency_sum_ms - other.latency_sum_ms,
        )


def totals(prometheus: str, model: str) -> Totals:
    def total(series: str) -> float:
        found = query(prometheus, f"sum({series})")
        return float(found[0]["value"][1]) if found else 0.0

    return Totals(
        total(f'ray_serve_app_requests_total{{model="{model}",outcome="ok"}}'),
        total(f'ray_serve_app_request_latency_ms_count{{model="{model}"}}'),
        total(f'ray_serve_app_request_latency_ms_sum{{model="{model}"}}'),
    )


def round_trip_ms(url: str) -> float:
    """One scoring request's client-side time: the server's share of it is only a part."""
    started = time.perf_counter()
    status, answer, _ = call(url, v2_payload())
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert status == 200, answer
    return elapsed_ms


def test_prometheus_scrapes_per_model_counts_and_latency(service, prometheus):
    before = totals(prometheus, MODEL)
    client_ms = [round_trip_ms(f"{service.url}/v2/models/{MODEL}/infer") for _ in range(REQUESTS)]

    def all_exported() -> Totals | None:
        grown = totals(prometheus, MODEL) - before
        return grown if min(grown.requests_ok, grown.latency_count) >= REQUESTS else None

    # Replicas flush counters every second and Ray exports every 10 s: wait for all of them.
    grown = wait_until(all_exported, timeout=60, interval=1, what=f"all {REQUESTS} requests")
    assert grown.requests_ok == REQUESTS and grown.latency_count == REQUESTS, grown
    server_mean_ms = grown.latency_sum_ms / grown.latency_count
    client_mean_ms = sum(client_ms) / REQUESTS
    assert 0 < server_mean_ms <= client_mean_ms, (server_mean_ms, client_mean_ms)
    assert query(prometheus, "ray_serve_app_models_routed")[0]["value"][1] != "0"
    assert call(f"{service.url}/v2/health/ready")[0] == 200
