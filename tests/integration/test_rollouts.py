"""Safe rollouts against the real registry and real traffic: gate, steps, guards, shadow,
manual commands, and a controller restart mid-rollout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import ray

from serve_app.core.routing import ModelRoute
from serve_app.predictions.records import decisions
from serve_app.registry.seed import DEMO_MODELS, FEATURES, synthetic_transactions, train_booster
from serve_app.runtime.onnx import OnnxModel
from serve_app.serving.controller import POLICY_TAG
from tests.conftest import ADMIN_TOKEN, wait_until
from tests.integration.helpers import Traffic, call, exported, tables_adopted, v2_payload

CLI = str(Path(sys.executable).with_name("serve-app"))
FAST = {
    "steps": [10, 50, 100],
    "step_dwell_s": 1.5,
    "step_min_requests": 15,
    "guard_min_requests": 15,
}


def cli(service, *args: str, token: str | None = ADMIN_TOKEN) -> subprocess.CompletedProcess:
    env = {**os.environ, "SERVE_APP_ADMIN_TOKEN": token or ""}
    return subprocess.run(
        [
            CLI,
            "--home",
            str(service.home),
            *args,
            *(("--url", service.url) if args[0] not in ("register",) else ()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def model_file(tmp_path: Path, name: str, **params) -> Path:
    frame, labels = synthetic_transactions(name, 6_000, "retrain")
    if params.pop("shuffle_labels", False):
        labels = np.random.default_rng(3).permutation(labels)
    booster = (
        train_booster(frame, labels)
        if not params
        else lgb.train(
            {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 2, **params},
            lgb.Dataset(frame, labels),
            60,
        )
    )
    path = tmp_path / f"{name}.txt"
    booster.save_model(path)
    return path


def eval_rows(service, name: str) -> list[list[float]]:
    rows, _, _ = service.registry.eval_set(name)
    return rows[:400].tolist()


def history(service, name: str) -> list[dict]:
    return call(f"{service.url}/admin/models/{name}/history")[1]["events"]


def event(service, name: str, kind: str, version: int | None = None) -> dict | None:
    return next(
        (
            e
            for e in history(service, name)
            if e["kind"] == kind and version in (None, e["version"])
        ),
        None,
    )


def gate_verdict(service, name: str, version: int) -> dict:
    """The gate's event for `version`: it must have passed."""
    verdict = wait_until(
        lambda: (
            event(service, name, "gate_passed", version)
            or event(service, name, "gate_rejected", version)
        ),
        timeout=30,
        what="the gate",
    )
    assert verdict["kind"] == "gate_passed", verdict
    return verdict


def register_challenger(service, tmp_path, name: str, **params) -> int:
    done = cli(
        service,
        "register",
        str(model_file(tmp_path, name, **params)),
        "--name",
        name,
        "--alias",
        "challenger",
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split(" version ")[1].split()[0])


def test_good_candidate_walks_the_steps_and_becomes_champion(service, tmp_path):
    name = DEMO_MODELS[20]
    service.registry.set_model_tag(name, POLICY_TAG, json.dumps(FAST))
    with Traffic(service.url, name, eval_rows(service, name)) as traffic:
        started = time.monotonic()
        new = register_challenger(service, tmp_path, name)
        assert not event(service, name, "gate_rejected", new), history(service, name)
        wait_until(
            lambda: service.registry.sweep()[name].aliases.get("champion") == new,
            timeout=90,
            interval=0.5,
            what="automatic promotion",
        )
        elapsed = time.monotonic() - started
        time.sleep(1.0)
    assert not traffic.failures, traffic.failures[:3]
    assert str(new) in traffic.versions()
    kinds = [e["kind"] for e in history(service, name) if e["version"] == new]
    kinds = [k for k in kinds if k != "champion_serving"]
    assert kinds[:4] == ["gate_passed", "step_reached", "step_reached", "promoted"], kinds
    assert "challenger" not in service.registry.sweep()[name].aliases
    print(f"register → 100% (fast policy {FAST}): {elapsed:.1f} s")


