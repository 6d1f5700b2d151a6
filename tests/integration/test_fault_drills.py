"""Fault drills against real parts: each ends with the service ready and nothing it
acknowledged lost.

The drills run on an application of their own in the session's cluster (route prefix
`/drills`, two router replicas) against a real `mlflow server` over HTTP, reached through
a fault proxy (tests/fault_proxy.py), and a PostgreSQL label store, so stopping MLflow,
killing the control actor or a router, or stopping the database touches no other test.
The drill with the artifact store (a new champion's file unreadable) is in
test_version_switch.py, on the session's file store.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
import pytest
import ray
from ray import serve

from serve_app.proxy_env import free_port
from serve_app.registry.mlflow_registry import Registry
from serve_app.registry.seed import seed_model
from serve_app.serving.app import build_app
from serve_app.serving.controller import POLICY_TAG
from tests.conftest import http_ready, wait_until
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.integration.helpers import Traffic, call, tables_adopted, v2_payload
from tests.mlflow_server import MlflowServer, mlflow_server
from tests.postgres import Postgres, postgres_cluster

APP = "drills"
CANARY_MODEL, PROMOTED_MODEL = "fraud-drill-eu", "fraud-drill-us"
ROUTERS = 2
STEP_DWELL_S = 5.0
# Gates and guards wide open: the drills are about faults, not about which model is better.
POLICY = {
    "steps": [20, 60, 100],
    "step_dwell_s": STEP_DWELL_S,
    "step_min_requests": 10,
    "guard_min_requests": 10,
    "gate_auc_margin": 1.0,
    "gate_recall_margin": 1.0,
    "gate_latency_budget_ms": 1000.0,
    "guard_max_psi": 1000.0,
    "guard_max_p99_ratio": 1000.0,
    "promotion_grace_s": 0.0,
}


@dataclass
class Drill:
    url: str  # the drill application's root
    mlflow: MlflowServer
    proxy: FaultProxy  # what the application's control actor reaches MLflow through
    registry: Registry  # the test's own client, straight to the server
    postgres: Postgres


@pytest.fixture(scope="module")
def drill(service, tmp_path_factory) -> Iterator[Drill]:
    tmp = tmp_path_factory.mktemp("drills")
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    environment = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    with (
        postgres_cluster(free_port()) as postgres,
        mlflow_server(
            free_port(), f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts", tmp / "mlflow.log"
        ) as server,
        fault_proxy(server.url) as proxy,
    ):
        postgres.createdb("labels")
        registry = Registry(server.url)
        try:
            for name in (CANARY_MODEL, PROMOTED_MODEL):
                seed_model(registry, name)
                registry.set_model_tag(name, POLICY_TAG, json.dumps(POLICY))
            args = {
                "home": str(tmp / "home"),
                "registry": {"tracking_uri": proxy.url, "poll_interval_s": 0.5},
                "router": {
                    "min_replicas": ROUTERS,
                    "max_replicas": ROUTERS,
                    "num_cpus": 0.1,
                    "preload_top_k": 2,
                },
                "pools": [],
                "labels": {"database_uri": postgres.url("labels", "postgresql+psycopg2")},
                "prediction_log": {"flush_interval_s": 0.2, "file_max_age_s": 1.0},
                "quality": {"interval_s": 1.0},
                "retrain": {"on_drift": False, "on_quality": False},
            }
            serve.run(build_app(args), name=APP, route_prefix=f"/{APP}")
            url = f"{service.url}/{APP}"
            wait_until(lambda: http_ready(url), timeout=60, what="the drill app to be ready")
            yield Drill(url, server, proxy, registry, postgres)
        finally:
            serve.delete(APP)
            # Registry() made this server MLflow's URI in this process: later tests' is theirs
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])
            for key, value in environment.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def status(drill: Drill) -> dict:
    return call(f"{drill.url}/admin/models")[1]


def history(drill: Drill, name: str) -> list[dict]:
    return call(f"{drill.url}/admin/models/{name}/history")[1]["events"]


def event(drill: Drill, name: str, kind: str, version: int) -> dict | None:
    found = (e for e in history(drill, name) if e["kind"] == kind and e["version"] == version)
    return next(found, None)


def state(drill: Drill, name: str) -> tuple:
    """What the registry and the control actor hold for `name`, for a failure message."""
    return drill.registry.sweep()[name], status(drill)["models"][name]


def replica_actors(deployment: str) -> list[str]:
    """The names of this app's live replica actors of `deployment`."""
    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix)
    ]


