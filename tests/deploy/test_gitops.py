"""GitOps and GCS fault tolerance, checked offline: the Argo CD Applications and prod's Redis.

The Applications (deployments/argocd/applications) validate against Argo CD 3.6's CRD, made
strict like the other custom resources; each points at an overlay that renders here with
`kubectl kustomize` (what Argo CD's repo server runs) into its destination namespace, with the
sync policy each environment promises. GCS fault tolerance (components/gcs-fault-tolerance,
in prod): the RayService's gcsFaultToleranceOptions reach the Redis Service that is rendered
beside it, the password only ever comes from a Secret, and only the Ray head and KubeRay's
cleanup Job reach Redis (NetworkPolicy semantics, as in test_production.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from serve_app import k8s
from tests.deploy.conftest import DEPLOYMENTS, K8S_VERSION, REPO, errors, kustomize, one
from tests.deploy.test_manifests import pod_labels, rayservice
from tests.deploy.test_production import SAME, admits, namespace_named, worker_group

APPLICATIONS = DEPLOYMENTS / "argocd/applications"
APPLICATION = ("argoproj.io/v1alpha1", "Application")
PROD = "overlays/prod"
# Argo CD's sync options (docs/user-guide/sync-options.md, 3.6): the CRD takes any string,
# so a typo would be ignored silently.
SYNC_OPTIONS = {
    "Validate", "SkipDryRunOnMissingResource", "Prune", "Delete", "ApplyOutOfSyncOnly",
    "PrunePropagationPolicy", "PruneLast", "Replace", "Force", "ServerSideApply",
    "ClientSideApplyMigration", "FailOnSharedResource", "RespectIgnoreDifferences",
    "CreateNamespace",
}  # fmt: skip
# A head pod, rescheduled and restarted, reloads its state in about two minutes.
HEAD_RESTART_S = 120


def applications() -> dict[str, dict]:
    """Every Application, by its overlay path (relative to deployments/)."""
    found = {}
    for path in sorted(APPLICATIONS.glob("*.yaml")):
        app = yaml.safe_load(path.read_text())
        found[str(Path(app["spec"]["source"]["path"]).relative_to("deployments"))] = app
    return found


def sync_options(app: dict) -> dict[str, str]:
    return dict(option.split("=", 1) for option in app["spec"]["syncPolicy"]["syncOptions"])


# -- the Applications ---------------------------------------------------------------------
def test_there_is_one_application_per_overlay_and_they_validate(crd_validators):
    apps = applications()
    assert set(apps) == {"overlays/dev", PROD}
    for app in apps.values():
        assert (app["apiVersion"], app["kind"]) == APPLICATION
        found = errors(crd_validators[APPLICATION], app)
        assert not found, f"{app['metadata']['name']}:\n" + "\n".join(found)
        assert app["metadata"]["namespace"] == "argocd"  # where Argo CD watches Applications


def test_application_typos_fail(crd_validators):
    app = applications()[PROD]
    for mutate, field in (
        (lambda a: a["spec"]["syncPolicy"]["automated"].update(selfheal=True), "selfheal"),
        (lambda a: a["spec"]["source"].update(targetRevison="x"), "targetRevison"),
        (lambda a: a["spec"].update(ignoreDifferences=[{"kind": 1}]), "kind"),
    ):
        broken = copy.deepcopy(app)
        mutate(broken)
        assert any(field in problem for problem in errors(crd_validators[APPLICATION], broken))


@pytest.mark.parametrize("overlay", ["overlays/dev", PROD])
def test_each_application_deploys_its_overlay_as_rendered_here(overlay, kubeconfig):
    app = applications()[overlay]
    source = app["spec"]["source"]
    directory = REPO / source["path"]
    assert (directory / "kustomization.yaml").is_file(), f"{source['path']} is not kustomize"
    # Nothing Argo CD would add on top of the overlay: what renders here is what it applies.
    assert set(source) == {"repoURL", "targetRevision", "path"}, set(source)
    docs = kustomize(directory, kubeconfig)
    namespace = app["spec"]["destination"]["namespace"]
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == namespace
    assert {doc["metadata"].get("namespace") for doc in docs} == {namespace}
    assert app["spec"]["destination"]["server"] == "https://kubernetes.default.svc"
    assert any(doc["kind"] == "RayService" for doc in docs)


def test_dev_follows_main_and_heals_prod_needs_a_person_to_delete():
    apps = applications()
    dev, prod = apps["overlays/dev"], apps[PROD]
    assert dev["spec"]["source"]["targetRevision"] == "main"
    assert dev["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "resources-finalizer.argocd.argoproj.io" in dev["metadata"]["finalizers"]
    # prod: a reviewed branch, applied automatically, never pruned, kept as reviewed
    assert prod["spec"]["source"]["targetRevision"] not in ("main", "HEAD", "")
    assert prod["spec"]["syncPolicy"]["automated"] == {"prune": False, "selfHeal": True}
    assert not prod["metadata"].get("finalizers"), "deleting the Application must not delete prod"
    assert sync_options(prod).get("Prune") != "true"


@pytest.mark.parametrize("overlay", ["overlays/dev", PROD])
def test_sync_options_are_argo_cd_options_and_diffs_are_server_side(overlay):
    app = applications()[overlay]
    options = sync_options(app)
    assert set(options) <= SYNC_OPTIONS, set(options) - SYNC_OPTIONS
    assert all(value in ("true", "false") for value in options.values()), options
    assert options.get("CreateNamespace") != "true", "the namespace needs its Secrets first"
    if options.get("ServerSideApply") == "true":
        # Without Server-Side Diff, SSA diffs with structured-merge diff, which Argo CD
        # discontinued: CRD defaults would show as drift forever.
        compare = app["metadata"]["annotations"]["argocd.argoproj.io/compare-options"]
        assert "ServerSideDiff=true" in compare.split(",")


@pytest.mark.parametrize("overlay", ["overlays/dev", PROD])
def test_no_ignored_difference_hides_what_the_rayservice_deploys(overlay):
    """KubeRay writes only the RayService's finalizer and status; the autoscaler scales the
    RayCluster that KubeRay owns, not the RayService. An ignored /spec path would let a
    changed serveConfigV2 or image look in sync and never be applied."""
    for entry in applications()[overlay]["spec"].get("ignoreDifferences", []):
        if entry.get("kind") == "RayService":
            paths = entry.get("jsonPointers", []) + entry.get("jqPathExpressions", [])
            assert not any(p.lstrip(".").startswith(("spec", "/spec")) for p in paths), entry


def test_the_dev_seed_job_is_a_sync_hook_made_again_each_sync(rendered):
    annotations = one(rendered["overlays/dev"], "Job", "serve-app-seed")["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"


def test_the_argocd_cm_patch_is_a_valid_configmap_that_follows_health_lua(tmp_path):
    snippet = yaml.safe_load((REPO / k8s.ARGOCD_CM).read_text())
    kubernetes_validate.validate(snippet, K8S_VERSION, strict=True)
    changed = tmp_path / "health.lua"
    changed.write_text((REPO / k8s.ARGOCD_HEALTH).read_text() + "-- changed\n")
    paths = {
        "config_path": REPO / k8s.CONFIG,
        "base_path": REPO / k8s.RAYSERVICE_BASE,
        "out_path": REPO / k8s.RAYSERVICE,
        "rules_path": REPO / k8s.RULES,
        "rule_base_path": REPO / k8s.PROMETHEUSRULE_BASE,
        "rule_out_path": REPO / k8s.PROMETHEUSRULE,
        "overlays": REPO / k8s.OVERLAYS,
        "argocd_cm_path": REPO / k8s.ARGOCD_CM,
    }
    assert k8s.render(**paths, health_path=changed, check=True) == [REPO / k8s.ARGOCD_CM]


# -- GCS fault tolerance in prod ----------------------------------------------------------
def gcs_options(docs: list[dict]) -> dict:
    return rayservice(docs)["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]


def head(docs: list[dict]) -> dict:
    return rayservice(docs)["spec"]["rayClusterConfig"]["headGroupSpec"]


def test_the_head_keeps_its_state_in_the_redis_rendered_beside_it(rendered):
    docs = rendered[PROD]
    host, _, port = gcs_options(docs)["redisAddress"].partition(":")
    service = one(docs, "Service", host)
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    redis = one(docs, "Deployment", host)
    template = redis["spec"]["template"]
    assert all(
        template["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items()
    )
    (container,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[service_port["targetPort"]] == 6379
    assert redis["spec"]["replicas"] == 1 and redis["spec"]["strategy"]["type"] == "Recreate"
    # durable: an append-only file on a volume, and no key ever evicted
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
    assert one(docs, "PersistentVolumeClaim", claim)
    config = one(docs, "ConfigMap", volumes[mounts["/etc/redis"]]["configMap"]["name"])
    settings = dict(line.split(None, 1) for line in config["data"]["redis.conf"].splitlines()
                    if line.strip() and not line.startswith("#"))  # fmt: skip
    assert settings["dir"] == "/data" and settings["appendonly"] == "yes"
    assert settings["maxmemory-policy"] == "noeviction"
    # each cluster of a NewCluster upgrade keeps its own keys (KubeRay: the RayCluster's UID)
    assert "externalStorageNamespace" not in gcs_options(docs)
    assert not {"ray.io/ft-enabled", "ray.io/external-storage-namespace"} & set(
        rayservice(docs)["metadata"].get("annotations", {})
    ), "KubeRay refuses the old annotations beside gcsFaultToleranceOptions"


def test_workers_wait_for_a_restarted_head(rendered):
    worker = worker_group(rendered[PROD])["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in worker["env"]}
    assert int(env["RAY_gcs_rpc_server_reconnect_timeout_s"]) >= 4 * HEAD_RESTART_S
    assert (
        "gcsFaultToleranceOptions"
        not in rayservice(rendered["overlays/dev"])["spec"]["rayClusterConfig"]
    ), "dev stays small: no Redis"


def test_the_redis_password_only_ever_comes_from_a_secret(rendered):
    docs = rendered[PROD]
    password = gcs_options(docs)["redisPassword"]
    assert set(password) == {"valueFrom"}, "never inline"
    ref = password["valueFrom"]["secretKeyRef"]
    assert not ref.get("optional", False)
    # KubeRay refuses these beside gcsFaultToleranceOptions; it sets them itself
    head_spec = head(docs)
    assert "redis-password" not in head_spec["rayStartParams"]
    head_env = {item["name"] for item in head_spec["template"]["spec"]["containers"][0]["env"]}
    assert not {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS"} & head_env
    # Redis reads the same Secret, into its environment: not in the ConfigMap, not in argv
    container = one(docs, "Deployment", "serve-app-redis")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref
    conf = one(docs, "ConfigMap", "serve-app-redis")["data"]["redis.conf"]
    assert not any(line.startswith("requirepass") for line in conf.splitlines())
    command = " ".join(container["command"] + container["args"])
    assert "$(REDIS_PASSWORD)" not in command, "Kubernetes would expand it into the arguments"
    assert "redis-server" in command and "--requirepass" not in command


def test_only_the_ray_head_and_kuberays_cleanup_job_reach_redis(rendered):
    docs = rendered[PROD]
    policy = one(docs, "NetworkPolicy", "serve-app-redis")
    redis = one(docs, "Deployment", "serve-app-redis")["spec"]["template"]["metadata"]["labels"]
    assert all(redis.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
    head_pod = pod_labels("head", head(docs))
    cleanup = {**head_pod, "ray.io/node-type": "redis-cleanup"}  # built from the head template
    assert admits(policy, head_pod, SAME, 6379)
    assert admits(policy, cleanup, SAME, 6379)
    assert not admits(policy, pod_labels("worker", worker_group(docs)), SAME, 6379)
    mlflow = one(docs, "Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    assert not admits(policy, mlflow, SAME, 6379)
    assert not admits(policy, head_pod, namespace_named("other"), 6379)
    assert not admits(policy, head_pod, SAME, 6380)
    # the Ray policy does not cover Redis (it admits every Ray pod and the ingress)
    ray_policy = one(docs, "NetworkPolicy", "serve-app-ray")["spec"]["podSelector"]["matchLabels"]
    assert not all(redis.get(k) == v for k, v in ray_policy.items())
