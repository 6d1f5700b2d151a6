"""The drift core on the demo seed's traffic: no false alarm without drift, each kind of
shift caught in the windows it should take and named by the right signal."""

import json

import numpy as np
import pytest
from scipy.stats import binom

from benchmarks.drift_detection import SHIFTS, DemoStream, alarms, equal_width_psi
from serve_app.core.drift import (
    ALERT_RATE,
    SCORE,
    Drifted,
    DriftTracker,
    ReferenceProfile,
    Steady,
    Suspect,
    WindowReading,
    _alert_p_value,
    breaches,
    build_profile,
    not_judgeable,
    read_window,
)
from serve_app.core.stats import psi
from serve_app.registry.features import FEATURES
from serve_app.settings import AppSettings, DriftSettings

POLICY = DriftSettings()  # 1,000 rows, 60 s, PSI 0.1, alert rate x1.5 at p < 0.01, 3 windows
SHIFT = {s.name: s for s in SHIFTS}
AMOUNT = FEATURES.index("amount")


@pytest.fixture(scope="module")
def stream() -> DemoStream:
    return DemoStream()


def readings(stream: DemoStream, count: int, shift=None, salt: str = "test") -> list:
    return [read_window(stream.reference, *stream.window(i, shift, salt)) for i in range(count)]


def test_no_drift_no_alarm_over_50_windows(stream):
    null = readings(stream, 50, salt="null-test")
    assert alarms(null, POLICY) == []
    largest = max(v for r in null for v in r.psi.values() if v is not None)
    assert largest < POLICY.psi_alarm / 2  # noise, with room to spare
    assert AppSettings().drift == POLICY


@pytest.mark.parametrize(
    ("shift", "windows", "signal"),
    [
        ("amount x2", 3, "psi:amount"),  # heavy-tailed, PSI ~0.31
        ("amount x1.5", 15, "psi:amount"),  # PSI ~0.10, at the alarm level: takes longer
        ("merchant_risk +0.05", 3, "psi:merchant_risk"),
        ("fraud ring (20% of rows)", 3, f"psi:{SCORE}"),
        ("scores x1.5", 3, f"psi:{SCORE}"),  # decile bins of the score see it
        ("scores x2 above the top decile", 3, ALERT_RATE),  # only the alert rate does
        ("amount 10% missing", 3, "missing:amount"),
    ],
)
def test_shift_detected_and_named(stream, shift, windows, signal):
    shifted = readings(stream, windows, SHIFT[shift])
    found = alarms(shifted, POLICY)
    assert found, f"{shift}: no alarm in {windows} windows"
    number, alarm = found[0]
    assert number <= windows
    assert signal in alarm.signals
    assert set(alarm.signals) <= set(SHIFT[shift].signals)  # nothing unrelated named
    assert len(alarm.readings) == POLICY.consecutive_windows


def test_calibration_shift_the_score_psi_barely_sees(stream):
    shifted = readings(stream, 3, SHIFT["scores x2 above the top decile"])
    assert max(r.psi[SCORE] for r in shifted) < 0.05
    assert min(r.alert_rate for r in shifted) > 1.5 * stream.reference.alert_rate
    assert all(breaches(r, POLICY) == (ALERT_RATE,) for r in shifted)


def test_quantile_bins_beat_equal_width_on_amount(stream):
    """Equal-width bins put nearly every amount in the first bin: the shift hides there."""
    x, scores = stream.sample(20_000, "population")
    y, _ = stream.sample(20_000, "population-shifted", SHIFT["amount x2"])
    quantile = read_window(build_profile(FEATURES, x, scores, 0.5), y, scores, scores > 0.5)
    equal = equal_width_psi(x[:, AMOUNT], y[:, AMOUNT])
    assert quantile.psi["amount"] > POLICY.psi_alarm > equal
    assert quantile.psi["amount"] > 3 * equal  # ~5x with a 100,000-row reference (benchmark)


