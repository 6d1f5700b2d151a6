"""The prediction log's Kafka sink: one JSON record per scored row, keyed by request id.

Why it is built this way:
- `acks=all` and the idempotent producer: a row counts as written only once every in-sync
  replica has it, and retries (across a broker restart too) never duplicate or reorder it.
  For a broker without idempotent producers, set `properties` `enable.idempotence: "false"`.
- A bounded local buffer (`buffer_records`) and never a blocking call: `write` runs in the
  writer's thread beside the event loop, and `produce` only appends to librdkafka's queue.
  While the broker is away the buffer fills; a row that finds it full after one `poll` and
  one retry is dropped and counted, never waited for.
- Every loss is counted in the tally: no room in the buffer (`kafka_buffer_full`); not
  acknowledged within `delivery_timeout_s` (`kafka_delivery_failed`); refused by librdkafka,
  too large or after a fatal producer error, which also replaces the producer
  (`kafka_error`); unacknowledged when `close`'s flush timed out (`shutdown`, an upper
  bound: such a row may still have reached the broker). The rest is counted written once
  the broker acknowledged it.
- Quiet while the broker is down: librdkafka's log goes to a Python logger at WARNING that
  passes one line per kind (FAIL, GETPID, ...) a minute; the sink says once per error kind
  that Kafka is unreachable, and once that it is back.

Delivery reports run inside `poll`/`flush`, which only the writer's thread calls (`write`,
`tick`, `close`), so the in-flight counts need no lock.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from serve_app.predictions.records import LoggedBatch, rows_of, to_json
from serve_app.predictions.sinks import KAFKA_BUFFER_FULL, KAFKA_DELIVERY_FAILED, SHUTDOWN, Tally
from serve_app.settings import KafkaSettings

BOOTSTRAP_ENV = "SERVE_APP_KAFKA_BOOTSTRAP_SERVERS"
KAFKA_ERROR = "kafka_error"  # sinks.SINK_ERROR for this sink
LINGER_MS = 5  # a few ms of batching: far fewer requests, invisible beside the flush interval
COMPRESSION = "lz4"
LOG_LEVEL = 4  # librdkafka's syslog levels: 4 = warning (default 6 = info)
LOG_INTERVAL_S = 60.0  # one librdkafka line per kind this often at most

Report = Callable[[KafkaError | None, Message], None]


class _OncePerInterval(logging.Filter):
    """Passes one librdkafka line per facility (its first argument) per interval."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        kind = str(args[0]) if args else str(record.msg)
        now = time.monotonic()
        if now - self._last.get(kind, -math.inf) < self._interval_s:
            return False
        self._last[kind] = now
        return True


log = logging.getLogger("serve_app.predictions.kafka")
librdkafka_log = logging.getLogger("serve_app.predictions.kafka.librdkafka")
librdkafka_log.setLevel(logging.WARNING)
librdkafka_log.addFilter(_OncePerInterval(LOG_INTERVAL_S))


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka's configuration for `settings`; `properties` win over everything."""
    config = connection_config(settings)
    config.update(
        {
            "acks": "all",
            "enable.idempotence": True,
            "queue.buffering.max.messages": settings.buffer_records,
            "message.timeout.ms": max(LINGER_MS + 1, int(settings.delivery_timeout_s * 1000)),
            "linger.ms": LINGER_MS,
            "compression.type": COMPRESSION,
        }
    )
    config.update(settings.properties)
    return config


def connection_config(settings: KafkaSettings) -> dict[str, Any]:
    """Where the brokers are and how to authenticate: the producer's and the label
    consumer's common part."""
    servers = os.environ.get(BOOTSTRAP_ENV) or settings.bootstrap_servers
    if not servers:
        raise ValueError(f"Kafka needs bootstrap_servers (or {BOOTSTRAP_ENV})")
    config: dict[str, Any] = {
        "bootstrap.servers": servers,
        "security.protocol": settings.security_protocol.lower(),
        "logger": librdkafka_log,
        "log_level": LOG_LEVEL,
    }
    if settings.security_protocol.startswith("SASL"):
        password = os.environ.get(settings.sasl_password_env)
        if settings.sasl_mechanism is None or settings.sasl_username is None or not password:
            raise ValueError(
                f"{settings.security_protocol} needs sasl_mechanism, sasl_username and the "
                f"password in ${settings.sasl_password_env}"
            )
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = password
    if settings.ssl_ca_location:
        config["ssl.ca.location"] = settings.ssl_ca_location
    return config


