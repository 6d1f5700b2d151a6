"""The prediction log on Kafka, through the whole application: a real Kafka-protocol broker
(Tansu) killed under load fails no request, and every row a consumer does not see is one
the drop counter counted. Labels sent to a Kafka topic reach the label store."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Producer
from ray import serve

from serve_app.predictions.records import FIELDS, SCHEMA
from serve_app.serving.app import build_app
from serve_app.settings import APP_NAME
from tests.conftest import http_ready, service_args, wait_until
from tests.e2e.test_kafka_sink import read_rows, values
from tests.integration.helpers import Traffic, call, exported, tables_adopted, v2_payload
from tests.integration.test_quality_loop import feedback, logged
from tests.kafka_broker import Broker

MODEL = "fraud-wallet-uk"  # no other test scores it
TOPIC = "serve-app.predictions.test"
LABEL_TOPIC = "serve-app.labels.test"
BUFFER_ROWS = 400  # small: a broker away for seconds must cost rows, counted
ROWS = "ray_serve_app_prediction_log_rows_total"
DROPPED = "ray_serve_app_prediction_log_dropped_total"


def redeploy(service, args: dict) -> None:
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    wait_until(lambda: http_ready(service.url), timeout=120, what="the redeployed service")
    tables_adopted(service.url, timeout=60)


@pytest.fixture(scope="module")
def broker(service) -> Iterator[Broker]:
    """The session's application, redeployed with the Kafka sink; restored afterwards."""
    with Broker() as running:
        running.create_topic(TOPIC)
        running.create_topic(LABEL_TOPIC, partitions=2)
        args = service_args(service.home)
        args["labels"] = {"kafka_topic": LABEL_TOPIC}
        args["prediction_log"] = {
            **args["prediction_log"],
            "sink": "kafka",
            "kafka": {
                "bootstrap_servers": running.bootstrap_servers,
                "topic": TOPIC,
                "buffer_records": BUFFER_ROWS,
                "delivery_timeout_s": 60,
                "properties": {"reconnect.backoff.max.ms": "500"},
            },
        }
        redeploy(service, args)
        try:
            yield running
        finally:
            redeploy(service, service_args(service.home))


def test_a_broker_killed_under_load_fails_nothing_and_every_lost_row_is_counted(service, broker):
    with Traffic(service.url, MODEL, workers=4) as traffic:
        time.sleep(3.0)
        broker.kill()
        time.sleep(6.0)  # about 2,000 requests: more than the producer's buffer holds
        broker.restart()
        time.sleep(3.0)
    assert not traffic.failures, traffic.failures[:3]
    answered = len(traffic.results)

    def accounted() -> tuple[float, float] | None:
        written = exported(ROWS, model=MODEL, sink="kafka")
        dropped = exported(DROPPED, model=MODEL)
        return (written, dropped) if written + dropped >= answered else None

    written, dropped = wait_until(accounted, timeout=90, interval=1.0, what="the log's counts")
    assert written + dropped == answered
    assert dropped > 0, "the broker's absence should have overflowed the producer's buffer"
    assert exported(DROPPED, model=MODEL, reason="kafka_buffer_full") == dropped

    records = [orjson.loads(v) for v in values(read_rows(broker, TOPIC, 1, int(written)))]
    ours = [r for r in records if r["model"] == MODEL]
    seen = {(r["request_id"], r["row"]) for r in ours}
    assert len(seen) == len(ours), "a row was delivered twice"
    assert len(seen) == written == answered - dropped
    record = ours[0]
    assert tuple(record) == FIELDS and record["schema"] == SCHEMA
    assert record["role"] == "champion" and record["lane"] == "fast"
    assert record["key_hash"] and not record["key_hash"].startswith("acct-")
    assert record["decision"] == (record["score"] >= record["threshold"])


def test_labels_sent_to_the_kafka_topic_reach_the_label_store(service, broker):
    ids = [f"kafka-label-{index:03d}" for index in range(20)]
    for request_id in ids:
        status, body, _ = call(
            f"{service.url}/v2/models/{MODEL}/infer", {**v2_payload(), "id": request_id}
        )
        assert status == 200, body
    wait_until(lambda: logged(service, ids, MODEL), timeout=30, what="the log to flush")
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    labels = [{"model": MODEL, "request_id": r, "label": i % 2} for i, r in enumerate(ids)]
    for label in labels:
        producer.produce(LABEL_TOPIC, key=label["request_id"], value=orjson.dumps(label))
    producer.produce(LABEL_TOPIC, value=b"not json")  # counted as invalid, never a stop
    assert producer.flush(10) == 0

    def stored() -> bool:
        results = feedback(
            service, MODEL, [{k: v for k, v in x.items() if k != "model"} for x in labels]
        )
        return all(r["status"] == "duplicate" for r in results["results"])

    wait_until(stored, timeout=30, interval=0.5, what="the topic's labels in the store")
    wait_until(
        lambda: exported("ray_serve_app_labels_received_total", model="_unknown", status="invalid"),
        timeout=30,
        what="the invalid message counted",
    )


def test_a_retrain_reads_its_training_set_from_the_kafka_topic(service, broker):
    """With `sink: kafka` there are no local files: the job reads the topic back."""
    from serve_app.demo_drift import new_pattern
    from serve_app.registry.seed import DEMO_MODELS
    from serve_app.retraining.job import TRAINING_ROWS_TAG
    from tests.integration.test_drift_loop import label_everything, retrain_outcome_now
    from tests.integration.test_quality_loop import score_batches
    from tests.integration.test_rollouts import cli, event

    name = DEMO_MODELS[39]  # no other test scores it
    frame, labels = new_pattern(name, 1_200, "kafka-retrain")
    answers = score_batches(service, name, frame, "kafka-retrain")
    label_everything(service, name, answers, labels)
    # the module's producer buffer is small (BUFFER_ROWS): some rows may not reach the topic
    delivered = wait_until(
        lambda: (
            exported(ROWS, model=name, sink="kafka") + exported(DROPPED, model=name) >= len(frame)
            and exported(ROWS, model=name, sink="kafka")
        ),
        timeout=60,
        interval=1.0,
        what="the log's counts",
    )
    outcome = retrain_outcome_now(service, name)
    assert outcome["outcome"] == "registered", outcome
    tags = service.registry.client.get_model_version(name, str(outcome["version"])).tags
    sizes = orjson.loads(tags[TRAINING_ROWS_TAG])
    assert sizes["train_rows"] + sizes["holdout_rows"] == delivered  # every row in the topic
    # set as `challenger`: the gate picks it up (on so few rows its verdict may go either way)
    verdict = wait_until(
        lambda: (
            event(service, name, "gate_passed", outcome["version"])
            or event(service, name, "gate_rejected", outcome["version"])
        ),
        timeout=30,
        what="the gate's verdict on the retrained version",
    )
    assert verdict["version"] == outcome["version"]
    cli(service, "rollback", name)  # the rollout need not run on in the session