def test_profile_json_round_trip(stream):
    profile = stream.reference
    text = profile.to_json()
    assert len(text) < 4_000  # an MLflow tag holds 8,000 characters
    again = ReferenceProfile.from_json(text)
    assert again == profile
    assert again.to_json() == text
    window = stream.window(0)
    assert read_window(again, *window) == read_window(profile, *window)
    assert abs(sum(profile.features[0].shares) - 1) < 1e-12
    with pytest.raises(ValueError, match="schema"):
        ReferenceProfile.from_json(json.dumps(json.loads(text) | {"schema": 99}))


def test_vectorised_psi_is_stats_psi(stream):
    x, scores, decided, times = stream.window(0, SHIFT["amount x2"])
    reading = read_window(stream.reference, x, scores, decided, times)
    amount = stream.reference.features[AMOUNT]
    counts = np.bincount(np.searchsorted(amount.edges, x[:, AMOUNT]), minlength=len(amount.counts))
    assert reading.psi["amount"] == pytest.approx(psi(list(amount.counts), counts.tolist()))


def test_alert_p_value_is_the_exact_conditional_binomial():
    for ref_alerts, ref_rows, alerts, rows in [(65, 4000, 30, 1000), (65, 4000, 5, 1000)]:
        total, share = ref_alerts + alerts, rows / (ref_rows + rows)
        up = alerts >= total * share
        exact = binom.sf(alerts - 1, total, share) if up else binom.cdf(alerts, total, share)
        assert _alert_p_value(ref_alerts, ref_rows, alerts, rows) == pytest.approx(exact)
    assert _alert_p_value(0, 4000, 0, 1000) == 1.0


def test_ties_and_constants_make_no_duplicate_edges():
    rng = np.random.default_rng(1)
    rows = np.column_stack(
        [np.full(4000, 7.0), (rng.random(4000) < 0.1) * 1.0, rng.poisson(1.2, 4000)]
    )
    profile = build_profile(("constant", "flag", "count"), rows, rng.random(4000), 0.9)
    constant, flag, count = profile.features[:3]
    for f in profile.features:
        assert list(f.edges) == sorted(set(f.edges)) and len(f.counts) == len(f.edges) + 1
    assert constant.counts == (0, 4000, 0)  # below, at, above the constant
    assert flag.edges[-2:] in ((0.0, 1.0), (np.nextafter(np.float32(0), -1), 0.0))
    assert len(count.edges) >= 4  # 0, 1, 2, 3: one bin per common count
    moved = rows.copy()
    moved[:, 0] = 6.0  # below everything the reference saw: its own bin, not the atom's
    reading = read_window(profile, moved[:1000], rng.random(1000), np.zeros(1000, bool))
    assert reading.psi["constant"] > 1 and reading.psi["flag"] < 0.05


def test_all_nan_window_is_judged_by_missing_rates(stream):
    x, scores, decided, times = stream.window(0)
    x[:] = np.nan
    reading = read_window(stream.reference, x, scores, decided, times)
    assert all(reading.psi[name] is None for name in FEATURES)
    assert reading.psi[SCORE] is not None
    assert {f"missing:{n}" for n in FEATURES} <= set(breaches(reading, POLICY))
    tracker = DriftTracker(POLICY)
    for _ in range(3):
        status = tracker.feed(reading)
    assert isinstance(status, Drifted) and "missing:amount" in status.signals


def test_small_windows_are_not_judged(stream):
    x, scores, decided, times = stream.window(0, SHIFT["amount x2"])
    tiny = read_window(stream.reference, x[:200], scores[:200], decided[:200], times[:200])
    assert "200 rows" in not_judgeable(tiny, POLICY)
    burst = read_window(stream.reference, x, scores, decided, np.full(1000, 5.0))
    assert "span" in not_judgeable(burst, POLICY)
    undated = read_window(stream.reference, x, scores, decided)
    assert not_judgeable(undated, POLICY) is not None
    assert not_judgeable(undated, POLICY.model_copy(update={"min_window_span_s": 0})) is None
    tracker = DriftTracker(POLICY)
    for _ in range(5):
        assert tracker.feed(tiny) == Steady()
    assert tracker.skipped == 5
    with pytest.raises(ValueError, match="empty"):
        read_window(stream.reference, x[:0], scores[:0], decided[:0])
    with pytest.raises(ValueError, match="need rows"):
        read_window(stream.reference, x[:, :5], scores, decided)


