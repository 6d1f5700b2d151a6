from pathlib import Path

import pydantic
import pytest
import yaml

from serve_app.settings import AppSettings

CONFIG = Path(__file__).parents[2] / "configs" / "serve_config.yaml"


def test_config_file_args_validate():
    settings = AppSettings.from_serve_config(yaml.safe_load(CONFIG.read_text()))
    assert settings.pool.max_replicas >= settings.pool.min_replicas


def test_unknown_and_invalid_settings_are_refused():
    with pytest.raises(pydantic.ValidationError, match="extra"):
        AppSettings.model_validate({"pool": {"max_replica": 3}})
    with pytest.raises(pydantic.ValidationError, match="max_replicas"):
        AppSettings.model_validate({"pool": {"min_replicas": 3, "max_replicas": 2}})


def test_resolved_pins_home_and_registry(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SERVE_APP_HOME", str(tmp_path))
    settings = AppSettings().resolved()
    assert settings.home == str(tmp_path)
    assert settings.registry.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert AppSettings().resolved().registry.tracking_uri == "http://127.0.0.1:5000"