class KafkaSink:
    """Produces every row to `settings.topic`; the module docstring says what it loses."""

    name = "kafka"

    def __init__(self, settings: KafkaSettings, tally: Tally, secret: bytes) -> None:
        self._topic = settings.topic
        self._tally = tally
        self._secret = secret
        self._config = {**producer_config(settings), "error_cb": self._on_error}
        self._producer = Producer(self._config)
        self._in_flight: Counter[str] = Counter()
        self._reports: dict[str, Report] = {}
        self._errors: set[int] = set()  # kinds reported since Kafka was last reachable
        self._refused: set[int] = set()  # kinds of produce() refusals reported
        self._fatal = False
        self._closed = False

    def write(self, batches: Sequence[LoggedBatch]) -> None:
        if self._closed:
            raise RuntimeError("the Kafka sink is closed")
        if self._fatal:
            self._renew()
        lost: Counter[tuple[str, str]] = Counter()
        for batch in batches:
            key = batch.request_id.encode()
            report = self._report(batch.model)
            for record in rows_of(batch, self._secret):
                reason = self._produce(key, to_json(record), report)
                if reason is None:
                    self._in_flight[batch.model] += 1
                else:
                    lost[(batch.model, reason)] += 1
        for (model, reason), rows in lost.items():
            self._tally.dropped(model, reason, rows)

    def tick(self, now: float) -> None:
        self._producer.poll(0)

    def close(self, timeout_s: float) -> None:
        if self._closed:
            return
        self._producer.flush(max(0.0, timeout_s))
        self._closed = True  # reports from here on (purged rows) are not counted again
        for model, rows in self._in_flight.items():
            if rows > 0:
                self._tally.dropped(model, SHUTDOWN, rows)
        self._in_flight.clear()
        self._producer.purge()
        self._producer.poll(0)

    @property
    def in_flight(self) -> int:
        """Rows handed to librdkafka and neither acknowledged nor failed yet."""
        return sum(self._in_flight.values())

    def _produce(self, key: bytes, value: bytes, report: Report) -> str | None:
        """None once librdkafka holds the row, else the reason it was dropped."""
        try:
            try:
                self._producer.produce(self._topic, value, key, on_delivery=report)
            except BufferError:
                self._producer.poll(0)  # serve delivery reports, which may free room
                self._producer.produce(self._topic, value, key, on_delivery=report)
        except BufferError:
            return KAFKA_BUFFER_FULL
        except KafkaException as failure:  # a row too large; a producer in a fatal state
            error: KafkaError = failure.args[0]
            self._fatal = self._fatal or error.fatal()
            if error.code() not in self._refused:
                self._refused.add(error.code())
                log.warning("Kafka refused a row (counted as %s): %s", KAFKA_ERROR, error.str())
            return KAFKA_ERROR
        return None

    def _report(self, model: str) -> Report:
        report = self._reports.get(model)
        if report is None:

            def report(error: KafkaError | None, _message: Message) -> None:
                if self._closed:
                    return
                self._in_flight[model] -= 1
                if error is None:
                    self._tally.written(model, "kafka", 1)
                    if self._errors:
                        self._errors.clear()
                        log.warning("Kafka reachable again")
                else:
                    self._tally.dropped(model, KAFKA_DELIVERY_FAILED, 1)

            self._reports[model] = report
        return report

    def _on_error(self, error: KafkaError) -> None:
        """Client-level errors (brokers down, fatal idempotence errors): once per kind."""
        if error.fatal():
            self._fatal = True
            log.error("Kafka producer failed fatally, starting a new one: %s", error.str())
        elif error.code() not in self._errors:
            self._errors.add(error.code())
            log.warning("Kafka unreachable, rows wait in the buffer: %s", error.str())

    def _renew(self) -> None:
        """A fatal error leaves the producer unusable: fail what it holds, start afresh."""
        old, self._producer = self._producer, Producer(self._config)
        self._fatal = False
        old.purge()
        old.poll(0)  # their reports count them as delivery failures
