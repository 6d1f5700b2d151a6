"""The prediction log's queue and writer, with recording sinks: bound, drops, failures,
close; and the record fields every sink writes."""

from __future__ import annotations

import threading
import time

import numpy as np

from serve_app.predictions import records
from serve_app.predictions.records import FIELDS, LoggedBatch, decisions, key_hash, rows_of
from serve_app.predictions.sinks import QUEUE_FULL, SHUTDOWN, Tally
from serve_app.predictions.writer import PredictionLog
from serve_app.settings import PredictionLogSettings

FEATURES = ("amount", "hour")
SECRET = b"test-secret"


def batch(rows: int = 1, model: str = "m", request_id: str = "r1", key: str | None = None):
    values = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    scores = np.linspace(0.1, 0.9, rows).astype(np.float32)
    return LoggedBatch(
        request_id,
        1_764_580_000.5,
        model,
        3,
        "champion",
        "fast",
        key,
        FEATURES,
        values,
        scores,
        0.5,
        1.25,
    )


class RecordingSink:
    def __init__(self, name: str = "memory", fail: bool = False, gate=None) -> None:
        self.name = name
        self.fail = fail
        self.gate = gate  # an Event the sink waits on: a slow sink
        self.batches: list[LoggedBatch] = []
        self.closed = False

    def write(self, batches):
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise OSError("disk full")
        self.batches.extend(batches)

    def tick(self, now):
        pass

    def close(self, timeout_s):
        self.closed = True


def settings(**values) -> PredictionLogSettings:
    return PredictionLogSettings(**{"flush_interval_s": 0.05, **values})


def test_rows_carry_every_field_and_hash_the_key():
    rows = list(rows_of(batch(3, key="4111-1111"), SECRET))
    assert [tuple(r) for r in rows] == [FIELDS] * 3
    assert [r["row"] for r in rows] == [0, 1, 2]
    assert rows[1]["features"] == {"amount": 2.0, "hour": 3.0}
    assert [r["decision"] for r in rows] == [False, True, True]
    assert rows[0]["key_hash"] == key_hash(SECRET, "m", "4111-1111") != "4111-1111"
    assert "4111" not in str(rows)
    assert key_hash(SECRET, "m", None) is None
    assert key_hash(SECRET, "m", "k") != key_hash(SECRET, "other", "k")  # per model
    assert rows[0]["schema"] == records.SCHEMA


def test_decisions_compare_in_float64():
    score = np.array([0.3], np.float32)
    threshold = float(score[0])  # the float32 value exactly: flagged
    assert decisions(score, threshold).tolist() == [True]
    assert decisions(score, np.nextafter(threshold, 1.0)).tolist() == [False]


def test_the_writer_hands_every_row_to_every_sink():
    tally = Tally()
    first, second = RecordingSink("a"), RecordingSink("b")
    log = PredictionLog(settings(), [first, second], tally)
    for index in range(20):
        log.offer(batch(2, request_id=f"r{index}"))
    deadline = time.monotonic() + 5
    while len(second.batches) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    log.close()
    assert [b.request_id for b in first.batches] == [f"r{i}" for i in range(20)]
    assert len(second.batches) == 20 and first.closed and second.closed
    assert tally.take()[1] == {}


def test_a_full_queue_drops_the_newest_rows_and_counts_them_without_waiting():
    gate = threading.Event()  # the sink is stuck until the gate opens
    tally = Tally()
    sink = RecordingSink(gate=gate)
    log = PredictionLog(settings(queue_records=10, batch_records=1), [sink], tally)
    log.offer(batch(1, request_id="first"))
    time.sleep(0.2)  # the writer took it and is stuck in the sink
    started = time.perf_counter()
    for index in range(30):
        log.offer(batch(1, request_id=f"r{index}"))
    assert time.perf_counter() - started < 0.05, "offer must never wait for the sink"
    assert log.queued_rows == 10
    _, dropped = tally.take()
    assert dropped == {("m", QUEUE_FULL): 20}
    gate.set()
    log.close()
    assert len(sink.batches) == 11


def test_a_model_whose_rows_keep_failing_costs_only_its_own_rows():
    class Picky(RecordingSink):
        def write(self, batches):
            if any(b.model == "blocked" for b in batches):
                raise OSError("permission denied")
            self.batches.extend(batches)

    tally = Tally()
    sink = Picky("parquet")
    log = PredictionLog(settings(), [sink], tally)
    log.offer(batch(2, model="blocked"))
    log.offer(batch(3, model="fine"))
    log.close()
    assert [b.model for b in sink.batches] == ["fine"]
    assert tally.take()[1] == {("blocked", "parquet_error"): 2}


def test_a_failing_sink_costs_its_rows_not_the_other_sinks():
    tally = Tally()
    good, bad = RecordingSink("good"), RecordingSink("parquet", fail=True)
    log = PredictionLog(settings(), [bad, good], tally)
    log.offer(batch(3, model="a"))
    log.offer(batch(2, model="b"))
    log.close()
    assert len(good.batches) == 2
    assert tally.take()[1] == {("a", "parquet_error"): 3, ("b", "parquet_error"): 2}


def test_rows_left_when_close_times_out_count_as_shutdown_drops():
    gate = threading.Event()
    tally = Tally()
    log = PredictionLog(settings(batch_records=1), [RecordingSink(gate=gate)], tally)
    for index in range(4):
        log.offer(batch(1, request_id=f"r{index}"))
    time.sleep(0.2)
    log.close(timeout_s=0.2)
    gate.set()
    _, dropped = tally.take()
    assert dropped[("m", SHUTDOWN)] >= 1
    log.offer(batch(1))  # after close: dropped, never queued
    assert tally.take()[1] == {("m", QUEUE_FULL): 1}


def test_sampling_follows_the_first_matching_pattern():
    log = PredictionLog(
        settings(sample_percent={"fraud-card-*": 0.0, "fraud-*": 100.0}), [], Tally()
    )
    try:
        assert not any(log.sampled("fraud-card-eu") for _ in range(200))
        assert all(log.sampled("fraud-atm-us") for _ in range(200))
        assert all(log.sampled("other") for _ in range(200))  # default: everything
    finally:
        log.close()
