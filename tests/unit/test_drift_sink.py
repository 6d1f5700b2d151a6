"""The drift monitor's feed in a replica: champion rows binned against their version's
profile, a new version's rows held until its profile arrives, nothing that raises."""

import numpy as np

from serve_app.core.drift import bin_window, build_profile, judge_counts
from serve_app.predictions.drift_sink import HELD_ROWS, DriftCounter
from serve_app.predictions.records import LoggedBatch, decisions

FEATURES = ("amount", "hour", "merchant_risk")
RNG = np.random.default_rng(11)
REFERENCE = RNG.lognormal(3.5, 1.2, (2_000, 3)).astype(np.float32)
PROFILE = build_profile(FEATURES, REFERENCE, RNG.random(2_000), 0.9)


def batch(index: int, rows: int = 5, role: str = "champion", version: int = 4) -> LoggedBatch:
    rng = np.random.default_rng(index)
    return LoggedBatch(
        request_id=f"r-{index}",
        time=1_800_000_000.0 + index,
        model="fraud-card-eu",
        version=version,
        role=role,
        lane="fast",
        routing_key=None,
        features=FEATURES,
        rows=rng.lognormal(3.5, 1.2, (rows, 3)).astype(np.float32),
        scores=rng.random(rows),
        threshold=0.9,
        latency_ms=1.0,
    )


def test_champion_rows_are_held_until_the_profile_comes_then_counted_exactly():
    counter = DriftCounter()
    batches = [batch(i) for i in range(10)]
    counter.write([*batches[:6], batch(99, role="challenger"), batch(98, role="shadow")])
    assert counter.wanted() == {("fraud-card-eu", 4)} and counter.take() == {}
    counter.install(("fraud-card-eu", 4), PROFILE)
    counter.tick(0.0)
    counter.write(batches[6:])
    found = counter.take()[("fraud-card-eu", 4)]
    rows = np.concatenate([b.rows for b in batches])
    scores = np.concatenate([b.scores for b in batches])
    decided = np.concatenate([decisions(b.scores, b.threshold) for b in batches])
    expected = bin_window(PROFILE, rows, scores, decided, np.array([b.time for b in batches]))
    assert judge_counts(PROFILE, found) == judge_counts(PROFILE, expected)
    assert found.rows == 50 and counter.take() == {} and counter.wanted() == set()


def test_a_version_without_a_profile_or_with_other_features_is_skipped_without_raising():
    counter = DriftCounter()
    counter.install(("fraud-card-eu", 4), None)
    counter.write([batch(1)])
    counter.install(("fraud-card-eu", 5), build_profile(FEATURES[:2], REFERENCE[:, :2],
                                                        RNG.random(2_000), 0.5))  # fmt: skip
    counter.write([batch(2, version=5)])
    assert counter.take() == {}


def test_held_rows_are_bounded():
    counter = DriftCounter()
    counter.write([batch(i, rows=1_000) for i in range(HELD_ROWS // 1_000 + 5)])
    counter.install(("fraud-card-eu", 4), PROFILE)
    counter.tick(0.0)
    assert counter.take()[("fraud-card-eu", 4)].rows == HELD_ROWS
