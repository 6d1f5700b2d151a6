"""The label store on a real SQLite file: per-row outcomes, the join quality reads, retention."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.labels import feedback
from serve_app.labels.feedback import Label, parse_time, read_batch, read_item
from serve_app.labels.report import model_quality, rollout_quality
from serve_app.labels.store import LabelStore, StoreSink, StoreUnavailable
from serve_app.predictions.records import SECONDS_PER_DAY, LoggedBatch
from serve_app.predictions.sinks import Tally
from serve_app.protocol.errors import BadRequest, PayloadTooLarge

DAY0 = 20_400 * SECONDS_PER_DAY  # a midnight, UTC


def logged(request_id: str, scores, version: int = 1, at: float = DAY0 + 60, role="champion"):
    scores = np.asarray(scores, np.float32)
    rows = np.zeros((len(scores), 2), np.float32)
    return LoggedBatch(
        request_id, at, "m", version, role, "fast", None, ("a", "b"), rows, scores, 0.5, 1.0
    )


@pytest.fixture
def store(tmp_path) -> LabelStore:
    return LabelStore(f"sqlite:///{tmp_path / 'labels.db'}", retention_days=180)


def test_each_label_row_gets_its_own_outcome(store):
    store.add_predictions([logged("one", [0.9]), logged("many", [0.1, 0.7])])
    outcomes = store.record_labels(
        "m",
        [
            Label("one", 1, DAY0),
            Label("one", 1, DAY0),  # the same again, in the same batch
            Label("one", 0, DAY0),
            Label("many", 1, DAY0),
            Label("many", 1, DAY0, row=1),
            Label("many", 0, DAY0, row=5),
            Label("ghost", 1, DAY0),
        ],
    )
    assert outcomes == [
        feedback.ACCEPTED,
        feedback.DUPLICATE,
        feedback.CONFLICT,
        feedback.ROW_REQUIRED,
        feedback.ACCEPTED,
        feedback.UNKNOWN_ROW,
        feedback.UNKNOWN_ID,
    ]
    # a later batch sees what the first one stored; labels are per model
    assert store.record_labels("m", [Label("one", 0, DAY0)]) == [feedback.CONFLICT]
    assert store.record_labels("other", [Label("one", 1, DAY0)]) == [feedback.UNKNOWN_ID]


def test_a_store_that_cannot_be_written_says_so_and_stores_nothing(store, tmp_path):
    """Its callers answer 503 on `StoreUnavailable` (the feedback endpoint), not 500."""
    store.add_predictions([logged("one", [0.9])])
    read_only = LabelStore(f"sqlite:///file:{tmp_path / 'labels.db'}?mode=ro&uri=true", 180)
    with pytest.raises(StoreUnavailable, match="the label store is unavailable") as raised:
        read_only.record_raw("m", [{"request_id": "one", "label": 1}], DAY0)
    assert str(tmp_path) not in str(raised.value), "the database's address stays out"
    assert store.labels_of("m") == [], "nothing was stored"
    assert store.record_raw("m", [{"request_id": "one", "label": 1}], DAY0)[0].status == "accepted"


def test_a_retried_request_is_logged_once(store):
    store.add_predictions([logged("r", [0.9])])
    store.add_predictions([logged("r", [0.9])])
    ((counts, _),) = store.quality_inputs("m", 0).values()
    assert sum(c.rows for c in counts) == 1


def test_the_join_feeds_quality_per_version_and_cohort(store):
    tally = Tally()
    sink = StoreSink(store, tally)
    sink.write(
        [
            logged("a", [0.9], 1),
            logged("b", [0.2], 1),
            logged("c", [0.8], 1, at=DAY0 + SECONDS_PER_DAY + 5),
            logged("a", [0.3], 2, role="shadow"),  # the same transaction, scored by a shadow
            logged("b", [0.6], 2, role="shadow"),
        ]
    )
    assert tally.take()[0] == {("m", "store"): 5}
    store.record_labels("m", [Label("a", 1, DAY0), Label("b", 0, DAY0)])
    versions = model_quality(store, "m", 0, {1: "champion", 2: "challenger"})
    assert [(v.version, v.role) for v in versions] == [(2, "challenger"), (1, "champion")]
    challenger, champion = versions
    assert [c.day for c in champion.cohorts] == [20_400, 20_401]
    assert champion.total.rows == 3 and champion.total.labelled == 2
    assert champion.total.recall == 1.0 and champion.total.false_positive_rate == 0.0
    assert challenger.total.recall == 0.0 and challenger.total.false_positive_rate == 1.0
    first_day = model_quality(store, "m", DAY0 + SECONDS_PER_DAY, {})[0]
    assert first_day.total.rows == 1 and first_day.role == "retired"
    # a rollout compares both versions on the cohorts both served: day 1 only
    champion_q, challenger_q = rollout_quality(store, "m", 1, 2, 0)
    assert champion_q.rows == 2 and challenger_q.rows == 2
    assert rollout_quality(store, "m", 1, 9, 0) is None


def test_retention_forgets_old_predictions(store):
    store.add_predictions([logged("old", [0.5], at=1_000.0), logged("new", [0.5])])
    assert store.prune(now=DAY0) == 1
    assert store.record_labels("m", [Label("old", 1, DAY0)]) == [feedback.UNKNOWN_ID]


def test_feedback_rows_are_validated_without_echoing_values():
    now = 1_764_580_000.0
    assert read_item(0, {"request_id": "r", "label": True}, now) == Label("r", 1, now)
    assert read_item(0, {"request_id": "r", "label": "0", "row": "2"}, now) == Label("r", 0, now, 2)
    for item, field in (
        ({"request_id": "r", "label": 2}, "label"),
        ({"request_id": "r", "label": 1, "row": -1}, "row"),
        ({"request_id": "r", "label": 1, "label_time": "yesterday-ish"}, "label_time"),
        ({"request_id": "", "label": 1}, "request_id"),
        ({"request_id": "a\nb", "label": 1}, "request_id"),
        ({"request_id": 5, "label": 1}, "request_id"),
    ):
        outcome = read_item(3, item, now)
        assert outcome.status == feedback.INVALID and field in outcome.error
        assert "yesterday" not in outcome.error
    assert read_item(1, "text", now).status == feedback.INVALID
    assert parse_time("2026-12-01T00:00:00Z", now) == 1_796_083_200.0
    assert parse_time("2026-12-01T00:00:00", now) == 1_796_083_200.0  # UTC when unsaid
    assert parse_time("1796083200", now) == 1_796_083_200.0
    with pytest.raises(BadRequest):
        read_batch({"labels": {}}, 10)
    with pytest.raises(BadRequest):
        read_batch([], 10)
    with pytest.raises(PayloadTooLarge):
        read_batch([{}] * 11, 10)
    assert read_batch({"labels": [{}]}, 10) == [{}]
