"""Drift and retraining against the running service: the monitor judges logged traffic in
windows and names the shifted feature; `serve-app retrain` on drifted, labelled traffic
registers a challenger with its lineage that the gate passes; a poisoned label feed and a
leaking feature are refused with their reasons.

The session's settings (tests/conftest.py `service_args`) judge 200-row windows with no
minimum span and never retrain on their own (other tests' traffic would drift: a repeated
row is as drifted as traffic gets); the full automatic loop runs in tests/e2e.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from serve_app.demo_drift import new_pattern
from serve_app.registry.mlflow_registry import CHALLENGER
from serve_app.registry.seed import DEMO_MODELS, synthetic_transactions
from serve_app.retraining.job import DATA_WINDOW_TAG, PARENT_TAG, TRAINING_ROWS_TAG, TRIGGER_TAG
from tests.conftest import wait_until
from tests.integration.helpers import call, exported
from tests.integration.test_quality_loop import feedback, labelled_rows, logged, score_batches
from tests.integration.test_rollouts import cli, gate_verdict, history

DRIFT_MODEL, POISON_MODEL, LEAK_MODEL = DEMO_MODELS[36], DEMO_MODELS[37], DEMO_MODELS[38]
WINDOW_ROWS = 200  # service_args: drift.window_rows
REFUSALS = "ray_serve_app_retrain_refusals_total"


def drift(service, name: str) -> dict:
    status, body, _ = call(f"{service.url}/admin/models/{name}/drift")
    assert status == 200, body
    return body


def score_windows(service, name: str, frame: pd.DataFrame, prefix: str, rows: int) -> dict:
    """Score `frame` `rows` at a time, each chunk once the previous one has been judged:
    replicas ship their counts every table sync, and a window takes all it is handed."""
    answers: dict = {}
    for start in range(0, len(frame), rows):
        before = drift(service, name)["windows_judged"]
        chunk = frame.iloc[start : start + rows]
        answers |= score_batches(service, name, chunk, f"{prefix}-{start // rows:02d}", start)
        wait_until(
            lambda before=before: drift(service, name)["windows_judged"] > before,
            timeout=30,
            what="the window to be judged",
        )
    return answers


def label_everything(service, name: str, answers: dict, labels: np.ndarray) -> None:
    ids = list(answers)
    wait_until(lambda: logged(service, ids, name), timeout=30, what="the log to flush")
    rows = labelled_rows(answers, labels)
    for start in range(0, len(rows), 2_000):
        items = [{"request_id": r, "row": i, "label": y} for r, i, y in rows[start : start + 2_000]]
        results = feedback(service, name, items)["results"]
        refused = [x for x in results if x["status"] != "accepted"]
        assert not refused, refused[:3]


def in_parquet(service, name: str) -> int:
    """Rows of `name` in finished Parquet files (a retrain reads only those)."""
    from serve_app.retraining.dataset import log_files

    files = log_files(service.home / "predictions", name, 0.0, time.time())
    return sum(pq.read_metadata(path).num_rows for path in files)


def retrain_outcome(service, name: str, rows: int) -> dict:
    wait_until(lambda: in_parquet(service, name) >= rows, timeout=30, what="finished files")
    return retrain_outcome_now(service, name)


def retrain_outcome_now(service, name: str) -> dict:
    """`serve-app retrain NAME --wait`, and the outcome the control actor recorded."""
    done = cli(service, "retrain", name, "--wait", "150")
    report = drift(service, name)["retrain"]["last"]
    assert report is not None, done.stdout + done.stderr
    return report | {"cli": done.stdout + done.stderr, "returncode": done.returncode}


def test_steady_traffic_raises_no_alarm_and_a_shifted_feature_is_detected_and_named(service):
    name = DRIFT_MODEL
    steady, _ = synthetic_transactions(name, 4 * WINDOW_ROWS, "live-steady")
    score_windows(service, name, steady, "drift-steady", WINDOW_ROWS)
    report = drift(service, name)
    assert report["windows_judged"] == 4 and report["status"] != "drifted", report

    shifted, labels = new_pattern(name, 3_000, "live-shifted")
    answers = score_windows(service, name, shifted.iloc[: 3 * WINDOW_ROWS], "drift-on", WINDOW_ROWS)
    report = drift(service, name)
    assert report["status"] == "drifted" and "psi:amount" in report["signals"], report
    assert report["last_window"]["psi"]["amount"] > 0.1
    rest = shifted.iloc[3 * WINDOW_ROWS :]
    answers |= score_batches(service, name, rest, "drift-more", 3 * WINDOW_ROWS)
    events = [e for e in history(service, name) if e["kind"] == "drift_detected"]
    assert len(events) == 1 and "PSI amount" in events[0]["detail"], events
    wait_until(
        lambda: exported("ray_serve_app_drift_status", model=name) == 2,
        timeout=30,
        what="the drift gauges",
    )
    assert exported("ray_serve_app_drift_psi", model=name, feature="amount") > 0.1
    assert "drifted (" in cli(service, "drift", name).stdout

    # the same traffic, labelled: a retrain by hand registers a challenger the gate passes
    label_everything(service, name, answers, labels)
    outcome = retrain_outcome(service, name, len(steady) + len(shifted))
    assert outcome["outcome"] == "registered", outcome
    version = outcome["version"]
    assert f"v{version} registered" in outcome["cli"] and outcome["returncode"] == 0
    registered = service.registry.client.get_model_version(name, str(version))
    tags = registered.tags
    assert tags[PARENT_TAG] == str(outcome["parent"]) and tags[TRIGGER_TAG] == "manual"
    assert "/" in tags[DATA_WINDOW_TAG] and tags[DATA_WINDOW_TAG].startswith("20")
    sizes = json.loads(tags[TRAINING_ROWS_TAG])
    assert sizes["train_rows"] + sizes["holdout_rows"] == len(shifted)
    assert sizes["holdout_rows"] == round(0.25 * len(shifted))
    aliases = service.registry.client.get_registered_model(name).aliases
    assert int(aliases[CHALLENGER]) == version
    gate_verdict(service, name, version)
    kinds = [e["kind"] for e in history(service, name)]  # oldest first
    assert kinds.index("drift_detected") < kinds.index("retrain_started"), kinds
    assert kinds.index("retrain_started") < kinds.index("retrain_registered"), kinds
    assert kinds.index("retrain_registered") < kinds.index("gate_passed"), kinds
    cli(service, "rollback", name)  # the rollout need not run on in the session


def test_a_poisoned_label_feed_is_refused(service):
    name = POISON_MODEL
    frame, _ = synthetic_transactions(name, 1_500, "live-poison")
    answers = score_batches(service, name, frame, "poison")
    label_everything(service, name, answers, np.ones(len(frame), dtype=int))  # all "fraud"
    outcome = retrain_outcome(service, name, len(frame))
    assert outcome["reason"] == "implausible_label_rate", outcome
    assert outcome["returncode"] == 1 and "label rate 100.00%" in outcome["cli"], outcome
    refused = [e for e in history(service, name) if e["kind"] == "retrain_refused"]
    assert refused and refused[0]["detail"].startswith("implausible_label_rate")
    wait_until(
        lambda: exported(REFUSALS, model=name, reason="implausible_label_rate") == 1,
        timeout=30,
        what="the refusal counted",
    )
    assert CHALLENGER not in service.registry.client.get_registered_model(name).aliases


def test_a_feature_that_leaks_the_label_is_refused(service):
    name = LEAK_MODEL
    frame, labels = synthetic_transactions(name, 1_500, "live-leak")
    leaked = frame.assign(is_foreign=labels.astype(np.float32))  # written after the fact
    answers = score_batches(service, name, leaked, "leak")
    label_everything(service, name, answers, labels)
    outcome = retrain_outcome(service, name, len(frame))
    assert outcome["reason"] == "leakage", outcome
    assert "is_foreign (AUC 1.000)" in outcome["detail"]
    assert CHALLENGER not in service.registry.client.get_registered_model(name).aliases
