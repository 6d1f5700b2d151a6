"""Drift detection quality on synthetic streams, and what reading a window costs.

    python -m benchmarks.drift_detection      # about 10 s on 2 busy cores; no services

The stream is the demo seed's: `fraud-card-eu` trained as `seed_model` trains it (LightGBM on
6,000 rows), its reference profile from the 4,000-row evaluation set at the first version's
threshold 0.5, and windows of 1,000 fresh rows of `synthetic_transactions` (a new salt per
window), scored by the booster. Reference noise matters as much as window noise (4,000 rows
at a 1.6% alert rate know that rate to about 12%), so every stream is judged against ten
references (the seeded evaluation set and nine more drawn like it) and the figures are over
the ten. Prints:

1. false alarms over 50 windows without drift, with the defaults (target 0 of 10 streams);
2. per injected shift (from the first window on): its expected PSI on the signal that should
   name it (100,000 rows each side, bins of a 100,000-row reference) and the equal-width PSI
   beside it, the PSI measured in the 1,000-row windows against the seeded reference, and
   the windows to the alarm (median and worst of the ten, out of 30) with what it named;
3. the defaults' neighbours: each one changed alone, false alarms and median windows;
4. PSI without drift by window size (the field notes' 100-row vs 500-row figures);
5. read_window's cost per 1,000 rows of 12 features.
"""

from __future__ import annotations

import collections
import math
import statistics
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serve_app.core.drift import (
    ALERT_RATE,
    SCORE,
    Drifted,
    DriftTracker,
    ReferenceProfile,
    WindowReading,
    breaches,
    build_profile,
    read_window,
)
from serve_app.core.stats import psi
from serve_app.registry.features import FEATURES
from serve_app.registry.seed import EVAL_ROWS, TRAIN_ROWS, synthetic_transactions, train_booster
from serve_app.settings import DriftSettings

MODEL = "fraud-card-eu"
THRESHOLD = 0.5  # runtime.evaluation.FIRST_THRESHOLD: the seed's first versions use it
WINDOW_ROWS = 1_000
WINDOW_SPAN_S = 120.0
NULL_WINDOWS = 50
SHIFT_WINDOWS = 30
REFERENCES = 10
POPULATION_ROWS = 100_000
COLUMN = {name: i for i, name in enumerate(FEATURES)}


@dataclass(frozen=True)
class Shift:
    """A change of the traffic: of its features (rows, rng) or of the scores (scores, top)."""

    name: str
    signals: tuple[str, ...]  # the signals that may name it, the one to watch first
    rows: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    scores: Callable[[np.ndarray, float], np.ndarray] | None = None


def _scaled(feature: str, factor: float) -> Callable:
    def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x[:, COLUMN[feature]] *= factor
        return x

    return apply


