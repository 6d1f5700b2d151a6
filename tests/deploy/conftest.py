"""Offline checks of deployments/: kustomize renders and strict schema validators.

No cluster is needed: `kubectl kustomize` renders the overlays, `kubernetes-validate` checks
core kinds, and the CRDs in `<repo>/../shared/k8s-schemas` check custom kinds with
`jsonschema`. The CRDs have no `additionalProperties: false`; the API server rejects unknown
fields only because kubectl sends `fieldValidation=Strict`, so the same strictness is added
here at load time (a typo must fail offline as it would on `kubectl apply`).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.needs import missing, tool

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "deployments"
SCHEMAS = REPO.parent / "shared" / "k8s-schemas"
K8S_VERSION = "1.33"
CRD_FILES = (
    "kuberay-v1.7.0/ray.io_rayservices.yaml",
    "prometheus-operator-v0.93.0/monitoring.coreos.com_podmonitors.yaml",
    "prometheus-operator-v0.93.0/monitoring.coreos.com_servicemonitors.yaml",
    "prometheus-operator-v0.93.0/monitoring.coreos.com_prometheusrules.yaml",
    "argo-cd-3.6/argoproj.io_applications.yaml",
)
SERVE_SCHEMA_FILE = "ray-serve-2.60.0/ServeDeploySchema.json"
S3_VARIANT = "overlays/prod+components/mlflow-s3-artifacts"
RENDERS = ("base", "overlays/dev", "overlays/prod", S3_VARIANT)

_CEL_IN_LIST = re.compile(r"^self in \[(.*)\]$")


def strictify(schema: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI/JSON schema refuse unknown fields, in place, walking it structurally.

    `additionalProperties: false` goes on every object schema with `properties`, without
    `additionalProperties` and without `x-kubernetes-preserve-unknown-fields`. `nullable`
    becomes a null type. The CRDs' two CEL rule kinds: `self in [...]` becomes an enum,
    `self == oldSelf` (immutability) only matters on update; any other rule fails loudly so
    that a new CRD version cannot silently weaken the check.
    """
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    if schema.get("nullable") and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    for rule in schema.pop("x-kubernetes-validations", []):
        if rule["rule"] == "self == oldSelf":
            continue
        match = _CEL_IN_LIST.match(rule["rule"])
        if not match:
            raise ValueError(f"CEL rule {rule['rule']!r} has no offline translation: add one")
        schema["enum"] = list(ast.literal_eval(f"[{match.group(1)}]"))
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        for sub in (schema.get(key) or {}).values():
            strictify(sub)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            strictify(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        for sub in schema.get(key) or []:
            strictify(sub)
    return schema


def errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    """Every validation error as `path: message`, deepest first."""
    found = sorted(validator.iter_errors(document), key=lambda e: -len(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def kustomize(target: Path, kubeconfig: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "`apt-get install kubectl` (.ci/run does); it renders kustomize")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}  # never talk to a server
    result = subprocess.run(
        [kubectl, "kustomize", str(target)], env=env, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {target} failed:\n{result.stderr}")
    return [doc for doc in yaml.load_all(result.stdout, Loader=yaml.CSafeLoader) if doc]


def require_schemas() -> Path:
    if not SCHEMAS.is_dir():
        missing(f"schema data at {SCHEMAS}", "see k8s-schemas/README.md in the shared folder")
    return SCHEMAS


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text("")
    return path


@pytest.fixture(scope="session")
def rendered(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Every render checked here, by name: base, dev, prod, and prod with S3 artifacts."""
    variant = tmp_path_factory.mktemp("s3-variant")
    (variant / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize refuses absolute paths
                "resources": [os.path.relpath(DEPLOYMENTS / "overlays/prod", variant)],
                "components": [
                    os.path.relpath(DEPLOYMENTS / "components/mlflow-s3-artifacts", variant)
                ],
            }
        )
    )
    renders = {name: kustomize(DEPLOYMENTS / name, kubeconfig) for name in RENDERS[:-1]}
    renders[S3_VARIANT] = kustomize(variant, kubeconfig)
    return renders


@pytest.fixture(scope="session")
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> strict validator, for every served version of each CRD."""
    root = require_schemas()
    validators = {}
    for name in CRD_FILES:
        crd = yaml.load((root / name).read_text(), Loader=yaml.CSafeLoader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strictify(version["schema"]["openAPIV3Schema"])
                validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(
                    schema
                )
    return validators


@pytest.fixture(scope="session")
def serve_schema_validator() -> jsonschema.protocols.Validator:
    """Ray Serve's config schema (ServeDeploySchema), made strict as a project rule.

    Ray itself ignores unknown keys; a typo in serveConfigV2 would silently fall back to a
    default. The free-dict branch of `autoscaling_config` is dropped so typos there count.
    """
    import json

    schema = json.loads((require_schemas() / SERVE_SCHEMA_FILE).read_text())
    autoscaling = schema["$defs"]["DeploymentSchema"]["properties"]["autoscaling_config"]
    autoscaling["anyOf"] = [branch for branch in autoscaling["anyOf"] if "$ref" in branch]
    schema = strictify(schema)
    return jsonschema.validators.validator_for(schema)(schema)


def objects(docs: list[dict], kind: str) -> Iterator[dict]:
    return (doc for doc in docs if doc["kind"] == kind)


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in objects(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
