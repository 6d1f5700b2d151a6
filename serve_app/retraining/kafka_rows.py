"""The logged rows of one model read back from the prediction log's Kafka topic, for a
training set where the log is not on local disk (Kubernetes: each router pod's files are
its own; `sink: kafka` is how production logs).

Each partition is read from the first record at or after `since` (the broker's time index,
`offsets_for_times`; from the start where the broker does not answer it) until it has
passed `until` or nothing has arrived for `QUIET_S` (high watermarks are not relied on:
some Kafka-protocol brokers report them late).
"""

from __future__ import annotations

import logging
import time
import uuid

import orjson
import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from serve_app.predictions.kafka_sink import connection_config
from serve_app.retraining.dataset import KEY
from serve_app.settings import KafkaSettings

logger = logging.getLogger("ray.serve")

QUIET_S = 5.0
READ_LIMIT_S = 1_800.0


def kafka_rows(
    settings: KafkaSettings, model: str, features: tuple[str, ...], since: float, until: float
) -> pd.DataFrame:
    """(request id, row, time, features...) of `model` logged in [since, until], once each."""
    consumer = Consumer(
        {
            **connection_config(settings),
            "group.id": f"serve-app-retrain-{uuid.uuid4().hex[:8]}",  # reads, never commits
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    found: dict[tuple[str, int], tuple] = {}
    try:
        reading = _assign(consumer, settings.topic, since)
        started = quiet_since = time.monotonic()
        while reading and time.monotonic() - started < READ_LIMIT_S:
            messages = consumer.consume(2_000, 0.5)
            if not messages:
                if time.monotonic() - quiet_since > QUIET_S:
                    break
                continue
            quiet_since = time.monotonic()
            for message in messages:
                if message.error() is not None:
                    continue
                record = orjson.loads(message.value() or b"{}")
                if record.get("time", 0) > until:
                    reading.discard(message.partition())
                if record.get("model") != model or not since <= record.get("time", 0) <= until:
                    continue
                values = record.get("features") or {}
                if all(name in values for name in features):
                    key = (record["request_id"], record["row"])
                    found[key] = (*key, record["time"], *(values[n] for n in features))
    finally:
        consumer.close()
    return pd.DataFrame(list(found.values()), columns=[*KEY, "time", *features])


def _assign(consumer: Consumer, topic: str, since: float) -> set[int]:
    """Assign every partition from `since`; the partitions to read."""
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise RuntimeError(f"the prediction log's topic {topic!r} cannot be read")
    partitions = sorted(metadata.partitions)
    wanted = [TopicPartition(topic, p, int(since * 1000)) for p in partitions]
    try:
        starts = consumer.offsets_for_times(wanted, timeout=10)
    except KafkaException as error:  # a broker without a time index: read it all
        logger.warning("offsets_for_times on %s failed (%s): reading from the start", topic, error)
        starts = []
    offsets = {s.partition: s.offset for s in starts if s.offset >= 0}
    consumer.assign(
        [TopicPartition(topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in partitions]
    )
    return set(partitions)
