"""The loop, against the running service: score with known ids, send labels back (endpoint
and CSV), read live quality, and let the quality guard roll a worse challenger back.

Labels come from the demo generator itself (`synthetic_transactions` returns the
transactions with their fraud outcomes), so the figures are those of real, imperfect
models, and the test computes them offline with scikit-learn from the answers it got.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix

from serve_app.registry.mlflow_registry import THRESHOLD_TAG
from serve_app.registry.seed import FEATURES, synthetic_transactions
from serve_app.serving.controller import POLICY_TAG
from tests.conftest import wait_until
from tests.integration.helpers import call, v2_payload
from tests.integration.test_rollouts import event, gate_verdict, history, register_challenger

CLI = str(Path(sys.executable).with_name("serve-app"))
LOOP_MODEL = "fraud-wallet-eu"  # no other test scores these two models
GUARD_MODEL = "fraud-wallet-us"
ROWS_PER_REQUEST = 4


def score_batches(service, name: str, frame, prefix: str, offset: int = 0) -> dict[str, dict]:
    """V2 requests of ROWS_PER_REQUEST rows each, with ids; the answers by request id
    (`first`: the request's first row in the whole frame, of which `frame` starts at
    `offset`)."""
    answers = {}
    values = frame[list(FEATURES)].to_numpy().tolist()
    for start in range(0, len(values), ROWS_PER_REQUEST):
        request_id = f"{prefix}-{start // ROWS_PER_REQUEST:05d}"
        payload = {**v2_payload(values[start : start + ROWS_PER_REQUEST]), "id": request_id}
        status, body, headers = call(f"{service.url}/v2/models/{name}/infer", payload)
        assert status == 200, body
        assert body["id"] == request_id and headers["x-request-id"] == request_id
        probability, decision = body["outputs"]
        answers[request_id] = {
            "first": offset + start,
            "version": int(body["model_version"]),
            "scores": probability["data"],
            "decisions": decision["data"],
        }
    return answers


def labelled_rows(answers: dict[str, dict], labels: np.ndarray):
    """(request id, row, label) for every scored row."""
    return [
        (request_id, row, int(labels[answer["first"] + row]))
        for request_id, answer in answers.items()
        for row in range(len(answer["scores"]))
    ]


def feedback(service, name: str, items: list[dict]) -> dict:
    status, body, _ = call(f"{service.url}/v2/models/{name}/feedback", items)
    assert status == 200, body
    return body


def logged(service, request_ids: list[str], name: str) -> bool:
    """Every request's rows have reached the label store (the writer flushes every 0.2 s)."""
    probe = [{"request_id": r, "label": 0, "row": 999} for r in request_ids]
    results = feedback(service, name, probe)["results"]
    return all(r["status"] == "unknown_row" for r in results)