def kill(actor_name: str) -> None:
    """As a crash would: no graceful stop; Serve notices and starts a replacement."""
    ray.kill(ray.get_actor(actor_name, namespace="serve"), no_restart=True)


def test_mlflow_stopped_mid_canary_holds_the_step_and_resumes(drill):
    """Drill 1: MLflow stops (by its PID) while a canary is at its first step. The split
    holds, nothing fails, no step is taken or recorded while it is away; started again
    on the same port and stores, the rollout walks on to a promotion."""
    name = CANARY_MODEL
    champion = drill.registry.sweep()[name].aliases["champion"]
    with Traffic(drill.url, name, workers=4) as traffic:
        candidate = seed_model(drill.registry, name, alias="challenger", salt="canary")
        wait_until(
            lambda: event(drill, name, "gate_passed", candidate), timeout=60, what="the gate"
        )
        tables_adopted(drill.url)
        drill.mlflow.stop()
        stopped = time.time()
        wait_until(
            lambda: status(drill)["last_poll"]["ok"] is False,
            timeout=30,
            what="the control actor to see MLflow away",
        )
        at_stop = status(drill)["models"][name]["serving"]
        time.sleep(1.5 * STEP_DWELL_S)  # the canary would have walked on by now
        held = status(drill)["models"][name]["serving"]
        seen_while_away = traffic.versions(since=time.monotonic() - STEP_DWELL_S)
        drill.mlflow.start()
        restarted = time.time()
        try:
            wait_until(
                lambda: event(drill, name, "promoted", candidate),
                timeout=90,
                interval=0.5,
                what="the rollout to resume and promote",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}: {history(drill, name)}\n{state(drill, name)}") from None
        tables_adopted(drill.url)
        time.sleep(0.5)
    assert not traffic.failures, traffic.failures[:3]
    assert held == at_stop and held["challenger"] == candidate, (at_stop, held)
    assert held["challenger_weight"] < 100, held
    assert seen_while_away == {str(champion), str(candidate)}, "the split held while away"
    events = [e for e in history(drill, name) if e["version"] == candidate]
    during = [e["kind"] for e in events if stopped <= e["at"] <= restarted]
    assert "step_reached" not in during and "rolled_back" not in during, during
    after = [e["kind"] for e in events if e["at"] > restarted]
    assert "step_reached" in after and after[-2:] == ["champion_serving", "promoted"], after
    assert drill.registry.sweep()[name].aliases == {"champion": candidate}
    print(f"MLflow away {restarted - stopped:.1f} s; the canary held at {held}")


def test_control_actor_killed_during_a_promotion(drill):
    """Drill 3: the control actor dies inside a promotion, after it moved `champion` and
    before it removed `challenger` (the proxy holds that call). The next actor finishes
    the promotion: exactly one alias, the routing table agrees, the history says so."""
    name = PROMOTED_MODEL
    old = drill.registry.sweep()[name].aliases["champion"]
    with Traffic(drill.url, name, workers=4) as traffic:
        hold = drill.proxy.hold("DELETE", "/registered-models/alias")
        candidate = seed_model(drill.registry, name, alias="challenger", salt="promotion")
        assert hold.arrived.wait(timeout=90), "the promotion never came to remove challenger"
        assert event(drill, name, "gate_passed", candidate), history(drill, name)
        aliases = drill.registry.sweep()[name].aliases
        assert aliases == {"champion": candidate, "challenger": candidate}, aliases
        (controller,) = replica_actors("Controller")
        kill(controller)
        wait_until(
            lambda: controller not in replica_actors("Controller"),
            timeout=30,
            what="the killed control actor to be gone",
        )
        drill.proxy.clear()  # only now: a retry of the held call has nobody left to send it
        try:
            finished = wait_until(
                lambda: event(drill, name, "promoted", candidate),
                timeout=90,
                interval=0.5,
                what="the next control actor to finish the promotion",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}: {history(drill, name)}\n{state(drill, name)}") from None
        tables_adopted(drill.url, timeout=30)
        wait_until(
            lambda: traffic.versions(since=time.monotonic() - 0.5) == {str(candidate)},
            timeout=10,
            what="the promoted version to take all traffic",
        )
    assert not traffic.failures, traffic.failures[:3]
    assert replica_actors("Controller") not in ([], [controller])
    assert "cut short" in finished["detail"], finished
    assert drill.registry.sweep()[name].aliases == {"champion": candidate}
    model = status(drill)["models"][name]
    assert model["serving"]["champion"] == candidate and model["serving"]["challenger"] is None
    assert model["rollout"] is None and model["control_error"] is None, model
    assert "serve_app.rollout" not in drill.registry.sweep()[name].tags
    kinds = [e["kind"] for e in history(drill, name) if e["version"] == candidate]
    assert kinds[0] == "gate_passed" and kinds[-2:] == ["champion_serving", "promoted"], kinds
    assert kinds.count("promoted") == 1, kinds
    assert str(old) in traffic.versions(), "the old champion served until the switch"


