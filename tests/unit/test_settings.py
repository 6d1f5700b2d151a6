from pathlib import Path

import pydantic
import pytest
import yaml

from serve_app.settings import AppSettings

CONFIG = Path(__file__).parents[2] / "configs" / "serve_config.yaml"


def test_config_file_args_validate():
    settings = AppSettings.from_serve_config(yaml.safe_load(CONFIG.read_text()))
    assert settings.router.max_replicas >= settings.router.min_replicas


def test_unknown_and_invalid_settings_are_refused():
    with pytest.raises(pydantic.ValidationError, match="extra"):
        AppSettings.model_validate({"router": {"max_replica": 3}})
    with pytest.raises(pydantic.ValidationError, match="max_replicas"):
        AppSettings.model_validate({"router": {"min_replicas": 3, "max_replicas": 2}})


def test_resolved_pins_home_and_registry(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SERVE_APP_HOME", str(tmp_path))
    settings = AppSettings().resolved()
    assert settings.home == str(tmp_path)
    assert settings.registry.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert AppSettings().resolved().registry.tracking_uri == "http://127.0.0.1:5000"


def test_model_pools_need_distinct_names_and_valid_bounds():
    pool = {"name": "legacy-ort", "runtime_env": {"pip": ["onnxruntime==1.20.1"]}}
    settings = AppSettings.model_validate({"pools": [pool]})
    assert settings.pools[0].runtime_env == {"pip": ["onnxruntime==1.20.1"]}
    with pytest.raises(pydantic.ValidationError, match="distinct"):
        AppSettings.model_validate({"pools": [pool, pool]})
    with pytest.raises(pydantic.ValidationError, match="name"):
        AppSettings.model_validate({"pools": [{"name": "Not A Name"}]})
    with pytest.raises(pydantic.ValidationError, match="max_replicas"):
        AppSettings.model_validate({"pools": [{"name": "p", "min_replicas": 2}]})


def test_replicas_per_node_and_admin_reads_default_to_serves_own_defaults():
    settings = AppSettings()
    assert settings.router.max_replicas_per_node is None  # Serve's default: unbounded
    assert settings.admin.reads_need_token is False
    spread = AppSettings.model_validate({"router": {"max_replicas_per_node": 1}})
    assert spread.router.max_replicas_per_node == 1
    with pytest.raises(pydantic.ValidationError, match="max_replicas_per_node"):
        AppSettings.model_validate({"router": {"max_replicas_per_node": 0}})