def test_bad_candidate_is_rejected_by_the_gate_and_never_answers(service, tmp_path):
    name = DEMO_MODELS[21]
    service.registry.set_model_tag(name, POLICY_TAG, json.dumps(FAST))
    with Traffic(service.url, name, eval_rows(service, name)) as traffic:
        bad = register_challenger(service, tmp_path, name, shuffle_labels=True)
        rejected = wait_until(
            lambda: event(service, name, "gate_rejected", bad), timeout=30, what="the gate"
        )
        time.sleep(1.0)
    assert "AUC" in rejected["detail"]
    assert str(bad) not in traffic.versions() and not traffic.failures
    assert "challenger" not in service.registry.sweep()[name].aliases
    tags = service.registry.client.get_model_version(name, str(bad)).tags
    assert tags["serve_app.gate"] == "rejected" and "AUC" in tags["serve_app.gate_reason"]


def test_shifted_scores_under_live_traffic_roll_back_automatically(service, tmp_path):
    name = DEMO_MODELS[22]
    policy = {
        **FAST,
        "steps": [50, 100],
        "step_dwell_s": 120,
        "gate_auc_margin": 0.05,
        "guard_min_scores": 200,
    }
    service.registry.set_model_tag(name, POLICY_TAG, json.dumps(policy))
    with Traffic(service.url, name, eval_rows(service, name)) as traffic:
        shifted = register_challenger(service, tmp_path, name, scale_pos_weight=400)
        passed = gate_verdict(service, name, shifted)
        rolled = wait_until(
            lambda: event(service, name, "rolled_back", shifted), timeout=90, what="rollback"
        )
        tables_adopted(service.url)
        adopted_at = time.monotonic()
        time.sleep(1.0)
    assert "PSI" in rolled["detail"]
    assert not traffic.failures
    assert str(shifted) in traffic.versions(), "the challenger must have taken live traffic"
    assert traffic.versions(since=adopted_at + 0.2) == {
        str(service.registry.sweep()[name].aliases["champion"])
    }
    assert "challenger" not in service.registry.sweep()[name].aliases
    print(f"gate passed → rolled back on drift: {rolled['at'] - passed['at']:.1f} s")


def _decisive_rows(service, name: str) -> np.ndarray:
    """Evaluation rows half of which the champion flags: there, agreement means something."""
    rows, _, _ = service.registry.eval_set(name)
    champion = service.registry.sweep()[name].aliases["champion"]
    artifact = service.registry.fetch(name, champion).artifact
    flagged = decisions(OnnxModel(artifact).predict(rows), artifact.threshold)
    count = min(int(flagged.sum()), 150)
    return np.concatenate([rows[flagged][:count], rows[~flagged][:count]])


def test_shadow_returns_only_champion_answers_and_records_the_comparison(service, tmp_path):
    name = DEMO_MODELS[24]
    # Rows the champion flags score differently on another version: the drift guard
    # would end the shadow before it compared enough (drift has a test of its own).
    policy = {**FAST, "mode": "shadow", "guard_max_psi": 50.0}
    service.registry.set_model_tag(name, POLICY_TAG, json.dumps(policy))
    champion = service.registry.sweep()[name].aliases["champion"]
    rows = _decisive_rows(service, name)
    with Traffic(service.url, name, rows.tolist()) as traffic:
        candidate = register_challenger(service, tmp_path, name)
        gate_verdict(service, name, candidate)

        def compared():
            assert not event(service, name, "rolled_back", candidate), history(service, name)
            rollout = call(f"{service.url}/admin/models")[1]["models"][name]["rollout"]
            enough = rollout and rollout["window"]["shadow_compared"] >= 2 * len(rows)
            return rollout if enough else None

        rollout = wait_until(compared, timeout=60, what="shadow comparisons")
    assert traffic.versions() == {str(champion)} and not traffic.failures
    # The agreement the two versions really have on these rows; a constant model would
    # agree on the unflagged half only.
    artifacts = {v: service.registry.fetch(name, v).artifact for v in (champion, candidate)}
    scores = {  # each version decides at its own threshold (the candidate's is calibrated)
        v: decisions(OnnxModel(artifact).predict(rows), artifact.threshold)
        for v, artifact in artifacts.items()
    }
    expected = float(np.mean(scores[champion] == scores[candidate]))
    assert abs(expected - 0.5) > 0.2, "the rows do not tell the versions from a constant"
    assert rollout["phase"] == "shadow"
    assert abs(rollout["window"]["shadow_agreement"] - expected) < 0.05, (rollout, expected)
    cli(service, "rollback", name)


