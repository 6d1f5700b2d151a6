"""deployments/ checked offline: schemas, Ray and app settings, consistency, drift, alerts.

Run: `.venv/bin/python -m pytest tests/deploy -q` (kubectl needed; promtool for the rule
tests, `apt-get install prometheus`; the CRDs in ../shared/k8s-schemas for custom kinds).
Without one of them the tests that need it skip, or fail under `CI=true` (`tests/needs.py`).
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pydantic
import pytest
import yaml

from serve_app import k8s
from serve_app.settings import APP_NAME, AppSettings
from tests.deploy.conftest import (
    DEPLOYMENTS,
    K8S_VERSION,
    RENDERS,
    REPO,
    S3_VARIANT,
    errors,
    objects,
    one,
)
from tests.needs import tool

CUSTOM_GROUPS = ("ray.io/", "monitoring.coreos.com/")
RULES = DEPLOYMENTS / "monitoring/rules/serve-app-rules.yaml"
RULES_TEST = DEPLOYMENTS / "monitoring/rules/serve-app-rules.test.yaml"
DASHBOARD = DEPLOYMENTS / "monitoring/dashboards/serve-app.json"
# Labels that Ray (replica identity) and the PodMonitor (target) add to every series.
TARGET_LABELS = {"namespace", "pod", "application", "deployment", "replica", "ray_node_type"}
# Labels KubeRay adds to the pods it creates from the RayService templates.
KUBERAY_POD_LABELS = {"ray.io/is-ray-node": "yes"}


def rayservice(docs: list[dict]) -> dict:
    return one(docs, "RayService", "serve-app")


def serve_config(docs: list[dict]) -> dict:
    return yaml.safe_load(rayservice(docs)["spec"]["serveConfigV2"])


def app_args(config: dict) -> dict:
    (app,) = [app for app in config["applications"] if app["name"] == APP_NAME]
    return app["args"]


def ray_groups(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(node type, group spec, Ray container) for the head and every worker group."""
    cluster = rayservice(docs)["spec"]["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])]
    groups += [("worker", group) for group in cluster["workerGroupSpecs"]]
    return [(kind, group, group["template"]["spec"]["containers"][0]) for kind, group in groups]


def pod_labels(kind: str, group: dict) -> dict[str, str]:
    return {
        **group["template"]["metadata"]["labels"],
        **KUBERAY_POD_LABELS,
        "ray.io/node-type": kind,
    }


def overlay_image(name: str) -> str:
    overlay = name.split("+")[0]
    kustomization = yaml.safe_load((DEPLOYMENTS / overlay / "kustomization.yaml").read_text())
    (image,) = [i for i in kustomization["images"] if i["name"] == "serve-app"]
    if "digest" in image:
        return f"{image['newName']}@{image['digest']}"
    return f"{image['newName']}:{image['newTag']}"


def selects(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in match_labels.items())


def cpus(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# -- schemas -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", RENDERS)
def test_core_objects_validate_strictly(rendered, name):
    problems = []
    for doc in rendered[name]:
        if doc["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path))
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(error.message)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", RENDERS)
def test_ray_pod_templates_validate_strictly(rendered, name):
    """The CRD embeds a pod spec; Kubernetes' own PodTemplate schema checks it once more."""
    for kind, group, _ in ray_groups(rendered[name]):
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": kind}}
        kubernetes_validate.validate(
            {**template, "template": group["template"]}, K8S_VERSION, strict=True
        )


@pytest.mark.parametrize("name", RENDERS)
def test_custom_objects_validate_against_crds(rendered, crd_validators, name):
    custom = [doc for doc in rendered[name] if doc["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert {doc["kind"] for doc in custom} >= {"RayService", "PodMonitor", "PrometheusRule"}
    for doc in custom:
        key = (doc["apiVersion"], doc["kind"])
        assert key in crd_validators, f"no CRD schema for {key}: add it to CRD_FILES"
        found = errors(crd_validators[key], doc)
        assert not found, f"{doc['kind']}/{doc['metadata']['name']}:\n" + "\n".join(found)


def test_strict_validation_catches_unknown_fields(rendered, crd_validators):
    """Typos the API server would refuse (kubectl's fieldValidation=Strict) fail offline."""
    original = rayservice(rendered["overlays/prod"])
    validator = crd_validators[("ray.io/v1", "RayService")]
    assert errors(validator, original) == []

    def worker(doc: dict) -> dict:
        return doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]

    mutations = {
        "upgradeStrategyy": lambda d: d["spec"].update(upgradeStrategyy={"type": "NewCluster"}),
        "idleTimeoutSecond": lambda d: d["spec"]["rayClusterConfig"]["autoscalerOptions"].update(
            idleTimeoutSecond=60
        ),
        "resource": lambda d: worker(d)["template"]["spec"]["containers"][0].update(resource={}),
        "maxReplicas": lambda d: worker(d).update(maxReplicas="10"),  # wrong type
        "managedBy": lambda d: d["spec"].update(managedBy="someone/else"),  # CEL `in` rule
    }
    for field, mutate in mutations.items():
        broken = copy.deepcopy(original)
        mutate(broken)
        found = errors(validator, broken)
        assert any(field in problem for problem in found), f"{field} not caught: {found}"

    monitor = copy.deepcopy(one(rendered["base"], "PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"][0]["prot"] = "metrics"
    assert errors(crd_validators[("monitoring.coreos.com/v1", "PodMonitor")], monitor)

    deployment = copy.deepcopy(one(rendered["base"], "Deployment", "mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# -- the Serve config inside the RayService ----------------------------------------------------
@pytest.mark.parametrize("name", RENDERS)
def test_serve_config_v2_is_valid_for_ray_and_the_app(rendered, name):
    from ray.serve.schema import ServeDeploySchema

    assert isinstance(rayservice(rendered[name])["spec"]["serveConfigV2"], str)
    config = serve_config(rendered[name])
    ServeDeploySchema.model_validate(config)
    args = app_args(config)
    AppSettings.model_validate(args)
    assert config["http_options"]["host"] == "0.0.0.0"
    assert args["home"] == k8s.POD_HOME
    assert args["registry"]["tracking_uri"] is None  # MLFLOW_TRACKING_URI from the pod env

    (app,) = [app for app in config["applications"] if app["name"] == APP_NAME]
    module, _, function = app["import_path"].partition(":")
    source = REPO / (module.replace(".", "/") + ".py")
    defined = {node.name for node in ast.parse(source.read_text()).body if hasattr(node, "name")}
    assert function in defined, f"{app['import_path']} does not resolve"


@pytest.mark.parametrize("name", RENDERS)
def test_serve_config_v2_passes_the_strict_serve_schema(rendered, serve_schema_validator, name):
    assert errors(serve_schema_validator, serve_config(rendered[name])) == []


def test_serve_config_checks_can_fail(rendered, serve_schema_validator):
    config = serve_config(rendered["base"])
    typo = {**config, "http_option": config["http_options"]}
    assert any("http_option" in problem for problem in errors(serve_schema_validator, typo))
    for key, valid in (("max_replicas", True), ("max_replica", False)):
        autoscaling = copy.deepcopy(config)
        autoscaling["applications"][0]["deployments"] = [
            {"name": "Router", "autoscaling_config": {key: 3}}
        ]
        found = errors(serve_schema_validator, autoscaling)
        assert found == [] if valid else any(key in problem for problem in found), found
    with pytest.raises(pydantic.ValidationError, match="extra"):
        AppSettings.model_validate({**app_args(config), "router": {"max_replica": 3}})


# -- consistency between the pieces ----------------------------------------------------------------
@pytest.mark.parametrize("name", RENDERS)
def test_ray_pods_match_the_serve_config_and_monitoring(rendered, name):
    docs = rendered[name]
    config = serve_config(docs)
    settings = AppSettings.model_validate(app_args(config))
    deployments = [settings.router, *settings.pools]
    smallest = min(d.num_cpus for d in deployments)
    needed = sum(d.max_replicas * d.num_cpus for d in deployments)
    cluster = rayservice(docs)["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == importlib.metadata.version("ray")
    assert cluster["enableInTreeAutoscaling"] is True
    assert 60 <= cluster["autoscalerOptions"]["idleTimeoutSeconds"] <= 600
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"

    monitor = one(docs, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    mlflow = one(docs, "Service", "mlflow")
    capacity = 0
    for kind, group, container in ray_groups(docs):
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports[endpoint["port"]] == int(group["rayStartParams"]["metrics-export-port"])
        assert ports["metrics"] == 8080
        assert ports["serve"] == config["http_options"]["port"]
        assert selects(monitor["spec"]["selector"]["matchLabels"], pod_labels(kind, group))
        env = {item["name"]: item for item in container["env"]}
        assert env["MLFLOW_TRACKING_URI"]["value"] == (
            f"http://{mlflow['metadata']['name']}:{mlflow['spec']['ports'][0]['port']}"
        )
        if name != "base":  # the overlay's `images:` reaches the RayService's containers
            assert container["image"] == overlay_image(name)
        if kind == "worker":
            resources = container["resources"]
            assert resources["requests"] == resources["limits"], "Ray counts the limit"
            worker_cpus = cpus(resources["limits"]["cpu"])
            assert worker_cpus >= smallest, "a worker cannot hold one Serve replica"
            capacity += worker_cpus * group["maxReplicas"]
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert capacity >= needed, "workers at maxReplicas cannot hold every deployment's max_replicas"


@pytest.mark.parametrize("name", RENDERS)
def test_selectors_and_secrets(rendered, name):
    docs = rendered[name]
    assert not list(objects(docs, "Secret")), "Secrets are created by hand, never committed"
    deployment = one(docs, "Deployment", "mlflow")
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], template_labels)
    assert selects(one(docs, "Service", "mlflow")["spec"]["selector"], template_labels)
    env = {
        item["name"]: item
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-db",
        "key": "uri",
    }
    dashboard = one(docs, "ConfigMap", "serve-app-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["serve-app.json"])["uid"] == "serve-app"


def test_overlays(rendered):
    def worker(docs):
        return rayservice(docs)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]

    dev = worker(rendered["overlays/dev"])
    assert (dev["replicas"], dev["minReplicas"], dev["maxReplicas"]) == (1, 1, 1)
    prod_docs = rendered["overlays/prod"]
    prod = worker(prod_docs)
    assert (prod["minReplicas"], prod["maxReplicas"]) == (2, 10)
    anti = prod["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    worker_labels = pod_labels("worker", prod)
    assert selects(term["labelSelector"]["matchLabels"], worker_labels)
    head_labels = pod_labels(
        "head", rayservice(prod_docs)["spec"]["rayClusterConfig"]["headGroupSpec"]
    )
    pdb = one(prod_docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], worker_labels)
    assert not selects(pdb["spec"]["selector"]["matchLabels"], head_labels)

    policy = one(prod_docs, "NetworkPolicy", "serve-app-ray")
    for labels in (worker_labels, head_labels):
        assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    admitted = {
        port["port"]
        for rule in policy["spec"]["ingress"]
        if all("namespaceSelector" in peer for peer in rule["from"])
        for port in rule.get("ports", [])
    }
    assert {8000, 8080} <= admitted
    assert all(
        rule.get("ports")
        for rule in policy["spec"]["ingress"]
        if any("namespaceSelector" in peer for peer in rule["from"])
    ), "a rule from other namespaces must name its ports"

    s3 = rendered[S3_VARIANT]
    claims = [pvc["metadata"]["name"] for pvc in objects(s3, "PersistentVolumeClaim")]
    assert "mlflow-artifacts" not in claims  # (Redis keeps its own: GCS fault tolerance)
    spec = one(s3, "Deployment", "mlflow")["spec"]["template"]["spec"]
    env = {item["name"]: item for item in spec["containers"][0]["env"]}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-s3"
    assert "value" not in env["MLFLOW_ARTIFACTS_DESTINATION"]
    assert "secretKeyRef" in env["MLFLOW_S3_ENDPOINT_URL"]["valueFrom"]
    assert [v["name"] for v in spec["volumes"]] == ["tmp", "auth"]


def test_dockerfile_matches_the_rayservice(rendered):
    dockerfile = (REPO / "Dockerfile").read_text()
    version = rayservice(rendered["base"])["spec"]["rayClusterConfig"]["rayVersion"]
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert froms == [f"rayproject/ray:{version}-py311"]
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] == "ray"
    assert f"ray[serve]=={version}" in (REPO / "pyproject.toml").read_text()
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".serve-app"} <= {entry.strip("/") for entry in ignored}


# -- generated files: no drift ---------------------------------------------------------------
def _render_paths(root: Path) -> dict[str, Path]:
    return {
        "config_path": root / k8s.CONFIG,
        "base_path": root / k8s.RAYSERVICE_BASE,
        "out_path": root / k8s.RAYSERVICE,
        "rules_path": root / k8s.RULES,
        "rule_base_path": root / k8s.PROMETHEUSRULE_BASE,
        "rule_out_path": root / k8s.PROMETHEUSRULE,
        "overlays": root / k8s.OVERLAYS,
        "health_path": root / k8s.ARGOCD_HEALTH,
        "argocd_cm_path": root / k8s.ARGOCD_CM,
        "pins_path": root / k8s.PINS,
        "pins_out_path": root / k8s.PINS_CONFIGMAP,
    }


def test_generated_manifests_are_up_to_date():
    stale = k8s.render(**_render_paths(REPO), check=True)
    assert stale == [], f"out of date: {stale}; run `serve-app k8s render`"
    rule = yaml.safe_load((REPO / k8s.PROMETHEUSRULE).read_text())
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    for path in (k8s.RAYSERVICE, k8s.PROMETHEUSRULE):
        assert (REPO / path).read_text().startswith("# generated by `serve-app k8s render`")


def test_render_check_detects_drift(tmp_path, monkeypatch, capsys):
    for path in _render_paths(REPO).values():
        (tmp_path / path.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, tmp_path / path.relative_to(REPO), dirs_exist_ok=True)
        else:
            shutil.copy(path, tmp_path / path.relative_to(REPO))
    monkeypatch.chdir(tmp_path)
    assert k8s.main(["--check"]) == 0

    config = tmp_path / k8s.CONFIG
    document = yaml.safe_load(config.read_text())
    router = app_args(document)["router"]
    router["max_replicas"] = wanted = router.get("max_replicas", 2) + 1
    app_args(document)["limits"]["max_rows"] += 1  # no overlay overrides it
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    rules = tmp_path / k8s.RULES
    document = yaml.safe_load(rules.read_text())
    document["groups"][0]["rules"][0]["for"] = "7m"
    rules.write_text(yaml.safe_dump(document, sort_keys=False))
    assert k8s.main(["--check"]) == 1
    stderr = capsys.readouterr().err
    assert f"{k8s.RAYSERVICE} is out of date" in stderr
    assert f"{k8s.PROMETHEUSRULE} is out of date" in stderr
    for overlay in ("dev", "prod"):  # each overlay's serveConfigV2 follows the config too
        assert f"{k8s.OVERLAYS / overlay / k8s.OVERLAY_PATCH} is out of date" in stderr

    assert k8s.main([]) == 0
    assert k8s.main(["--check"]) == 0
    written = yaml.safe_load((tmp_path / k8s.RAYSERVICE).read_text())
    assert (
        app_args(yaml.safe_load(written["spec"]["serveConfigV2"]))["router"]["max_replicas"]
        == wanted
    )


def test_render_rayservice_adapts_the_config_to_a_pod():
    config = {
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": [
            {
                "name": APP_NAME,
                "import_path": "x:y",
                "args": {"registry": {"tracking_uri": "sqlite:///a.db"}},
            }
        ],
    }
    base = {"apiVersion": "ray.io/v1", "kind": "RayService", "spec": {"rayClusterConfig": {}}}
    before = copy.deepcopy((config, base))
    out = k8s.render_rayservice(config, base)
    assert (config, base) == before, "inputs must not be mutated"
    rendered = yaml.safe_load(out["spec"]["serveConfigV2"])
    assert rendered["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert app_args(rendered) == {"registry": {"tracking_uri": None}, "home": k8s.POD_HOME}
    with pytest.raises(ValueError, match="serveConfigV2"):
        k8s.render_rayservice(config, out)
    with pytest.raises(pydantic.ValidationError):
        bad = copy.deepcopy(config)
        bad["applications"][0]["args"]["router"] = {"min_replica": 1}
        k8s.render_rayservice(bad, base)
    with pytest.raises(ValueError, match="exactly one application"):
        k8s.render_rayservice({"applications": []}, base)


# -- alerts and dashboard ----------------------------------------------------------------------
def _exported_families() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Metric families defined in serve_app/metrics.py: name -> (type, tag keys)."""
    families = {}
    tree = ast.parse((REPO / "serve_app/metrics.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("Counter", "Gauge", "Histogram")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys = next((k.value for k in node.keywords if k.arg == "tag_keys"), None)
            tags = tuple(ast.literal_eval(keys)) if keys is not None else ()
            families[node.args[0].value] = (node.func.attr, tags)
    return families


def _prometheus_names() -> dict[str, tuple[str, ...]]:
    suffixes = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
    return {
        f"ray_{name}{suffix}": tags
        for name, (kind, tags) in _exported_families().items()
        for suffix in suffixes[kind]
    }


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        (f"panel {panel['id']} {target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    exprs += [
        (f"variable {var['name']}", var["definition"])
        for var in dashboard["templating"]["list"]
        if var["type"] == "query"
    ]
    return exprs


def _rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


# What the outage alerts read besides serve-app's own metrics (those vanish with the pods):
# Prometheus's scrape status, the KubeRay operator's RayService condition, and Serve's
# ingress request metrics (request_ingress_metrics.py in Ray 2.60), with their labels.
OUTSIDE_METRICS = {
    "up": ("job",),
    "kuberay_service_condition_ready": ("name", "namespace", "condition"),
    "ray_serve_num_http_requests_total": ("route", "method", "application", "status_code"),
    "ray_serve_num_http_error_requests_total": ("route", "error_code", "method", "application"),
    "ray_serve_http_request_latency_ms_bucket": ("method", "route", "application", "status_code"),
}


def test_alerts_and_dashboard_use_exported_metrics_and_labels():
    names = {**_prometheus_names(), **OUTSIDE_METRICS}
    all_tags = {tag for tags in names.values() for tag in tags}
    problems = []
    for where, expr in _rule_exprs() + _dashboard_exprs():
        used = set(re.findall(r"\bray_serve_app_\w+", expr))
        problems += [f"{where}: unknown metric {m}" for m in used - set(names)]
        used |= {name for name in OUTSIDE_METRICS if re.search(rf"\b{name}\b", expr)}
        grouped = re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", expr)
        matched = re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr)
        labels = {label.strip() for group in grouped for label in group.split(",")} | set(matched)
        allowed = all_tags | TARGET_LABELS | {"le"}
        problems += [f"{where}: unknown label {label}" for label in labels - allowed - {""}]
        if not used and not expr.startswith("label_values"):
            problems.append(f"{where}: uses no serve-app metric (nor a listed outside one)")
    assert not problems, "\n".join(problems)


def test_every_alert_is_tested_firing_and_silent():
    alerts = {name for name, _ in _rule_exprs()}
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert fired == alerts, f"alerts never shown firing: {alerts - fired}"
    assert silent == alerts, f"alerts never shown silent: {alerts - silent}"


Promtool = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="module")
def promtool() -> Promtool:
    """Runs promtool with the given arguments; without promtool, `missing` (fails under CI)."""
    binary = tool("promtool", "`apt-get install prometheus` (.ci/run does)")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)

    return run


def test_promtool_checks_the_rules(promtool: Promtool):
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: Promtool):
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(promtool: Promtool, tmp_path):
    variables = {"$__rate_interval": "5m", "$namespace": ".*", "$model": ".*"}
    rules = []
    for index, (where, expr) in enumerate(_dashboard_exprs()):
        if expr.startswith("label_values("):
            continue
        for variable, value in variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr

    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "x", "expr": "sum by (a (b)"}]}]}
        )
    )
    assert promtool("check", "rules", str(path)).returncode != 0  # the check can fail