def _merchant_risk_up(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x[:, COLUMN["merchant_risk"]] = np.clip(x[:, COLUMN["merchant_risk"]] + 0.05, 0, 1)
    return x


RING_FEATURES = ("device_risk", "is_foreign", "card_present", "hour")


def _fraud_ring(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fifth of the traffic: card-not-present, abroad, at night, from risky devices."""
    ring = rng.random(len(x)) < 0.2
    n = int(ring.sum())
    x[ring, COLUMN["device_risk"]] = rng.beta(4, 6, n)
    x[ring, COLUMN["is_foreign"]], x[ring, COLUMN["card_present"]] = 1.0, 0.0
    x[ring, COLUMN["hour"]] = rng.integers(0, 5, n)
    return x


def _amount_missing(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x[rng.random(len(x)) < 0.1, COLUMN["amount"]] = np.nan
    return x


SHIFTS = (
    Shift("amount x1.5", ("psi:amount",), rows=_scaled("amount", 1.5)),
    Shift("amount x2", ("psi:amount",), rows=_scaled("amount", 2.0)),
    Shift("merchant_risk +0.05", ("psi:merchant_risk",), rows=_merchant_risk_up),
    Shift(
        "fraud ring (20% of rows)",
        (f"psi:{SCORE}", ALERT_RATE, *(f"psi:{f}" for f in RING_FEATURES)),
        rows=_fraud_ring,
    ),
    Shift(
        "scores x1.5", (f"psi:{SCORE}", ALERT_RATE), scores=lambda s, top: np.minimum(s * 1.5, 1.0)
    ),
    Shift(
        "scores x2 above the top decile",
        (ALERT_RATE,),
        scores=lambda s, top: np.where(s > top, np.minimum(s * 2.0, 1.0), s),
    ),
    Shift("amount 10% missing", ("missing:amount",), rows=_amount_missing),
)


class DemoStream:
    """The seed's model, its references, and windows of its traffic."""

    def __init__(self, model: str = MODEL) -> None:
        self.model = model
        train, labels = synthetic_transactions(model, TRAIN_ROWS, "train")
        self.booster = train_booster(train, labels)
        self.reference = self.profile("eval")
        self.top_score = self.reference.features[-1].edges[-1]  # the reference's 90th pct

    def sample(
        self, rows: int, salt: str, shift: Shift | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        frame, _ = synthetic_transactions(self.model, rows, salt)
        x = frame.to_numpy().copy()  # float32, writable
        rng = np.random.default_rng(zlib.crc32(salt.encode()))
        if shift is not None and shift.rows is not None:
            x = shift.rows(x, rng)
        scores = self.booster.predict(x, num_threads=1)
        if shift is not None and shift.scores is not None:
            scores = shift.scores(scores, self.top_score)
        return x, scores

    def profile(self, salt: str, rows: int = EVAL_ROWS) -> ReferenceProfile:
        x, scores = self.sample(rows, salt)
        return build_profile(FEATURES, x, scores, THRESHOLD)

    def window(
        self, index: int, shift: Shift | None = None, salt: str = "window", rows: int = WINDOW_ROWS
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows, scores, decisions (as the log has them) and times spanning WINDOW_SPAN_S."""
        x, scores = self.sample(rows, f"{salt}-{index}", shift)
        times = index * WINDOW_SPAN_S + np.linspace(0, WINDOW_SPAN_S, rows)
        return x, scores, scores.astype(np.float64) >= THRESHOLD, times


def detect(readings: list[WindowReading], policy: DriftSettings) -> Drifted | None:
    """The first alarm of a fresh tracker fed `readings`, if any."""
    return next(iter(alarms(readings, policy)), (0, None))[1]


def windows_to(readings: list[WindowReading], policy: DriftSettings) -> int | None:
    """Windows read up to and including the one that raised the first alarm."""
    return next(iter(alarms(readings, policy)), (None, None))[0]


def alarms(readings: list[WindowReading], policy: DriftSettings) -> list[tuple[int, Drifted]]:
    """Every alarm (window number from 1, alarm), each acknowledged as a retrain would."""
    tracker, found = DriftTracker(policy), []
    for number, reading in enumerate(readings, 1):
        if isinstance(status := tracker.feed(reading), Drifted):
            found.append((number, status))
            tracker.acknowledge()
    return found


def equal_width_psi(reference: np.ndarray, actual: np.ndarray) -> float:
    """10 equal-width bins over the reference's range, open ends (Evidently's, Vertex AI's)."""
    reference, actual = reference[~np.isnan(reference)], actual[~np.isnan(actual)]
    edges = np.linspace(reference.min(), reference.max(), 11)[1:-1]

    def counts(values: np.ndarray) -> list[int]:
        return np.bincount(np.searchsorted(edges, values), minlength=10).tolist()

    return psi(counts(reference), counts(actual))


def _column(x: np.ndarray, scores: np.ndarray, name: str) -> np.ndarray:
    return scores if name == SCORE else x[:, COLUMN[name]]


def _median(values: list[int | None]) -> str:
    """The median windows to the alarm; a stream without one counts as never."""
    middle = statistics.median_high(math.inf if v is None else v for v in values)
    return f"> {SHIFT_WINDOWS}" if middle == math.inf else f"{middle:g}"


def _missing_null(stream: DemoStream, null: list, rate: float = 0.3) -> str:
    """`device_risk` missing at `rate` in the reference and in every window alike."""
    rng = np.random.default_rng(7)
    x, scores = stream.sample(EVAL_ROWS, "eval")
    x[rng.random(len(x)) < rate, COLUMN["device_risk"]] = np.nan
    profile = build_profile(FEATURES, x, scores, THRESHOLD)
    deltas = []
    for rows, window_scores, decided, times in null:
        rows = rows.copy()
        rows[rng.random(len(rows)) < rate, COLUMN["device_risk"]] = np.nan
        reading = read_window(profile, rows, window_scores, decided, times)
        deltas.append(abs(reading.missing_rate["device_risk"] - rate))
    return (
        f"{rate:.0%} NaN in device_risk on both sides, {len(null)} windows: max |delta| "
        f"{max(deltas):.3f} (binomial sd {math.sqrt(rate * (1 - rate) / WINDOW_ROWS):.3f}), "
        f"breaches of missing_rate_delta {DriftSettings().missing_rate_delta}: "
        f"{sum(d > DriftSettings().missing_rate_delta for d in deltas)}"
    )


def main() -> None:
    started = time.perf_counter()
    policy = DriftSettings()
    stream = DemoStream()
    references = [stream.reference] + [stream.profile(f"reference-{j}") for j in range(1, 10)]
    null = [stream.window(i, salt="null") for i in range(NULL_WINDOWS)]
    null_readings = [[read_window(p, *w) for w in null] for p in references]
    shifted = {
        s.name: [stream.window(i, s, salt="shift") for i in range(SHIFT_WINDOWS)] for s in SHIFTS
    }
    shift_readings = {
        name: [[read_window(p, *w) for w in windows] for p in references]
        for name, windows in shifted.items()
    }

    print(f"## Drift detection: {MODEL}, reference {EVAL_ROWS} rows, windows {WINDOW_ROWS} rows")
    print(f"defaults: {policy.model_dump(exclude={'ignore_features'})}\n")
    false_alarms = sum(detect(r, policy) is not None for r in null_readings)
    by_signal = collections.Counter(
        s for rs in null_readings for r in rs for s in breaches(r, policy)
    )
    null_psi = [v for rs in null_readings for r in rs for v in r.psi.values() if v is not None]
    print(
        f"No drift, {NULL_WINDOWS} windows x {REFERENCES} references: false alarms "
        f"{false_alarms} of {REFERENCES} streams (target 0); breaching (window, signal) "
        f"pairs {dict(by_signal) or 0} of {NULL_WINDOWS * REFERENCES} windows; PSI max "
        f"{max(null_psi):.3f}, p99 {np.quantile(null_psi, 0.99):.3f} over {len(null_psi)} "
        "(window, signal) pairs"
    )
    print(f"Missing rates without drift: {_missing_null(stream, null)}\n")

    population = stream.sample(POPULATION_ROWS, "population")
    big = build_profile(FEATURES, *population, THRESHOLD)
    print(
        "| shift | expected PSI | equal-width PSI | measured PSI (mean of windows) "
        "| alert rate (ref) | windows to alarm: median, worst of 10 | named right | alarms named |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for shift in SHIFTS:
        x, scores = stream.sample(POPULATION_ROWS, "population-shifted", shift)
        decided = scores >= THRESHOLD
        expected = read_window(big, x, scores, decided)
        key = shift.signals[0].split(":")[-1]
        key = SCORE if key == ALERT_RATE else key
        ew = equal_width_psi(_column(*population, key), _column(x, scores, key))
        seeded = shift_readings[shift.name][0]
        measured = statistics.fmean(r.psi[key] or 0.0 for r in seeded)
        detected = [detect(r, policy) for r in shift_readings[shift.name]]
        lags = [windows_to(r, policy) for r in shift_readings[shift.name]]
        named = sum(a is not None and set(a.signals) <= set(shift.signals) for a in detected)
        worst = "never" if None in lags else max(lags)
        signals = sorted({s for a in detected if a for s in a.signals})
        print(
            f"| {shift.name} | {key} {expected.psi[key]:.3f} | {ew:.3f} "
            f"| {measured:.3f} | {statistics.fmean(r.alert_rate for r in seeded):.2%} "
            f"({stream.reference.alert_rate:.2%}) | {_median(lags)}, {worst} "
            f"| {named}/10 | {', '.join(signals)} |"
        )

    print("\n### The defaults' neighbours (one field changed at a time)\n")
    print("| policy | false alarms /10 | " + " | ".join(s.name for s in SHIFTS) + " |")
    print("|---|---|" + "---|" * len(SHIFTS))
    variants = [("defaults", {})] + [
        (f"{field} {value}", {field: value})
        for field, values in {
            "psi_alarm": (0.05, 0.15, 0.2, 0.25),
            "alert_rate_alpha": (0.001, 0.05),
            "alert_rate_ratio": (1.2, 2.0),
            "consecutive_windows": (1, 2, 5),
        }.items()
        for value in values
    ]
    for label, change in variants:
        variant = policy.model_copy(update=change)
        false_alarms = sum(detect(r, variant) is not None for r in null_readings)
        lags = [_median([windows_to(r, variant) for r in shift_readings[s.name]]) for s in SHIFTS]
        print(f"| {label} | {false_alarms} | " + " | ".join(lags) + " |")

    print("\n### PSI without drift by window size (seeded reference, 50 windows x 13 signals)\n")
    print("| rows | mean | p99 | max | share > 0.1 |")
    print("|---|---|---|---|---|")
    for rows in (100, 250, 500, 1000):
        values = [
            v
            for x, scores, decided, times in null
            for v in read_window(
                stream.reference, x[:rows], scores[:rows], decided[:rows]
            ).psi.values()
            if v is not None
        ]
        print(
            f"| {rows} | {np.mean(values):.3f} | {np.quantile(values, 0.99):.3f} "
            f"| {max(values):.3f} | {np.mean(np.array(values) > 0.1):.1%} |"
        )

    x, scores, decided, times = null[0]
    for _ in range(50):
        read_window(stream.reference, x, scores, decided, times)
    costs = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(200):
            read_window(stream.reference, x, scores, decided, times)
        costs.append((time.perf_counter() - t0) / 200 * 1e6)
    print(
        f"\nread_window: {statistics.median(costs):.0f} us per {WINDOW_ROWS} rows x "
        f"{len(FEATURES)} features + score (median of 7 x 200 calls; best {min(costs):.0f} us)"
    )
    print(f"profile JSON: {len(stream.reference.to_json())} characters")
    print(f"ran in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
