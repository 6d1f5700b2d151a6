"""What every prediction-log sink offers the writer, and how it reports what it lost.

A sink is called from the writer's thread only. `write` takes a batch of scored requests
and either accepts them (they may still be lost later: a Kafka record whose delivery
fails is reported through the tally) or raises, and the writer counts every row of them
as dropped with the reason `<sink>_error`. Nothing here may block a request: the writer
runs beside the event loop, and a sink that is slow only makes the writer's queue fill.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from serve_app.predictions.records import LoggedBatch

# The reasons `serve_app_prediction_log_dropped` counts (a bounded metric label).
QUEUE_FULL = "queue_full"  # the replica's queue was at its bound
SINK_ERROR = "sink_error"  # suffixed: parquet_error, kafka_error, store_error
KAFKA_BUFFER_FULL = "kafka_buffer_full"  # the producer's local buffer was full
KAFKA_DELIVERY_FAILED = "kafka_delivery_failed"  # the broker never acknowledged it in time
SHUTDOWN = "shutdown"  # still queued when the replica stopped and the flush timed out


class Tally:
    """Rows written and dropped, by model, sink and reason; thread-safe.

    The writer's thread and sinks' callbacks add; the router's metrics loop takes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written: Counter[tuple[str, str]] = Counter()
        self._dropped: Counter[tuple[str, str]] = Counter()

    def written(self, model: str, sink: str, rows: int) -> None:
        with self._lock:
            self._written[(model, sink)] += rows

    def dropped(self, model: str, reason: str, rows: int) -> None:
        with self._lock:
            self._dropped[(model, reason)] += rows

    def take(self) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        """(written by (model, sink), dropped by (model, reason)) since the last take."""
        with self._lock:
            written, self._written = self._written, Counter()
            dropped, self._dropped = self._dropped, Counter()
        return written, dropped


class Sink(Protocol):
    name: str  # "parquet" | "kafka" | "store": the `sink` label, the prefix of its error

    def write(self, batches: Sequence[LoggedBatch]) -> None:
        """Accept the batches (record what was written in the tally) or raise."""
        ...

    def tick(self, now: float) -> None:
        """Called on every writer cycle, with or without data: rotate files, poll
        delivery reports."""
        ...

    def close(self, timeout_s: float) -> None:
        """Flush what is buffered, within the timeout; count the rest as dropped."""
        ...