def test_score_label_and_read_live_quality(service, tmp_path):
    name = LOOP_MODEL
    since = time.time() - 1.0
    frame, labels = synthetic_transactions(name, 800, "live-traffic")
    answers = score_batches(service, name, frame, "loop")
    version = next(iter(answers.values()))["version"]
    tags = service.registry.client.get_model_version(name, str(version)).tags
    threshold = float(tags[THRESHOLD_TAG])
    for answer in answers.values():  # decisions are the score against the version's threshold
        assert answer["decisions"] == [s >= threshold for s in answer["scores"]]
    wait_until(lambda: logged(service, list(answers), name), timeout=30, what="the log to flush")

    rows = labelled_rows(answers, labels)
    by_endpoint, by_file = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    now = time.time()
    items = [{"request_id": r, "row": i, "label": y, "label_time": now} for r, i, y in by_endpoint]
    answer = feedback(service, name, items)
    assert answer["counts"] == {"accepted": len(by_endpoint)}, answer["counts"]

    chargebacks = tmp_path / "chargebacks.csv"
    with chargebacks.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["request_id", "row", "label", "label_time"])
        writer.writerows([r, i, y, "2026-11-30T10:00:00Z"] for r, i, y in by_file)
        writer.writerow(["never-scored", 0, 1, ""])
        writer.writerow([by_file[0][0], 0, "maybe", ""])
    done = subprocess.run(
        [CLI, "--home", str(service.home), "labels", "import", str(chargebacks), "--model", name],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(by_file):,} accepted, 1 unknown_id, 1 invalid" in done.stdout, done.stdout
    assert "maybe" not in done.stdout  # values are never echoed

    status, report, _ = call(f"{service.url}/admin/models/{name}/quality?since={since}")
    assert status == 200, report
    (live,) = [v for v in report["versions"] if v["version"] == version]
    assert live["role"] == "champion"
    truth = np.array([y for _, _, y in rows])
    scores = np.array([s for a in answers.values() for s in a["scores"]], dtype=np.float64)
    flagged = np.array([d for a in answers.values() for d in a["decisions"]])
    tn, fp, fn, tp = confusion_matrix(truth, flagged, labels=[0, 1]).ravel()
    total = live["total"]
    assert (total["rows"], total["labelled"], total["frauds"]) == (len(rows), len(rows), tp + fn)
    assert (total["flagged_frauds"], total["flagged_legit"]) == (tp, fp)
    assert total["maturity"] == 1.0
    assert total["recall"] == tp / (tp + fn)
    assert total["precision"] == (tp / (tp + fp) if tp + fp else None)
    assert total["false_positive_rate"] == fp / (fp + tn)
    assert total["alert_rate"] == flagged.mean()
    assert total["pr_auc"] == pytest.approx(average_precision_score(truth, scores), abs=1e-12)
    assert [c["date"] for c in live["cohorts"]] == [time.strftime("%Y-%m-%d", time.gmtime())]

    quality = subprocess.run(
        [CLI, "quality", name, "--url", service.url, "--since", str(since)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert quality.returncode == 0 and f"v{version}" in quality.stdout, quality.stderr

    # Sending the same labels again changes nothing; a different one is refused per row.
    (request_id, row, label), *_ = by_endpoint
    again = feedback(
        service,
        name,
        [
            {"request_id": request_id, "row": row, "label": label},
            {"request_id": request_id, "row": row, "label": 1 - label},
            {"request_id": request_id, "label": label},
            {"request_id": "no-such-request", "label": 1},
            {"request_id": request_id, "row": 9, "label": 1},
            {"request_id": request_id, "row": 0, "label": 7},
            {"request_id": "x" * 200, "label": 1},
        ],
    )
    statuses = [r["status"] for r in again["results"]]
    assert statuses == [
        "duplicate",
        "conflict",
        "row_required",
        "unknown_id",
        "unknown_row",
        "invalid",
        "invalid",
    ], again
    assert "7" not in json.dumps(again["results"][5])  # the bad value is not echoed

    # The full records are in the Parquet log, features by name.
    directory = service.home / "predictions"
    wait_until(lambda: any(directory.rglob("*.parquet")), timeout=30, what="a closed Parquet file")
    table = ds.dataset(directory, format="parquet", partitioning="hive").to_table(
        filter=ds.field("request_id") == "loop-00000"
    )
    assert table.num_rows == ROWS_PER_REQUEST
    record = table.sort_by("row").to_pylist()[0]
    assert record["features"] == pytest.approx(dict(zip(FEATURES, frame.iloc[0], strict=True)))
    assert record["role"] == "champion" and record["version"] == version


def test_bad_feedback_gets_a_4xx_naming_the_problem(service):
    url = f"{service.url}/v2/models/{LOOP_MODEL}/feedback"
    assert call(url, b"{not json")[0] == 400
    status, body, _ = call(url, {"labels": "all of them"})
    assert status == 400 and "list of labels" in body["error"]
    assert call(url, [])[0] == 400
    assert call(f"{service.url}/v2/models/fraud-nope-eu/feedback", [{"request_id": "a"}])[0] == 404
    assert call(url, method="GET")[0] == 405
    status, body, _ = call(
        f"{service.url}/v2/models/{LOOP_MODEL}/infer", v2_payload(), headers={"x-request-id": "a b"}
    )
    assert status == 400 and "X-Request-Id" in body["error"]


def test_a_generated_request_id_is_returned_in_body_and_header(service):
    status, body, headers = call(f"{service.url}/v2/models/{LOOP_MODEL}/infer", v2_payload())
    assert status == 200 and body["id"] and headers["x-request-id"] == body["id"]
    status, body, headers = call(
        f"{service.url}/models/{LOOP_MODEL}/invocations",
        {"inputs": v2_payload()["inputs"][0]["data"]},
        headers={"x-request-id": "mlflow-client-7"},
    )
    assert status == 200 and headers["x-request-id"] == "mlflow-client-7"
    assert len(body["decisions"]) == len(body["predictions"]) == 1


def test_quality_guard_rolls_back_a_challenger_with_worse_live_recall(service, tmp_path):
    """A near-random challenger passes a lenient gate, shadows the champion on the same
    transactions, and is rolled back once both have enough labels."""
    name = GUARD_MODEL
    policy = {
        "mode": "shadow",
        "gate_auc_margin": 1.0,
        "gate_recall_margin": 1.0,
        "guard_max_psi": 1000.0,  # the drift guard would catch it first: leave it to labels
        "guard_quality_min_labels": 150,
        "guard_quality_min_frauds": 8,
    }
    service.registry.set_model_tag(name, POLICY_TAG, json.dumps(policy))
    bad = register_challenger(service, tmp_path, name, shuffle_labels=True)
    gate_verdict(service, name, bad)
    wait_until(
        lambda: call(f"{service.url}/admin/models")[1]["models"][name]["serving"].get("shadow"),
        timeout=30,
        what="the shadow rollout in the table",
    )
    frame, labels = synthetic_transactions(name, 1_200, "guard-traffic")
    answers = score_batches(service, name, frame, "guard")
    rows = labelled_rows(answers, labels)
    wait_until(lambda: logged(service, list(answers), name), timeout=30, what="the log to flush")
    items = [{"request_id": r, "row": i, "label": y} for r, i, y in rows]
    assert feedback(service, name, items)["counts"] == {"accepted": len(items)}
    rolled = wait_until(
        lambda: event(service, name, "rolled_back", bad), timeout=60, what="the quality guard"
    )
    assert "live recall" in rolled["detail"], history(service, name)
    wait_until(  # the event is recorded first, the alias removed after a registry round trip
        lambda: "challenger" not in service.registry.sweep()[name].aliases,
        timeout=15,
        what="the challenger alias removed",
    )


def test_seeded_versions_carry_a_drift_reference_in_mlflow(service):
    """Stored with the version at registration: what the drift monitor compares against."""
    from serve_app.core.drift import ReferenceProfile

    version = service.registry.sweep()[LOOP_MODEL].aliases["champion"]
    profile = ReferenceProfile.from_json(service.registry.reference_profile(LOOP_MODEL, version))
    assert profile.names[:-1] == FEATURES and profile.rows > 1_000
    tags = service.registry.client.get_model_version(LOOP_MODEL, str(version)).tags
    assert profile.threshold == float(tags[THRESHOLD_TAG])
