"""The Argo CD health check for ray.io/RayService, run as Argo CD runs it.

`deployments/argocd/health/ray.io/RayService/` follows Argo CD's own layout for built-in checks
(`resource_customizations/<group>/<kind>/`): `health.lua`, `health_test.yaml` naming an input
object and the expected `healthStatus` for each case, and the objects under `testdata/`. Argo CD
runs these in Go (util/lua/health_test.go) on gopher-lua, a Lua 5.1; here the same cases run
on Lua 5.1 from PyPI `lupa`, with what Argo CD gives a script from `argocd-cm` when
`useOpenLibs` is off: the global `obj` (the live object, lists as 1-based tables) and only the
base, package and table libraries plus an `os` with `time` and `date`. The result is read as
`ExecuteHealthLua` reads it: a table with `status` and `message`, an unknown status becoming
`Unknown`. Every testdata status validates against KubeRay 1.7's CRD, strictly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from serve_app import k8s
from tests.deploy.conftest import DEPLOYMENTS, REPO, errors, require_schemas, strictify

CHECK = DEPLOYMENTS / "argocd/health/ray.io/RayService"
# gitops-engine's health codes (pkg/health/health.go); anything else is "invalid"
HEALTH_CODES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


class K8sLoader(yaml.CSafeLoader):
    """YAML as Kubernetes reads it: a timestamp stays a string (sigs.k8s.io/yaml, JSON)."""


K8sLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}


def load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=K8sLoader)


def argocd_health(script: str, obj: dict[str, Any] | None) -> dict[str, str]:
    """The health status Argo CD computes with `script` for `obj` (a fresh VM per call)."""
    from lupa import lua51  # gopher-lua implements Lua 5.1

    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    # Argo CD without useOpenLibs: no string, math, io, debug or coroutine library, and no
    # string methods ("x"):len(); os has time and date only (util/lua/oslib_safe.go).
    lua.execute(
        'debug.setmetatable("", nil)\n'
        "local time, date = os.time, os.date\n"
        "os = {time = time, date = date}\n"
        "string, math, io, debug, coroutine, python = nil, nil, nil, nil, nil, nil\n"
    )
    lua.globals().obj = lua.table_from(obj, recursive=True) if obj is not None else None
    returned = lua.execute(script)
    if returned is None:
        return {}
    if lua.eval("type")(returned) != "table":
        raise TypeError(f"expect table output from Lua script, not {lua.eval('type')(returned)}")
    result = {
        key: returned[key] for key in ("status", "message") if returned[key] not in (None, "")
    }
    if result and result.get("status") not in HEALTH_CODES:
        return {"status": "Unknown", "message": "Lua returned an invalid health status"}
    return result


def cases() -> list[dict[str, Any]]:
    return yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]


SCRIPT = (CHECK / "health.lua").read_text()


@pytest.mark.parametrize("case", cases(), ids=lambda case: Path(case["inputPath"]).stem)
def test_every_case_of_health_test_yaml(case):
    obj = load(CHECK / case["inputPath"])
    assert argocd_health(SCRIPT, obj) == case["healthStatus"]


def test_the_cases_cover_every_state_and_every_testdata_file():
    used = {case["inputPath"] for case in cases()}
    present = {f"testdata/{path.name}" for path in (CHECK / "testdata").glob("*.yaml")}
    assert used == present, f"unused: {present - used}; missing: {used - present}"
    assert {case["healthStatus"]["status"] for case in cases()} == {
        "Healthy",
        "Progressing",
        "Degraded",
        "Suspended",
    }


@pytest.fixture(scope="module")
def status_validator() -> jsonschema.protocols.Validator:
    """The strict schema of RayService `status` (ray.io/v1) from the KubeRay 1.7 CRD."""
    crd = yaml.load(
        (require_schemas() / "kuberay-v1.7.0/ray.io_rayservices.yaml").read_text(),
        Loader=yaml.CSafeLoader,
    )
    (v1,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    schema = v1["schema"]["openAPIV3Schema"]["properties"]["status"]
    return jsonschema.Draft7Validator(strictify(copy.deepcopy(schema)))


@pytest.mark.parametrize("path", sorted((CHECK / "testdata").glob("*.yaml")), ids=lambda p: p.stem)
def test_testdata_are_rayservices_whose_status_kuberay_could_write(path, status_validator):
    obj = load(path)
    assert (obj["apiVersion"], obj["kind"]) == ("ray.io/v1", "RayService")
    assert set(obj) <= {"apiVersion", "kind", "metadata", "status"}
    assert errors(status_validator, obj.get("status", {})) == []


def test_the_status_schema_check_can_fail(status_validator):
    status = load(CHECK / "testdata/healthy.yaml")["status"]
    status["activeServiceStatus"]["applicationStatus"] = {}  # KubeRay writes applicationStatuses
    status["conditions"][0]["status"] = "Yes"
    found = errors(status_validator, status)
    assert any("applicationStatus" in problem for problem in found), found
    assert any("'Yes'" in problem for problem in found), found


def test_the_harness_sees_what_argocd_sees():
    """No standard library beyond base and table, and Argo CD's reading of the result."""
    assert argocd_health('return {status = "Healthy"}', {}) == {"status": "Healthy"}
    assert argocd_health('return {status = "Fine"}', {}) == {
        "status": "Unknown",
        "message": "Lua returned an invalid health status",
    }
    assert argocd_health("return nil", {}) == {}
    assert argocd_health("return {status = obj.items[1]}", {"items": ["Degraded"]}) == {
        "status": "Degraded"
    }
    from lupa.lua51 import LuaError

    for needs_open_libs in ('string.format("%d", 1)', '("x"):len()', "math.max(1, 2)"):
        with pytest.raises(LuaError, match="attempt to index"):
            argocd_health(f"local x = {needs_open_libs}", {})


def test_a_healthy_rayservice_that_loses_its_endpoints_is_no_longer_healthy():
    obj = load(CHECK / "testdata/healthy.yaml")
    assert argocd_health(SCRIPT, obj)["status"] == "Healthy"
    obj["status"]["conditions"][0].update(status="False", reason="ZeroServeEndpoints")
    assert argocd_health(SCRIPT, obj)["status"] == "Degraded"
    obj = load(CHECK / "testdata/healthy.yaml")
    obj["status"]["pendingServiceStatus"] = {"rayClusterName": "serve-app-next"}
    obj["status"]["conditions"][1].update(status="True", reason="BothActivePendingClustersExist")
    assert argocd_health(SCRIPT, obj)["status"] == "Progressing"


def test_the_argocd_cm_snippet_carries_this_script_unchanged():
    snippet = yaml.safe_load((REPO / k8s.ARGOCD_CM).read_text())
    assert snippet["kind"] == "ConfigMap" and snippet["metadata"]["name"] == "argocd-cm"
    assert snippet["data"] == {"resource.customizations.health.ray.io_RayService": SCRIPT}
