"""The prediction log of one router replica: a bounded queue and a background writer.

Logging must never slow or fail a request. The request path only appends a
`LoggedBatch` (references to arrays it already holds) to a queue bounded in rows; past
the bound the newest rows are dropped and counted, the request never waits. A thread
beside the event loop wakes every `flush_interval_s` (or once a batch is full), hands
up to `batch_records` rows to each sink and lets sinks rotate files or poll delivery
reports. What a crash loses: the rows still queued in the replica (at most
`queue_records`, normally one flush interval's worth), plus whatever a sink holds
unwritten (see each sink).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from serve_app.labels.store import LabelStore, StoreSink
from serve_app.predictions.drift_sink import DriftCounter
from serve_app.predictions.records import LoggedBatch
from serve_app.predictions.sinks import QUEUE_FULL, SHUTDOWN, Sink, Tally
from serve_app.settings import AppSettings, PredictionLogSettings

logger = logging.getLogger("ray.serve")

SECRET_FILE = "key-hash.secret"
CLOSE_TIMEOUT_S = 10.0


class PredictionLog:
    def __init__(self, settings: PredictionLogSettings, sinks: Sequence[Sink], tally: Tally):
        self._settings = settings
        self._sinks = tuple(sinks)
        self.tally = tally
        self.drift = next((s for s in self._sinks if isinstance(s, DriftCounter)), None)
        self._queue: deque[LoggedBatch] = deque()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._rates: dict[str, float] = {}  # model → percent logged, resolved once per name
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def sampled(self, model: str) -> bool:
        """Whether to log this request of `model` (per-model `sample_percent`, default all)."""
        rate = self._rates.get(model)
        if rate is None:
            patterns = self._settings.sample_percent
            match = next((p for p in patterns if fnmatch.fnmatchcase(model, p)), None)
            rate = self._rates[model] = 100.0 if match is None else patterns[match]
        return rate >= 100.0 or random.random() * 100.0 < rate

    def offer(self, batch: LoggedBatch) -> None:
        """Queue a scored request for the writer, or drop and count it: never blocks."""
        size = batch.size
        with self._lock:
            if self._stopping or self._queued_rows + size > self._settings.queue_records:
                full = True
            else:
                full = False
                self._queue.append(batch)
                self._queued_rows += size
                wake = self._queued_rows >= self._settings.batch_records
        if full:
            self.tally.dropped(batch.model, QUEUE_FULL, size)
        elif wake:
            self._wake.set()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is queued, then close the sinks; rows left over count as dropped."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s / 2)  # the other half is the sinks' to flush and close
        with self._lock:
            left, self._queue, self._queued_rows = list(self._queue), deque(), 0
        for batch in left:
            self.tally.dropped(batch.model, SHUTDOWN, batch.size)
        for sink in self._sinks:
            try:
                sink.close(max(0.0, deadline - time.monotonic()))
            except Exception as error:
                logger.warning("closing the %s sink failed: %s", sink.name, error)

    # -- the writer's thread -----------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self._settings.flush_interval_s)
            self._wake.clear()
            while batches := self._take():
                self._write(batches)
            now = time.time()
            for sink in self._sinks:
                try:
                    sink.tick(now)
                except Exception as error:
                    logger.warning("the %s sink failed a tick: %s", sink.name, error)
            if self._stopping:
                return

    def _take(self) -> list[LoggedBatch]:
        taken: list[LoggedBatch] = []
        rows = 0
        with self._lock:
            while self._queue and rows < self._settings.batch_records:
                batch = self._queue.popleft()
                taken.append(batch)
                rows += batch.size
            self._queued_rows -= rows
        return taken

    def _write(self, batches: list[LoggedBatch]) -> None:
        for sink in self._sinks:
            try:
                sink.write(batches)
            except Exception:
                self._write_per_model(sink, batches)

    def _write_per_model(self, sink: Sink, batches: list[LoggedBatch]) -> None:
        """After a failed call, one call per model: a model whose rows keep failing (its
        folder blocked, say) costs its own rows, not every model's in the same cycle."""
        by_model: dict[str, list[LoggedBatch]] = {}
        for batch in batches:
            by_model.setdefault(batch.model, []).append(batch)
        for model, group in by_model.items():
            try:
                sink.write(group)
            except Exception as error:
                logger.warning("the %s sink failed for %s: %s", sink.name, model, error)
                rows = sum(batch.size for batch in group)
                self.tally.dropped(model, f"{sink.name}_error", rows)


def hash_secret(settings: AppSettings) -> bytes:
    """The routing-key hash secret: from the environment (a Kubernetes Secret), else a file
    created once in the home folder, so every replica and restart hashes a key alike."""
    from_env = os.environ.get(settings.prediction_log.key_hash_secret_env)
    if from_env:
        return from_env.encode()
    path = Path(settings.home) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(secrets.token_hex(32))
        except FileExistsError:  # another replica made it first
            pass
    return path.read_text().strip().encode()


def open_prediction_log(
    settings: AppSettings, writer_tag: str, store: LabelStore
) -> PredictionLog | None:
    """The replica's prediction log with its sinks (None when logging is off): the
    configured sink, the label store's join index and the drift monitor's counts."""
    log = settings.prediction_log
    if not log.enabled:
        return None

    tally = Tally()
    secret = hash_secret(settings)
    if log.sink == "kafka":
        from serve_app.predictions.kafka_sink import KafkaSink

        primary: Sink = KafkaSink(log.kafka, tally, secret)
    else:
        from serve_app.predictions.parquet_sink import ParquetSink

        primary = ParquetSink(
            Path(log.directory or Path(settings.home) / "predictions"),
            tally,
            secret,
            log.file_max_bytes,
            log.file_max_age_s,
            writer_tag,
        )
    sinks = [primary, StoreSink(store, tally)]
    if settings.drift.enabled:
        sinks.append(DriftCounter())
    return PredictionLog(log, sinks, tally)