def test_manual_canary_sticky_split_restart_promote_and_rollback(service, tmp_path):
    name = DEMO_MODELS[23]
    service.registry.set_model_tag(name, POLICY_TAG, json.dumps({**FAST, "step_dwell_s": 600}))
    old = service.registry.sweep()[name].aliases["champion"]
    new = register_challenger(service, tmp_path, name)
    gate_verdict(service, name, new)

    refused = cli(service, "canary", name, "--weight", "30", token="wrong")
    assert refused.returncode == 1 and "401" in refused.stderr
    done = cli(service, "canary", name, "--weight", "30")
    assert done.returncode == 0, done.stderr
    url = f"{service.url}/v2/models/{name}/infer"
    wait_until(
        lambda: (
            call(f"{service.url}/admin/models")[1]["models"][name]["serving"]["challenger_weight"]
            == 30
        ),
        timeout=5,
        what="the manual weight",
    )
    tables_adopted(service.url)
    wait_until(
        lambda: exported("ray_serve_app_served_version", model=name, role="challenger") == new,
        timeout=30,
        interval=1,
        what="the challenger's served-version gauge",
    )

    def versions_for(keys):
        return {
            k: call(url, v2_payload(), headers={"x-routing-key": k})[2]["x-model-version"]
            for k in keys
        }

    keys = [f"card-{i}" for i in range(600)]
    first, second = versions_for(keys), versions_for(keys)
    assert not event(service, name, "rolled_back", new), history(service, name)
    assert first == second, "a routing key moved between versions"
    route = ModelRoute(name, old, FEATURES, challenger=new, challenger_weight=30.0)
    assert first == {k: str(route.choose(k)) for k in keys}, "keys split unlike the table says"
    assert 0.2 < sum(v == str(new) for v in first.values()) / len(keys) < 0.4
    gated_before_restart = event(service, name, "gate_passed", new)

    with Traffic(service.url, name) as traffic:
        controller = next(
            a for a in ray.util.list_named_actors(all_namespaces=True) if "Controller" in a["name"]
        )
        ray.kill(
            ray.get_actor(controller["name"], namespace=controller["namespace"]), no_restart=True
        )
        resumed = wait_until(
            lambda: event(service, name, "rollout_resumed", new),
            timeout=90,
            interval=1,
            what="the restarted controller to resume",
        )
        assert "30%" in resumed["detail"]
        assert (
            call(f"{service.url}/admin/models")[1]["models"][name]["serving"]["challenger_weight"]
            == 30
        )

        assert cli(service, "promote", name).returncode == 0
        assert service.registry.sweep()[name].aliases == {"champion": new}
        wait_until(
            lambda: traffic.versions(since=time.monotonic() - 0.5) == {str(new)},
            timeout=10,
            what="the promoted version to take all traffic",
        )
        done = cli(service, "rollback", name)
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: traffic.versions(since=time.monotonic() - 0.3) == {str(old)},
            timeout=3,
            interval=0.1,
            what="the rollback to take effect within one poll interval",
        )
        time.sleep(1.0)
    assert not traffic.failures, traffic.failures[:3]
    assert service.registry.sweep()[name].aliases["champion"] == old
    # The history outlived the killed control actor: the gate's verdict from before it.
    assert event(service, name, "gate_passed", new) == gated_before_restart
    shown = cli(service, "history", name)
    kinds = ("gate_passed", "manual_weight", "rollout_resumed", "manual_promote", "promoted")
    positions = [shown.stdout.index(kind) for kind in (*kinds, "manual_rollback")]
    assert positions == sorted(positions), shown.stdout


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_admin_actions_need_something_to_act_on(service, action):
    done = cli(service, action, DEMO_MODELS[30])
    assert done.returncode == 1 and "409" in done.stderr
