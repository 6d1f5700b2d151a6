"""The registry as the manifests run it: the MLflow container of the rendered prod overlay
(its command, arguments and environment, secrets filled with test values) started here as a
real `mlflow server`. A caller without a user cannot register or move an alias; serve-app,
signed in as the Ray pods are, registers and promotes; a user without a grant only reads;
and no secret is on the server's command line."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient

from serve_app.proxy_env import free_port
from tests.conftest import wait_until
from tests.deploy.conftest import DEPLOYMENTS, kustomize, one
from tests.deploy.test_manifests import ray_groups
from tests.e2e.up import BIN

PASSWORD = "test-serve-app-password"


def container_and_ray_env(tmp_path: Path) -> tuple[dict, dict[str, dict]]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("")
    docs = kustomize(DEPLOYMENTS / "overlays/prod", kubeconfig)
    spec = one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]
    (_, _, head) = ray_groups(docs)[0]
    return spec["containers"][0], {item["name"]: item for item in head["env"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, dict[str, dict], int]]:
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    container, ray_env = container_and_ray_env(tmp)
    port = free_port()
    (tmp / "basic_auth.ini").write_text(  # what the README puts in the Secret mlflow-auth
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp / 'auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    secrets = {  # secretKeyRef (name, key) -> test value
        ("mlflow-db", "uri"): f"sqlite:///{tmp / 'mlflow.db'}",
        ("serve-app-mlflow", "password"): PASSWORD,
        ("mlflow-auth", "flask-secret-key"): "test-flask-secret-key",
    }
    paths = {  # the pod's mount points, here
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp / "artifacts"),
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp / "basic_auth.ini"),
        "HOME": str(tmp),
    }
    env = {**os.environ}
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        value = secrets[(ref["name"], ref["key"])] if ref else item["value"]
        env[item["name"]] = paths.get(item["name"], value)
    args = [a for a in container["args"] if not a.startswith(("--host=", "--port="))]
    args += ["--host=127.0.0.1", f"--port={port}"]
    command = [str(BIN / container["command"][0]), *args]
    log = (tmp / "server.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return True
        except OSError:
            return process.poll() is not None  # ended: fail below, not after the timeout

    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        wait_until(healthy, timeout=120, what="the mlflow server")
        assert process.poll() is None, (tmp / "server.log").read_text()[-3000:]
        yield url, ray_env, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
        # `Registry(url)` made this server MLflow's tracking URI, in this process and in
        # $MLFLOW_TRACKING_URI, which every Ray cluster started later would inherit.
        mlflow.set_tracking_uri(previous_uri)


def test_a_caller_without_a_user_can_neither_read_nor_write(server):
    url, _, _ = server
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/registered-models/create",
        data=b'{"name": "fraud-anyone"}',
        headers={"content-type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/api/2.0/mlflow/registered-models/search", timeout=10)
    assert refused.value.code == 401


def test_serve_app_registers_and_moves_aliases_a_plain_user_only_reads(server, monkeypatch):
    from serve_app.registry.mlflow_registry import Registry
    from serve_app.registry.seed import seed_demo_models

    url, ray_env, _ = server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ray_env["MLFLOW_TRACKING_USERNAME"]["value"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    registry = Registry(url, None)
    (name,) = seed_demo_models(registry, count=1, progress=lambda line: None)
    client = MlflowClient(url, url)
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    get_app_client("basic-auth", url).create_user("analyst", "analyst-password")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "analyst")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "analyst-password")
    assert client.get_registered_model(name).name == name  # reads: default_permission READ
    with pytest.raises(MlflowException, match=r"(?i)permission"):
        client.set_registered_model_alias(name, "champion", "1")


def test_no_secret_is_on_the_servers_command_line(server):
    _, _, pid = server
    command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert PASSWORD not in command_line
    assert "sqlite://" not in command_line and "postgresql" not in command_line
