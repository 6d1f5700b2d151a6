"""The `serve-app` console script against the real registry and the running service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb

from serve_app.registry.seed import synthetic_transactions, train_booster
from tests.conftest import wait_until
from tests.integration.helpers import call, v2_payload

CLI = [str(Path(sys.executable).with_name("serve-app"))]


def serve_app(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "--home", str(home), *args], capture_output=True, text=True, timeout=120
    )


def test_register_lightgbm_file_then_served(service, tmp_path):
    frame, labels = synthetic_transactions("fraud-cli-eu", 3_000)
    model_file = tmp_path / "model.txt"
    train_booster(frame, labels, rounds=30).save_model(model_file)
    eval_file = tmp_path / "eval.csv"
    frame.assign(is_fraud=labels).head(500).to_csv(eval_file, index=False)
    done = serve_app(
        service.home,
        "register",
        str(model_file),
        "--name",
        "fraud-cli-eu",
        "--alias",
        "champion",
        "--eval-set",
        str(eval_file),
    )
    assert done.returncode == 0, done.stderr
    assert "registered fraud-cli-eu version 1 and set @champion" in done.stdout

    def served():
        status, _, headers = call(f"{service.url}/v2/models/fraud-cli-eu/infer", v2_payload())
        return status == 200 and headers["x-model-version"] == "1"

    wait_until(served, timeout=15, what="the registered model to be served")
    status = json.loads(serve_app(service.home, "status", "--json", "--url", service.url).stdout)
    assert status["models"]["fraud-cli-eu"]["aliases"] == {"champion": 1}


def test_register_refuses_bad_files_with_a_clear_message(service, tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"\x00\x01 definitely not a model")
    done = serve_app(service.home, "register", str(junk), "--name", "fraud-junk")
    assert (
        done.returncode == 2
        and "refused:" in done.stderr
        and "not a LightGBM model file" in done.stderr
    )

    frame, labels = synthetic_transactions("fraud-reg-eu", 1_000)
    regressor = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(frame, labels * 1.0), 5
    )
    regressor_file = tmp_path / "regressor.txt"
    regressor.save_model(regressor_file)
    done = serve_app(service.home, "register", str(regressor_file), "--name", "fraud-reg-eu")
    assert done.returncode == 2 and "only binary classifiers" in done.stderr
    assert (
        "fraud-junk" not in service.registry.sweep()
        and "fraud-reg-eu" not in service.registry.sweep()
    )


def test_register_onnx_file_takes_features_from_the_champion(service, tmp_path):
    name = "fraud-card-us"
    champion = service.registry.sweep()[name].aliases["champion"]
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(service.registry.fetch(name, champion).artifact.onnx_bytes)
    done = serve_app(
        service.home, "register", str(onnx_file), "--name", name, "--alias", "challenger"
    )
    assert done.returncode == 0, done.stderr
    version = service.registry.sweep()[name].aliases["challenger"]
    assert (
        service.registry.fetch(name, version).artifact.features
        == service.registry.fetch(name, champion).artifact.features
    )
    service.registry.delete_alias(name, "challenger")
