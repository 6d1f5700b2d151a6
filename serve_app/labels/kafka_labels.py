"""Labels from a Kafka topic: the third way in, beside the endpoint and the CSV import.

The control actor runs one consumer (one per application, so each label is stored once),
on a thread of its own. Messages are JSON objects `{model, request_id, label, label_time?,
row?}`, validated as the endpoint validates them. Offsets are committed only after the
batch is in the store: a crash re-reads at most one batch, which the store answers as
duplicates. Partitions are assigned directly (all of the topic's), not through a
consumer-group join, and the group only keeps the offsets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from serve_app.labels.feedback import INVALID
from serve_app.labels.store import LabelStore
from serve_app.predictions.kafka_sink import connection_config
from serve_app.settings import KafkaSettings

logger = logging.getLogger("ray.serve")

BATCH = 1_000
POLL_S = 0.5
PARTITIONS_EVERY_S = 60.0  # a topic that gains partitions is picked up this late at most
Counted = Callable[[Counter[tuple[str, str]]], None]  # (model, outcome) → labels


class LabelConsumer:
    def __init__(
        self, kafka: KafkaSettings, topic: str, group: str, store: LabelStore, counted: Counted
    ) -> None:
        self._config = {
            **connection_config(kafka),
            **kafka.properties,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
        self._topic = topic
        self._store = store
        self._counted = counted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="label-consumer", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
            except Exception as error:  # the broker is away: try again, never stop
                logger.warning("the label consumer failed, retrying: %s", error)
                self._stop.wait(5.0)

    def _consume(self) -> None:
        consumer = Consumer(self._config)
        try:
            assigned: set[int] = set()
            refreshed = 0.0
            while not self._stop.is_set():
                if time.monotonic() - refreshed > PARTITIONS_EVERY_S:
                    assigned = self._assign(consumer, assigned)
                    refreshed = time.monotonic()
                messages = consumer.consume(BATCH, POLL_S)
                good = [m for m in messages if m.error() is None]
                if good:
                    self._store_batch([m.value() or b"" for m in good])
                    consumer.commit(asynchronous=False)
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer, assigned: set[int]) -> set[int]:
        topic = consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
        if topic is None or topic.error is not None:
            raise KafkaException(f"label topic {self._topic!r} is not available")
        partitions = set(topic.partitions)
        if partitions != assigned:
            wanted = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(consumer.committed(wanted, timeout=10))
        return partitions

    def _store_batch(self, values: list[bytes]) -> None:
        counts: Counter[tuple[str, str]] = Counter()
        by_model: dict[str, list[dict]] = {}
        for value in values:
            try:
                item = orjson.loads(value)
            except orjson.JSONDecodeError:
                item = None
            model = item.get("model") if isinstance(item, dict) else None
            if not isinstance(model, str) or not model:
                counts[("", INVALID)] += 1  # no model to store it under
                continue
            by_model.setdefault(model, []).append(item)
        for model, items in by_model.items():
            for outcome in self._store.record_raw(model, items, time.time()):
                counts[(model, outcome.status)] += 1
        self._counted(counts)
