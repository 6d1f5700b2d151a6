"""serve-app against a real `mlflow server` over HTTP, backed by PostgreSQL: seed through
the server, then `up`. The test starts its own PostgreSQL cluster (`tests/postgres.py`); without
the server binaries it skips, or fails under `CI=true` (`tests/needs.py`)."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from serve_app.registry.seed import FEATURES
from tests.e2e.up import CLI, ROOT, serve_app_up, user_env
from tests.integration.helpers import ROW, call, v2_payload
from tests.mlflow_server import mlflow_server
from tests.postgres import postgres_cluster

MLFLOW_PORT = 8177
POSTGRES_PORT = 8178
UP_PORT = 8126


@pytest.fixture(scope="module")
def backend_store() -> Iterator[str]:
    """A PostgreSQL cluster of the test's own, on its own port, as the mlflow backend store."""
    with postgres_cluster(POSTGRES_PORT) as postgres:
        postgres.createdb("mlflow")
        yield postgres.url("mlflow", scheme="postgresql+psycopg2")


@pytest.fixture(scope="module")
def tracking_server(backend_store, tmp_path_factory):
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    log = artifacts.parent / "mlflow-server.log"
    with mlflow_server(MLFLOW_PORT, backend_store, artifacts, log, serve_artifacts=True) as server:
        yield server.url, artifacts


def test_seed_and_serve_from_a_tracking_server(tracking_server, tmp_path):
    url, server_artifacts = tracking_server
    env = user_env(MLFLOW_TRACKING_URI=url)
    seeded = subprocess.run(
        [*CLI, "seed", "--count", "3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert seeded.returncode == 0, seeded.stderr
    assert "seeded 3 model(s)" in seeded.stdout
    assert list(server_artifacts.rglob("model.onnx")), "artifacts must live in the server's store"
    assert not (tmp_path / ".serve-app" / "artifacts").exists() or not list(
        (tmp_path / ".serve-app" / "artifacts").rglob("model.onnx")
    )

    # a client of `mlflow models serve` knows one model at the root paths
    config = yaml.safe_load((ROOT / "configs/serve_config.yaml").read_text())
    config["applications"][0]["args"]["routing"]["default_model"] = "fraud-card-eu"
    config_path = tmp_path / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    service = f"http://127.0.0.1:{UP_PORT}"
    with serve_app_up(
        tmp_path, UP_PORT, "--no-seed", "--config", str(config_path), env=env
    ) as lines:
        assert f"registry: {url}" in "".join(lines)
        status, answer, headers = call(f"{service}/v2/models/fraud-card-eu/infer", v2_payload())
        assert status == 200 and headers["x-model-version"] == "1", answer
        assert call(f"{service}/admin/models")[1]["registry_uri"] == url
        csv = ",".join(FEATURES) + "\n" + ",".join(map(str, ROW)) + "\n"
        status, root, headers = call(
            f"{service}/invocations", csv.encode(), headers={"content-type": "text/csv"}
        )
        assert status == 200 and headers["x-model-name"] == "fraud-card-eu", root
        assert root["predictions"][0] == pytest.approx(answer["outputs"][0]["data"][0], abs=1e-6)
        with urllib.request.urlopen(f"{service}/ping", timeout=10) as ping:
            assert ping.status == 200
