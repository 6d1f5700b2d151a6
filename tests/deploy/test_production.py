"""What the prod overlay promises an operator, checked offline on the rendered manifests:
drains that proceed, a highly available and reachable autoscaling range, the measured
ingress, a closed registry and control plane, and the smaller hardening items.

Disruption budgets and network policies are checked by their semantics (what Kubernetes
would allow), not by their shape: `allowed_evictions` and `admits` follow the API's rules.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest
import yaml

from serve_app import k8s
from serve_app.proxy_env import CLUSTER_INGRESS_ENV
from serve_app.serving.auth import TOKENS_FILE_ENV
from serve_app.settings import AppSettings
from tests.deploy.conftest import DEPLOYMENTS, RENDERS, REPO, objects, one
from tests.deploy.test_manifests import (
    app_args,
    pod_labels,
    ray_groups,
    rayservice,
    selects,
    serve_config,
)

PROD = "overlays/prod"
OVERLAYS = ("overlays/dev", PROD)


def worker_group(docs: list[dict]) -> dict:
    return rayservice(docs)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]


def settings(docs: list[dict]) -> AppSettings:
    return AppSettings.model_validate(app_args(serve_config(docs)))


# -- 1. drains ------------------------------------------------------------------------------
def allowed_evictions(pdb: dict, healthy: int, expected_pods: int | None) -> int:
    """Evictions the disruption controller allows. `expected_pods` comes from the owner's
    scale subresource: None for a RayCluster (KubeRay #2662), and then only an integer
    minAvailable can be computed; anything else allows none."""
    spec = pdb["spec"]
    if "minAvailable" in spec and isinstance(spec["minAvailable"], int):
        return max(0, healthy - spec["minAvailable"])
    if expected_pods is None:
        return 0
    if "maxUnavailable" in spec and isinstance(spec["maxUnavailable"], int):
        return max(0, spec["maxUnavailable"] - (expected_pods - healthy))
    return 0  # percentages need the expected count too; not modelled further


def test_the_disruption_budget_lets_a_drain_take_one_worker_at_a_time(rendered):
    docs = rendered[PROD]
    pdb = one(docs, "PodDisruptionBudget")
    workers = worker_group(docs)
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels("worker", workers))
    assert "maxUnavailable" not in pdb["spec"], "KubeRay pods have no scale subresource"
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    at_minimum = workers["minReplicas"]
    assert allowed_evictions(pdb, healthy=at_minimum, expected_pods=None) == 1
    assert allowed_evictions(pdb, healthy=at_minimum - 1, expected_pods=None) == 0
    assert pdb["spec"]["minAvailable"] >= 1, "a drain must never empty the worker group"
    # the budget the overlay had before: every drain blocked
    old = {"spec": {"maxUnavailable": 1}}
    assert allowed_evictions(old, healthy=at_minimum, expected_pods=None) == 0


# -- 2. highly available, and an autoscaling range that can be reached ----------------------
def test_prod_keeps_two_router_replicas_on_two_nodes_and_can_grow_to_every_worker(rendered):
    docs = rendered[PROD]
    router = settings(docs).router
    workers = worker_group(docs)
    worker_cpus = float(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert router.min_replicas >= 2
    assert router.max_replicas_per_node == 1, "two replicas on one node die together"
    assert router.min_replicas <= workers["minReplicas"], "the minimum must fit the workers"
    assert router.max_replicas == workers["maxReplicas"], "one router per worker, every worker"
    per_node = router.num_cpus + sum(
        pool.num_cpus * (pool.max_replicas_per_node or pool.max_replicas)
        for pool in settings(docs).pools
    )
    assert per_node <= worker_cpus, "a node's router and pool replicas must fit one worker"
    dev = settings(rendered["overlays/dev"]).router
    assert dev.max_replicas <= 2 and dev.max_replicas_per_node is None  # dev stays small


def test_each_overlay_renders_its_own_serve_config_from_the_one_schema(rendered):
    base = app_args(serve_config(rendered["base"]))
    for name in OVERLAYS:
        args = app_args(serve_config(rendered[name]))
        overrides = yaml.safe_load((DEPLOYMENTS / name / k8s.OVERLAY_ARGS).read_text())
        assert args == {**k8s.merged(base, overrides), "home": k8s.POD_HOME} | {
            "registry": {**base["registry"], "tracking_uri": None}
        }
        AppSettings.model_validate(args)
    prod = app_args(serve_config(rendered[PROD]))
    assert [pool["name"] for pool in prod["pools"]] == [pool["name"] for pool in base["pools"]]
    assert prod["pools"][0]["runtime_env"] == base["pools"][0]["runtime_env"]  # merged by name


def test_overlay_args_are_merged_key_by_key_and_pools_by_name():
    base = {"router": {"min_replicas": 1, "num_cpus": 0.5}, "pools": [{"name": "a", "x": 1}]}
    assert k8s.merged(base, {"router": {"min_replicas": 2}}) == {
        "router": {"min_replicas": 2, "num_cpus": 0.5},
        "pools": [{"name": "a", "x": 1}],
    }
    assert k8s.merged(base, {"pools": [{"name": "a", "y": 2}, {"name": "b"}]})["pools"] == [
        {"name": "a", "x": 1, "y": 2},
        {"name": "b"},
    ]
    assert k8s.merged(base, {"pools": []})["pools"] == []  # an empty list removes them


# -- 3. the layout that was measured --------------------------------------------------------
@pytest.mark.parametrize("name", RENDERS)
def test_every_ray_container_runs_the_measured_ingress(rendered, name):
    config = serve_config(rendered[name])
    assert config["proxy_location"] == "EveryNode"
    for kind, _, container in ray_groups(rendered[name]):
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert {k: env.get(k) for k in CLUSTER_INGRESS_ENV} == CLUSTER_INGRESS_ENV, kind
        if env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1":  # alone: proxy on the head only
            assert env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
        balance = env.get("RAY_SERVE_HAPROXY_BALANCE_ALGORITHM", "")
        # ingress-nginx drops header names with underscores unless told otherwise
        assert not (balance.startswith("hdr(") and "_" in balance), balance
        assert env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "1", "the outage alerts read them"


# -- 4. and 7. who may reach the registry and the control plane -----------------------------
def admits(policy: dict, pod: dict[str, str], namespace: dict[str, str], port: int) -> bool:
    """Whether an ingress NetworkPolicy lets a pod (labels) from a namespace (labels) reach
    `port` of the pods it selects. A peer with only a podSelector means the policy's own
    namespace (given as `namespace` == {"same": "yes"} here)."""
    for rule in policy["spec"].get("ingress", []):
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        for peer in rule.get("from", []):
            ns_selector = peer.get("namespaceSelector")
            if ns_selector is None:
                in_namespace = namespace == {"same": "yes"}
            else:
                in_namespace = selects(ns_selector.get("matchLabels", {}), namespace)
            pod_ok = selects(peer.get("podSelector", {}).get("matchLabels", {}), pod)
            if in_namespace and pod_ok:
                return True
    return False


SAME = {"same": "yes"}


def namespace_named(name: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name}


@pytest.mark.parametrize("name", OVERLAYS)
def test_only_the_ray_pods_the_seed_job_and_the_operators_reach_mlflow(rendered, name):
    docs = rendered[name]
    policy = one(docs, "NetworkPolicy", "mlflow")
    deployment = one(docs, "Deployment", "mlflow")
    assert selects(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"],
    )
    head = rayservice(docs)["spec"]["rayClusterConfig"]["headGroupSpec"]
    for labels in (pod_labels("head", head), pod_labels("worker", worker_group(docs))):
        assert admits(policy, labels, SAME, 5000)
    assert admits(policy, {"app": "toolbox"}, namespace_named("serve-app-operators"), 5000)
    assert not admits(policy, {"app": "anything"}, SAME, 5000), "any pod could move champion"
    assert not admits(policy, pod_labels("head", head), namespace_named("other"), 5000)
    assert not any(
        peer.get("namespaceSelector") == {}
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    )
    if name == "overlays/dev":
        job = one(docs, "Job", "serve-app-seed")
        assert admits(policy, job["spec"]["template"]["metadata"]["labels"], SAME, 5000)


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_registry_needs_a_user_and_keeps_its_secrets_off_the_command_line(rendered, name):
    docs = rendered[name]
    container = one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in container["args"]
    assert not any("$(" in arg or "://" in arg for arg in container["args"]), container["args"]
    env = {item["name"]: item for item in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    assert "value" not in env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    admin = env["MLFLOW_AUTH_ADMIN_USERNAME"]["value"]
    password = env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    for kind, _, ray in ray_groups(docs):  # serve-app signs in as the alias-writing admin
        ray_env = {item["name"]: item for item in ray["env"]}
        assert ray_env["MLFLOW_TRACKING_USERNAME"]["value"] == admin, kind
        assert ray_env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == password


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_ray_dashboard_and_the_admin_api_are_closed(rendered, name):
    docs = rendered[name]
    spec = rayservice(docs)["spec"]
    assert spec["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    policy = one(docs, "NetworkPolicy", "serve-app-ray")
    operator = {"app.kubernetes.io/name": "kuberay-operator"}
    assert admits(policy, operator, namespace_named("kuberay-system"), 8265)
    assert not admits(policy, operator, namespace_named("tenant-a"), 8265), "job submission"
    assert not admits(policy, {"app": "x"}, namespace_named("ingress-nginx"), 8265)
    assert admits(policy, {"app": "x"}, namespace_named("ingress-nginx"), 8000)
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                assert set(peer["namespaceSelector"]["matchLabels"]) == {
                    "kubernetes.io/metadata.name"
                }, "a namespace pinned by its name, which no tenant can set"
    reads_closed = settings(docs).admin.reads_need_token
    assert reads_closed is (name == PROD)


# -- 8. the smaller items -------------------------------------------------------------------
def test_the_autoscaler_sidecar_meets_the_restricted_pod_security_level(rendered):
    for name in OVERLAYS:
        options = rayservice(rendered[name])["spec"]["rayClusterConfig"]["autoscalerOptions"]
        context = options["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["runAsNonRoot"] is True
        assert context["seccompProfile"]["type"] == "RuntimeDefault"


@pytest.mark.parametrize("name", RENDERS)
def test_a_missing_scoring_token_keeps_the_pods_from_starting(rendered, name):
    for kind, _, container in ray_groups(rendered[name]):
        env = {item["name"]: item for item in container["env"]}
        ref = env["SERVE_APP_SCORING_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional", False), f"{kind}: scoring would be open to anyone"


def test_prod_reads_named_principals_from_the_tokens_secret(rendered):
    """The file SERVE_APP_TOKENS_FILE names is a required key of the Secret, on every pod."""
    for kind, group, container in ray_groups(rendered[PROD]):
        env = {item["name"]: item for item in container["env"]}
        path = PurePosixPath(env[TOKENS_FILE_ENV]["value"])
        (mount,) = [
            m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent
        ]
        assert mount.get("readOnly") is True, kind
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == "serve-app-tokens", kind
        assert not secret.get("optional", False), f"{kind}: would start without its principals"
        assert {"key": "principals.yaml", "path": path.name} in secret["items"], kind
    for _, _, container in ray_groups(rendered["overlays/dev"]):  # dev: the single tokens
        assert TOKENS_FILE_ENV not in {item["name"] for item in container["env"]}


def test_prod_runs_an_image_by_digest(rendered):
    for kind, _, container in ray_groups(rendered[PROD]):
        assert re.fullmatch(r"[^@:]+(:[^@]+)?@sha256:[0-9a-f]{64}", container["image"]), kind


def test_a_worker_drains_before_it_stops(rendered):
    for name in ("base", *OVERLAYS):
        worker = worker_group(rendered[name])
        spec = worker["template"]["spec"]
        (command,) = [c for c in spec["containers"] if c["name"] == "ray-worker"]
        script = command["lifecycle"]["preStop"]["exec"]["command"][-1]
        assert script.index("ray drain-node") < script.index("ray stop"), script
        slept = sum(int(s) for s in re.findall(r"sleep (\d+)", script))
        assert slept >= 30, "replicas need time to move and requests to finish"
        assert spec["terminationGracePeriodSeconds"] > slept, "killed before ray stop"


def test_dev_seeds_the_demo_models_in_the_cluster_and_prod_does_not(rendered):
    job = one(rendered["overlays/dev"], "Job", "serve-app-seed")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][0] == "serve-app" and container["command"][-1] == "seed"
    env = {item["name"]: item for item in container["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    assert "secretKeyRef" in env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]
    assert not list(objects(rendered[PROD], "Job"))


def test_the_deploy_guide_asks_for_no_step_the_code_does():
    guide = (REPO / "deployments" / "README.md").read_text()
    assert "mlflow experiments create" not in guide  # `register` and `seed` create it right