def test_a_router_replica_killed_under_load(drill):
    """Drill 4: one of two router replicas crashes under load from 8 clients. At most the
    requests in flight fail; Serve replaces the replica and every later request succeeds."""
    workers = 8
    routers = replica_actors("Router")
    assert len(routers) == ROUTERS, routers
    with Traffic(drill.url, CANARY_MODEL, workers=workers) as traffic:
        time.sleep(2.0)
        killed = time.monotonic()
        kill(routers[0])
        (new,) = wait_until(
            lambda: (fresh := set(replica_actors("Router")) - set(routers)) and fresh,
            timeout=90,
            interval=0.5,
            what="Serve to start a replacement router replica",
        )
        wait_until(
            lambda: new.rsplit("#", 1)[-1] in status(drill)["replicas"],
            timeout=60,
            what="the new replica to have its routing table",
        )
        recovered = time.monotonic()
        time.sleep(3.0)
    failures = traffic.failures
    after = [r for r in traffic.results if r.at > recovered]
    print(f"router killed: {len(failures)} of {len(traffic.results)} failed: {failures[:3]}")
    assert len(failures) <= workers, failures[:10]
    assert all(f.at >= killed for f in failures), "nothing failed before the kill"
    assert after and all(r.status == 200 for r in after), "every request after recovery succeeds"


def test_label_store_down_scoring_goes_on_and_feedback_answers_503(drill):
    """Drill 5: the label database (PostgreSQL) stops. Scoring answers as before;
    feedback answers 503 at once, naming the store, and stores nothing; started again,
    the same labels are accepted, and a re-send shows they were kept."""
    name = CANARY_MODEL
    infer = f"{drill.url}/v2/models/{name}/infer"
    feedback = f"{drill.url}/v2/models/{name}/feedback"
    labels = [{"request_id": "drill-before", "label": 1}]
    assert call(infer, {**v2_payload(), "id": "drill-before"})[0] == 200
    time.sleep(1.0)  # the prediction log's writer puts the row's join keys in the store
    drill.postgres.stop()
    try:
        for n in range(20):
            started = time.monotonic()
            status_code, answer, _ = call(infer, {**v2_payload(), "id": f"drill-away-{n}"})
            assert status_code == 200 and time.monotonic() - started < 2.0, answer
        started = time.monotonic()
        status_code, answer, _ = call(feedback, labels)
        took = time.monotonic() - started
        assert status_code == 503, answer
        assert "label store is unavailable" in answer["error"], answer
        assert "send it again" in answer["error"] and "127.0.0.1" not in answer["error"]
        assert took < 5.0, f"feedback took {took:.1f} s to answer while the store is down"
        quality = call(f"{drill.url}/admin/models/{name}/quality")
        assert quality[0] == 503, quality[1]
        time.sleep(2.0)  # the control actor measures quality every second: it must go on
        assert status(drill)["last_poll"]["ok"] is True, status(drill)["last_poll"]
    finally:
        drill.postgres.start()
    accepted = wait_until(
        lambda: (done := call(feedback, labels))[0] == 200 and done[1],
        timeout=30,
        what="feedback to work again",
    )
    assert accepted["results"][0]["status"] == "accepted", accepted
    again = call(feedback, labels)[1]
    assert again["results"][0]["status"] == "duplicate", "the accepted label was kept"
    assert call(infer, v2_payload())[0] == 200 and http_ready(drill.url)