def test_ignored_features_are_not_judged(stream):
    reading = read_window(stream.reference, *stream.window(0, SHIFT["amount x2"]))
    assert "psi:amount" in breaches(reading, POLICY)
    ignoring = POLICY.model_copy(update={"ignore_features": ("amount",)})
    assert "psi:amount" not in breaches(reading, ignoring)


def fake(psi_amount: float = 0.0) -> WindowReading:
    """A judgeable reading with one PSI set: the tracker's logic without data."""
    return WindowReading(
        rows=1000,
        start=0.0,
        end=600.0,
        psi={"amount": psi_amount, SCORE: 0.0},
        missing_rate={"amount": 0.0, SCORE: 0.0},
        reference_missing_rate={"amount": 0.0, SCORE: 0.0},
        alerts=16,
        expected_alert_rate=0.016,
        alert_p_value=0.5,
    )


def test_tracker_fires_once_per_episode():
    tracker, drift, calm = DriftTracker(POLICY), fake(0.5), fake(0.01)
    assert tracker.feed(drift) == Suspect(("psi:amount",), 1)
    assert tracker.feed(calm) == Steady()  # a broken run starts again
    statuses = [tracker.feed(drift) for _ in range(3)]
    assert statuses[:2] == [Suspect(("psi:amount",), 1), Suspect(("psi:amount",), 2)]
    assert isinstance(statuses[2], Drifted) and statuses[2].signals == ("psi:amount",)
    assert tracker.feed(drift) is statuses[2]  # latched until taken
    tracker.acknowledge()
    assert [tracker.feed(drift) for _ in range(10)] == [Steady()] * 10  # same episode: quiet
    tracker.feed(calm)  # recovered: the episode ended
    assert isinstance([tracker.feed(drift) for _ in range(3)][-1], Drifted)


def test_tracker_state_survives_json():
    tracker = DriftTracker(POLICY)
    for reading in (fake(0.5), fake(0.5), fake(0.5), fake(0.01)):
        tracker.feed(reading)
    tracker.acknowledge()
    tracker.feed(fake(0.5))
    copy = DriftTracker.from_dict(POLICY, json.loads(json.dumps(tracker.to_dict())))
    assert copy == tracker
    for reading in (fake(0.5), fake(0.01), fake(0.5), fake(0.5), fake(0.5)):
        assert copy.feed(reading) == tracker.feed(reading)
    assert isinstance(tracker.status, Drifted)
    again = DriftTracker.from_dict(POLICY, json.loads(json.dumps(tracker.to_dict())))
    assert again.status == tracker.status


def test_counts_merged_across_replicas_read_as_one_window(stream):
    """What replicas ship (binned counts) adds up to the window read at once."""
    from serve_app.core.drift import bin_window, judge_counts

    x, scores, decided, times = stream.window(3, SHIFT["amount x2"], "merge")
    parts = [
        bin_window(stream.reference, x[a:b], scores[a:b], decided[a:b], times[a:b])
        for a, b in ((0, 300), (300, 301), (301, len(scores)))
    ]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert judge_counts(stream.reference, merged) == read_window(
        stream.reference, x, scores, decided, times
    )
    other = build_profile(FEATURES[:3], x[:, :3], scores, 0.5)
    with pytest.raises(ValueError, match="different references"):
        merged.merge(bin_window(other, x[:, :3], scores, decided))
    with pytest.raises(ValueError, match="not binned against this reference"):
        judge_counts(other, merged)
