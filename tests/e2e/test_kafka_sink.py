"""KafkaSink against a real Kafka-protocol broker (Tansu, `tests/kafka_broker.py`), no Ray:
what it writes is read back by a real consumer; a broker killed mid-run loses nothing that
the tally does not count; a broker that is not there never blocks a write."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from serve_app.predictions.kafka_sink import (
    BOOTSTRAP_ENV,
    KAFKA_ERROR,
    KafkaSink,
    producer_config,
)
from serve_app.predictions.records import FIELDS, SCHEMA, LoggedBatch, key_hash
from serve_app.predictions.sinks import (
    KAFKA_BUFFER_FULL,
    KAFKA_DELIVERY_FAILED,
    SHUTDOWN,
    Tally,
)
from serve_app.settings import KafkaSettings
from tests.kafka_broker import Broker, free_port

SECRET = b"kafka-sink-test-secret"
FEATURES = ("amount", "hour", "merchant_risk", "distance_km")
MODELS = ("fraud-card-eu", "fraud-card-us")
WRITE_BOUND_S = 0.050  # generous: a write of tens of rows takes well under a millisecond


@pytest.fixture(autouse=True)
def _no_bootstrap_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)  # it would win over the test's broker


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with Broker() as running:
        yield running


def make_batch(index: int, rows: int) -> LoggedBatch:
    rng = np.random.default_rng(index)
    return LoggedBatch(
        request_id=f"req-{index:06d}",
        time=1_800_000_000.0 + index / 10,
        model=MODELS[index % 2],
        version=3 + index % 2,
        role=("champion", "challenger", "shadow")[index % 3],
        lane="fast" if index % 4 else "pool-a",
        routing_key=None if index % 5 == 4 else f"4111-0000-{index % 7:04d}",
        features=FEATURES,
        rows=(rng.random((rows, len(FEATURES))) * 100).astype(np.float32),
        scores=rng.random(rows),
        threshold=0.5,
        latency_ms=1.5 + index % 3,
        cache=("hit", "miss", None)[index % 3],
    )


def read_rows(broker: Broker, topic: str, partitions: int, target: int) -> list[Message]:
    """Every record of `topic`: read until `target` distinct rows, then until 1 s is quiet.

    (Tansu's high watermark is not reliable, so the reader cannot stop at it.)
    """
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "kafka-sink-test",
            "enable.auto.commit": False,
            "logger": logging.getLogger("tests.kafka.consumer"),
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    messages: list[Message] = []
    rows: set[tuple[str, int]] = set()
    deadline, quiet_since = time.monotonic() + 30, time.monotonic()
    try:
        while time.monotonic() < deadline:
            got = [m for m in consumer.consume(500, 0.2) if m.error() is None]
            messages += got
            rows.update(rows_seen(got))
            if got:
                quiet_since = time.monotonic()
            elif len(rows) >= target and time.monotonic() - quiet_since > 1.0:
                break
    finally:
        consumer.close()
    return messages


def rows_seen(messages: Sequence[Message]) -> Counter[tuple[str, int]]:
    return Counter(
        (record["request_id"], record["row"]) for record in map(orjson.loads, values(messages))
    )


def values(messages: Sequence[Message]) -> list[bytes]:
    return [message.value() or b"" for message in messages]


def settings(bootstrap: str, topic: str, **more: object) -> KafkaSettings:
    return KafkaSettings.model_validate({"bootstrap_servers": bootstrap, "topic": topic, **more})


def test_records_read_back_complete_and_exact(broker: Broker) -> None:
    topic = "predictions-complete"
    broker.create_topic(topic, partitions=3)
    tally = Tally()
    sink = KafkaSink(settings(broker.bootstrap_servers, topic), tally, SECRET)
    batches = [make_batch(index, rows=1 + index % 25) for index in range(60)]
    for start in range(0, len(batches), 8):
        sink.write(batches[start : start + 8])
        sink.tick(time.time())
    sink.close(20)

    total = sum(batch.size for batch in batches)
    written, dropped = tally.take()
    assert not dropped
    per_model = Counter({(m, "kafka"): 0 for m in MODELS})
    for batch in batches:
        per_model[(batch.model, "kafka")] += batch.size
    assert written == per_model and sum(written.values()) == total

    messages = read_rows(broker, topic, 3, total)
    by_id = {batch.request_id: batch for batch in batches}
    assert rows_seen(messages) == Counter(
        {(batch.request_id, row): 1 for batch in batches for row in range(batch.size)}
    ), "every (request_id, row) exactly once"
    raw_keys = {batch.routing_key.encode() for batch in batches if batch.routing_key}
    for message in messages:
        record = orjson.loads(message.value() or b"")
        batch = by_id[record["request_id"]]
        row = record["row"]
        assert message.key() == batch.request_id.encode()
        assert tuple(record) == FIELDS
        assert record["schema"] == SCHEMA
        assert record["features"] == dict(zip(FEATURES, batch.rows[row].tolist(), strict=True))
        assert np.array_equal(
            np.array(list(record["features"].values()), dtype=np.float32), batch.rows[row]
        )
        assert record["score"] == float(batch.scores[row])
        assert record["decision"] == (record["score"] >= record["threshold"])
        assert record["key_hash"] == key_hash(SECRET, batch.model, batch.routing_key)
        assert (record["model"], record["version"], record["role"], record["lane"]) == (
            batch.model,
            batch.version,
            batch.role,
            batch.lane,
        )
        assert (record["time"], record["latency_ms"], record["cache"]) == (
            batch.time,
            batch.latency_ms,
            batch.cache,
        )
        assert not any(raw in (message.value() or b"") for raw in raw_keys)


class _Counting(Tally):
    """A tally that also keeps a running total of acknowledged rows."""

    def __init__(self) -> None:
        super().__init__()
        self.acknowledged = 0

    def written(self, model: str, sink: str, rows: int) -> None:
        super().written(model, sink, rows)
        self.acknowledged += rows


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_broker_killed_mid_run_loses_nothing_uncounted(broker: Broker) -> None:
    topic = "predictions-kill"
    broker.create_topic(topic, partitions=3)
    tally = _Counting()
    sink = KafkaSink(
        settings(
            broker.bootstrap_servers,
            topic,
            buffer_records=300,
            delivery_timeout_s=40,
            # reconnect fast after the restart; the default backoff grows to 10 s
            properties={"reconnect.backoff.max.ms": "500"},
        ),
        tally,
        SECRET,
    )
    lines = _Lines()
    logging.getLogger("serve_app.predictions.kafka").addHandler(lines)
    batches: list[LoggedBatch] = []
    slowest = 0.0

    def run(seconds: float, rows: int) -> None:
        nonlocal slowest
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            batch = make_batch(len(batches), rows)
            batches.append(batch)
            started = time.perf_counter()
            sink.write([batch])
            slowest = max(slowest, time.perf_counter() - started)
            sink.tick(time.time())
            time.sleep(0.01)

    try:
        run(1.5, rows=3)  # broker up: delivered, then must survive the kill
        acknowledged_before_kill = tally.acknowledged
        broker.kill()  # with rows in flight
        run(2.5, rows=10)  # broker down: the 300-row buffer fills, the rest is dropped
        in_flight_while_down = sink.in_flight
        broker.start()
        run(2.0, rows=3)
        sink.close(30)
    finally:
        logging.getLogger("serve_app.predictions.kafka").removeHandler(lines)

    total = sum(batch.size for batch in batches)
    written, dropped = tally.take()
    reasons = Counter[str]()
    for (_, reason), rows in dropped.items():
        reasons[reason] += rows
    assert acknowledged_before_kill > 0
    assert in_flight_while_down == 300, "the bounded buffer was full while the broker was away"
    assert reasons[KAFKA_BUFFER_FULL] > 0
    assert set(reasons) <= {KAFKA_BUFFER_FULL, KAFKA_DELIVERY_FAILED, SHUTDOWN}
    assert sum(written.values()) + sum(reasons.values()) == total

    messages = read_rows(broker, topic, 3, total - sum(reasons.values()))
    seen = rows_seen(messages)
    produced = {(batch.request_id, row) for batch in batches for row in range(batch.size)}
    assert set(seen) <= produced
    assert len(seen) == total - sum(reasons.values()), (
        f"seen {len(seen)} of {total} rows, {dict(reasons)} counted dropped: {broker.log_tail()}"
    )
    assert len(seen) == sum(written.values()), "every acknowledged row is on the broker"
    assert max(seen.values()) == 1, "the idempotent producer wrote no duplicates"
    assert slowest < WRITE_BOUND_S, f"a write blocked {slowest * 1000:.1f} ms"
    assert len(lines.records) <= 12, [r.getMessage() for r in lines.records]


def test_no_broker_never_blocks_and_counts_everything() -> None:
    tally = Tally()
    nobody = f"127.0.0.1:{free_port()}"
    sink = KafkaSink(
        settings(
            nobody,
            "predictions-nowhere",
            delivery_timeout_s=1.0,
            properties={"message.max.bytes": "1000"},  # librdkafka's minimum
        ),
        tally,
        SECRET,
    )
    batches = [make_batch(index, rows=5) for index in range(20)]
    wide = tuple(f"feature_{i}" for i in range(100))
    too_large = LoggedBatch(
        "req-wide",
        0.0,
        MODELS[0],
        1,
        "champion",
        "fast",
        None,
        wide,
        np.zeros((2, 100), np.float32),
        np.zeros(2),
        0.5,
        1.0,
    )
    slowest = 0.0
    for batch in [*batches, too_large]:
        started = time.perf_counter()
        sink.write([batch])
        slowest = max(slowest, time.perf_counter() - started)
        sink.tick(time.time())
    started = time.monotonic()
    sink.close(3.0)
    closing = time.monotonic() - started
    written, dropped = tally.take()
    assert not written
    assert dropped.pop((MODELS[0], KAFKA_ERROR)) == 2, "a row over message.max.bytes"
    assert sum(dropped.values()) == 100
    assert {reason for _, reason in dropped} <= {KAFKA_DELIVERY_FAILED, SHUTDOWN}
    assert slowest < WRITE_BOUND_S
    assert closing < 5.0
    sink.close(1.0)  # closing twice is harmless


def test_producer_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV, "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("KAFKA_TEST_PASSWORD", "s3cret")
    config = producer_config(
        KafkaSettings(
            bootstrap_servers="ignored:9092",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="serve-app",
            sasl_password_env="KAFKA_TEST_PASSWORD",
            ssl_ca_location="/etc/ssl/ca.pem",
            buffer_records=1234,
            delivery_timeout_s=7.5,
            properties={"linger.ms": "20", "enable.idempotence": "false"},
        )
    )
    assert config["bootstrap.servers"] == "broker-a:9092,broker-b:9092"
    assert (config["acks"], config["queue.buffering.max.messages"]) == ("all", 1234)
    assert config["message.timeout.ms"] == 7500
    assert (config["security.protocol"], config["sasl.mechanism"]) == ("sasl_ssl", "SCRAM-SHA-512")
    assert (config["sasl.username"], config["sasl.password"]) == ("serve-app", "s3cret")
    assert config["ssl.ca.location"] == "/etc/ssl/ca.pem"
    assert (config["linger.ms"], config["enable.idempotence"]) == ("20", "false")
    monkeypatch.delenv("KAFKA_TEST_PASSWORD")
    with pytest.raises(ValueError, match="KAFKA_TEST_PASSWORD"):
        producer_config(
            KafkaSettings(
                bootstrap_servers="b:9092",
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="PLAIN",
                sasl_username="u",
                sasl_password_env="KAFKA_TEST_PASSWORD",
            )
        )
