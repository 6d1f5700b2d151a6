"""The pins file on Kubernetes, offline: a ConfigMap generated from configs/pins.yaml,
mounted (as a directory, so updates arrive) in every Ray container at the path the pods'
serveConfigV2 names in `registry.pins_file`, and kept in step by `serve-app k8s render`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from serve_app import k8s
from serve_app.core.pins import parse_pins
from tests.deploy.conftest import RENDERS, REPO, one
from tests.deploy.test_manifests import _render_paths, app_args, ray_groups, serve_config


@pytest.mark.parametrize("name", RENDERS)
def test_every_ray_container_mounts_the_pins_where_the_serve_config_points(rendered, name):
    docs = rendered[name]
    configmap = one(docs, "ConfigMap", k8s.PINS_CONFIGMAP_NAME)  # no hash suffix: in place
    text = configmap["data"][Path(k8s.POD_PINS_FILE).name]
    assert text == (REPO / k8s.PINS).read_text(), "the repository's pins file, as it is"
    parse_pins(text)
    assert app_args(serve_config(docs))["registry"]["pins_file"] == k8s.POD_PINS_FILE
    assert Path(k8s.POD_PINS_FILE).parent == Path(k8s.POD_PINS_DIR)
    for kind, group, container in ray_groups(docs):
        mounts = [m for m in container["volumeMounts"] if m["mountPath"] == k8s.POD_PINS_DIR]
        assert len(mounts) == 1, f"{kind}: the pins are mounted once"
        assert "subPath" not in mounts[0], f"{kind}: a subPath mount never sees an update"
        assert mounts[0]["readOnly"] is True
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        source = volumes[mounts[0]["name"]]["configMap"]
        assert source["name"] == configmap["metadata"]["name"]
        assert not source.get("optional"), f"{kind}: pods without their pins must not start"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A copy of the files `serve-app k8s render` reads and writes, as the working folder."""
    for path in _render_paths(REPO).values():
        target = tmp_path / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            shutil.copy(path, target)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_pin_change_makes_the_configmap_stale_until_rendered(project, capsys):
    assert k8s.main(["--check"]) == 0
    pins = project / k8s.PINS
    pins.write_text("# CHG-1: approved\npins:\n  fraud-card-eu: 3\n")
    assert k8s.main(["--check"]) == 1
    assert f"{k8s.PINS_CONFIGMAP} is out of date" in capsys.readouterr().err
    assert k8s.main([]) == 0
    configmap = k8s.yaml.safe_load((project / k8s.PINS_CONFIGMAP).read_text())
    assert parse_pins(configmap["data"]["pins.yaml"]) == {"fraud-card-eu": 3}
    assert configmap["data"]["pins.yaml"].startswith("# CHG-1: approved\n"), "comments kept"
    assert k8s.main(["--check"]) == 0


def test_a_malformed_pins_file_fails_the_render(project, capsys):
    (project / k8s.PINS).write_text("pins:\n  fraud-card-eu: latest\n")
    assert k8s.main(["--check"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"{k8s.PINS}: the pin of 'fraud-card-eu'"), error


def test_a_config_without_a_pins_file_keeps_none_in_the_pods():
    config = {"applications": [{"name": "serve-app", "args": {}}]}
    args = app_args(k8s.yaml.safe_load(k8s.pod_serve_config(config)))
    assert "pins_file" not in args["registry"]
    config["applications"][0]["args"] = {"registry": {"pins_file": "./configs/pins.yaml"}}
    args = app_args(k8s.yaml.safe_load(k8s.pod_serve_config(config)))
    assert args["registry"]["pins_file"] == k8s.POD_PINS_FILE
