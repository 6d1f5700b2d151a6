"""Drift of a model's traffic from its version's reference: the statistics a retrain rests on.

A `ReferenceProfile` is made once per version (at register) from its evaluation data: per
feature and for the score, decile bins of the reference. Quantile bins, not equal width: on
a heavy-tailed `amount` nearly every row falls in the first equal-width bin and a shift
hides there (equal-width PSI ~5x lower, benchmarks/drift_detection.py); on the score they
also see a calibration shift (scores x1.5: PSI 0.7 in deciles, 0.03 equal-width). A shift
inside the top decile moves no decile, so the alert rate at the threshold is judged too.
The prediction log's writer bins each replica's rows against the serving version's
reference (`bin_window`); the monitor merges the counts into windows (`WindowCounts`) and
judges them (`judge_counts`); a `DriftTracker` per serving version turns the readings
into one alarm per drift episode.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np

from serve_app.core.stats import PSI_PSEUDO_COUNT
from serve_app.settings import DriftSettings

SCORE = "__score__"  # the score, profiled and judged like a feature
ALERT_RATE = "alert_rate"  # the signal of the alert rate at the version's threshold
PROFILE_SCHEMA = 1  # bump on any change to the JSON's fields or their meaning
DECILES = np.linspace(0.1, 0.9, 9)


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's reference bins: bin i holds edges[i-1] < x <= edges[i], ends open.

    Edges are float32 values seen in the reference (the model's input type, so a logged
    value equal to an edge falls in the same bin as it did in the reference); ties are
    merged, so a discrete or constant feature gets fewer bins rather than empty ones.
    When the lowest edge is the reference minimum (an atom there, such as a 0/1 flag's
    0 or a constant), an edge just below it is added: values under anything seen get a
    bin of their own instead of hiding among the atom.
    """

    name: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]  # reference rows per bin (len(edges) + 1)
    missing: int  # reference rows that were NaN

    @property
    def rows(self) -> int:
        return sum(self.counts) + self.missing

    @property
    def shares(self) -> tuple[float, ...]:
        present = sum(self.counts)
        return tuple(c / present for c in self.counts) if present else ()

    @property
    def missing_rate(self) -> float:
        return self.missing / self.rows if self.rows else 0.0


def _profile_feature(name: str, values: np.ndarray) -> FeatureProfile:
    values = np.asarray(values, dtype=np.float32).ravel()
    present = values[~np.isnan(values)]
    if not present.size:
        return FeatureProfile(name, (), (0,), int(values.size))
    edges = np.unique(np.quantile(present, DECILES, method="inverted_cdf"))
    edges = edges[np.isfinite(edges)]  # an infinite value still lands in an outer bin
    if edges.size and edges[0] == present.min():
        edges = np.r_[np.nextafter(edges[0], np.float32(-np.inf)), edges]
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=edges.size + 1)
    return FeatureProfile(
        name, tuple(edges.tolist()), tuple(counts.tolist()), int(values.size - present.size)
    )


@dataclass(frozen=True)
class ReferenceProfile:
    """A version's reference: its features' profiles, then the score's (named `SCORE`)."""

    features: tuple[FeatureProfile, ...]
    threshold: float
    rows: int
    alerts: int  # reference rows scored at or above the threshold

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def alert_rate(self) -> float:
        return self.alerts / self.rows if self.rows else 0.0

    @cached_property
    def _bins(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, dict[str, float]]:
        """Edges per column (float32), reference counts padded with 0, the bin mask, and
        the missing rates: what every window needs, made once."""
        width = max(len(f.counts) for f in self.features)
        counts = np.zeros((len(self.features), width))
        for i, f in enumerate(self.features):
            counts[i, : len(f.counts)] = f.counts
        valid = np.arange(width) < np.array([len(f.counts) for f in self.features])[:, None]
        edges = [np.array(f.edges, dtype=np.float32) for f in self.features]
        return edges, counts, valid, {f.name: f.missing_rate for f in self.features}

    def to_json(self) -> str:
        """Compact JSON (about 2 kB for 12 features): an MLflow tag holds 8,000 characters."""
        document = {
            "schema": PROFILE_SCHEMA,
            "threshold": self.threshold,
            "rows": self.rows,
            "alerts": self.alerts,
            "features": [
                [f.name, [float(str(np.float32(e))) for e in f.edges], f.counts, f.missing]
                for f in self.features
            ],  # edges in float32's shortest digits: from_json reads them back exactly
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        document = json.loads(text)
        if document.get("schema") != PROFILE_SCHEMA:
            raise ValueError(f"reference profile schema {document.get('schema')!r} is not 1")
        features = tuple(
            FeatureProfile(name, tuple(float(np.float32(e)) for e in edges), tuple(counts), miss)
            for name, edges, counts, miss in document["features"]
        )
        return cls(features, document["threshold"], document["rows"], document["alerts"])


def build_profile(
    features: Sequence[str], rows: np.ndarray, scores: np.ndarray, threshold: float
) -> ReferenceProfile:
    """The reference of a version from its evaluation rows [n, features] and their scores."""
    rows, scores = np.asarray(rows), np.asarray(scores).ravel()
    if rows.shape != (scores.size, len(features)) or not scores.size:
        raise ValueError(f"need rows [n, {len(features)}] and n > 0 scores, got {rows.shape}")
    profiles = [_profile_feature(name, rows[:, i]) for i, name in enumerate(features)]
    alerts = int(np.sum(scores.astype(np.float64) >= threshold))  # as records.decisions does
    return ReferenceProfile(
        (*profiles, _profile_feature(SCORE, scores)), float(threshold), int(scores.size), alerts
    )


@dataclass(frozen=True)
class WindowReading:
    """One window of logged rows against the reference. PSI is None where either side has
    no values (an all-NaN window is judged by its missing rate instead)."""

    rows: int
    start: float | None  # Unix seconds of the first and last row, when known
    end: float | None
    psi: dict[str, float | None]  # per feature and SCORE
    missing_rate: dict[str, float]
    reference_missing_rate: dict[str, float]
    alerts: int
    expected_alert_rate: float
    alert_p_value: float  # one-sided, in the observed direction (see `_alert_p_value`)

    @property
    def span_s(self) -> float | None:
        return None if self.start is None or self.end is None else self.end - self.start

    @property
    def alert_rate(self) -> float:
        return self.alerts / self.rows


@dataclass(frozen=True)
class WindowCounts:
    """Logged rows binned against a reference: what a replica ships, mergeable across
    replicas and over time, so no feature value leaves the replica for drift's sake.

    `bins` is [columns, width + 1]: per column (features, then the score) the rows in each
    reference bin, the last slot its missing rows."""

    bins: np.ndarray
    rows: int
    alerts: int
    start: float | None = None
    end: float | None = None

    def merge(self, other: WindowCounts) -> WindowCounts:
        if self.bins.shape != other.bins.shape:
            raise ValueError("counts binned against different references cannot be merged")
        starts = [t for t in (self.start, other.start) if t is not None]
        ends = [t for t in (self.end, other.end) if t is not None]
        return WindowCounts(
            self.bins + other.bins,
            self.rows + other.rows,
            self.alerts + other.alerts,
            min(starts) if starts else None,
            max(ends) if ends else None,
        )


def bin_window(
    profile: ReferenceProfile,
    rows: np.ndarray,
    scores: np.ndarray,
    decisions: np.ndarray,
    times: np.ndarray | None = None,
) -> WindowCounts:
    """Rows [n, features] with their scores and decisions, binned: one searchsorted per
    column and one bincount for them all."""
    scores = np.asarray(scores).ravel()
    if not scores.size:
        raise ValueError("an empty window cannot be read")
    columns = np.vstack([np.asarray(rows, dtype=np.float32).T, scores.astype(np.float32)])
    if columns.shape != (len(profile.features), scores.size) or len(decisions) != scores.size:
        raise ValueError(f"need rows [{scores.size}, {len(profile.features) - 1}] and decisions")
    edges, ref_counts, _, _ = profile._bins
    n_cols, width = ref_counts.shape
    bins = np.empty(columns.shape, dtype=np.intp)
    for i, column_edges in enumerate(edges):  # side="left": edges[i-1] < x <= edges[i]
        bins[i] = np.searchsorted(column_edges, columns[i], side="left")
    bins[np.isnan(columns)] = width  # one slot per column past its bins for the missing rows
    flat = (bins + (np.arange(n_cols) * (width + 1))[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_cols * (width + 1)).reshape(n_cols, width + 1)
    start = end = None
    if times is not None and len(times):
        start, end = float(np.min(times)), float(np.max(times))
    return WindowCounts(counts, int(scores.size), int(np.count_nonzero(decisions)), start, end)


def judge_counts(profile: ReferenceProfile, window: WindowCounts) -> WindowReading:
    """The window's figures against the reference it was binned with."""
    _, ref_counts, valid, ref_missing = profile._bins
    if window.bins.shape != (ref_counts.shape[0], ref_counts.shape[1] + 1) or not window.rows:
        raise ValueError("the counts were not binned against this reference")
    psi = _psi(ref_counts, window.bins[:, :-1], valid)
    names, missing = profile.names, (window.bins[:, -1] / window.rows).tolist()
    return WindowReading(
        rows=window.rows,
        start=window.start,
        end=window.end,
        psi={n: None if math.isnan(v) else v for n, v in zip(names, psi.tolist(), strict=True)},
        missing_rate=dict(zip(names, missing, strict=True)),
        reference_missing_rate=dict(ref_missing),
        alerts=window.alerts,
        expected_alert_rate=profile.alert_rate,
        alert_p_value=_alert_p_value(profile.alerts, profile.rows, window.alerts, window.rows),
    )


def read_window(
    profile: ReferenceProfile,
    rows: np.ndarray,
    scores: np.ndarray,
    decisions: np.ndarray,
    times: np.ndarray | None = None,
) -> WindowReading:
    """One window of rows judged at once (`bin_window`, then `judge_counts`)."""
    return judge_counts(profile, bin_window(profile, rows, scores, decisions, times))


def _psi(expected: np.ndarray, actual: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """stats.psi row by row (same Laplace smoothing), over each row's own bins; NaN where
    either side has no values."""
    bins = valid.sum(axis=1)
    e_sum, a_sum = expected.sum(axis=1), actual.sum(axis=1)
    p = (expected + PSI_PSEUDO_COUNT) / (e_sum + PSI_PSEUDO_COUNT * bins)[:, None]
    q = (actual + PSI_PSEUDO_COUNT) / (a_sum + PSI_PSEUDO_COUNT * bins)[:, None]
    value = np.where(valid, (q - p) * np.log(q / p), 0.0).sum(axis=1)
    return np.where((e_sum > 0) & (a_sum > 0), value, np.nan)


def _alert_p_value(ref_alerts: int, ref_rows: int, alerts: int, rows: int) -> float:
    """Chance of a split of alerts this lopsided if window and reference share one rate.

    Conditional on the total, the window's alerts are Binomial(total, rows / all rows):
    exact, and it counts the reference's own sampling error, which a test against a fixed
    expected rate would ignore (4,000 reference rows at 1.6% know the rate to about 12%).
    """
    total, share = ref_alerts + alerts, rows / (ref_rows + rows)
    if not total:
        return 1.0
    upward = alerts >= total * share
    log_pmf = (
        math.lgamma(total + 1) - math.lgamma(alerts + 1) - math.lgamma(total - alerts + 1)
        + alerts * math.log(share) + (total - alerts) * math.log1p(-share)
    )  # fmt: skip
    term, tail, k = math.exp(log_pmf), 0.0, alerts
    odds = share / (1 - share)
    while term > 1e-300 and 0 <= k <= total and term > tail * 1e-16:
        tail += term
        term *= (total - k) / (k + 1) * odds if upward else k / (total - k + 1) / odds
        k += 1 if upward else -1
    return min(1.0, tail)


def not_judgeable(reading: WindowReading, policy: DriftSettings) -> str | None:
    """Why a window is too small to judge, or None. Few rows make PSI noise; a short span
    is one burst (a single client's batch), not the traffic."""
    if reading.rows < policy.window_rows:
        return f"{reading.rows} rows, fewer than {policy.window_rows}"
    span = reading.span_s
    if policy.min_window_span_s and (span is None or span < policy.min_window_span_s):
        return f"span {span} s, shorter than {policy.min_window_span_s} s"
    return None


def breaches(reading: WindowReading, policy: DriftSettings) -> tuple[str, ...]:
    """The signals out of bounds in one window: psi:NAME, missing:NAME, alert_rate.

    A missing rate breaches either way (a feed that starts filling a column changed too);
    the alert rate needs both a size (the ratio) and a significance (the exact test): at
    1,000 rows and 16 expected alerts the test binds, on big windows the ratio does.
    """
    judged = [n for n in reading.psi if n not in policy.ignore_features]
    found = [f"psi:{n}" for n in judged if (reading.psi[n] or 0.0) > policy.psi_alarm]
    for name in judged:
        delta = reading.missing_rate[name] - reading.reference_missing_rate[name]
        if abs(delta) > policy.missing_rate_delta:
            found.append(f"missing:{name}")
    expected = max(reading.expected_alert_rate, 0.5 / reading.rows)  # a 0% reference still moves
    ratio = reading.alert_rate / expected
    if reading.alert_p_value < policy.alert_rate_alpha and (
        ratio >= policy.alert_rate_ratio or ratio <= 1 / policy.alert_rate_ratio
    ):
        found.append(ALERT_RATE)
    return tuple(sorted(found))


@dataclass(frozen=True)
class Steady:
    """No signal breaching."""


@dataclass(frozen=True)
class Suspect:
    signals: tuple[str, ...]  # breaching now, not yet for long enough
    windows: int  # the longest run so far


@dataclass(frozen=True)
class Drifted:
    signals: tuple[str, ...]  # breached in each of `consecutive_windows` windows
    readings: tuple[WindowReading, ...]  # those windows


Status = Steady | Suspect | Drifted


@dataclass
class DriftTracker:
    """Readings in, one alarm per drift episode out.

    Twelve features and a score judged every window would raise false breaches now and
    then; a breach counts once the same signal breaches in `consecutive_windows` judged
    windows in a row (windows too small to judge are skipped, they neither extend nor
    break a run). The alarm stays up until `acknowledge()`; the signals breaching then
    stay quiet until they recover for one window, so a lasting drift triggers one retrain,
    not one every few windows. A new serving version gets a new tracker (new reference).
    """

    policy: DriftSettings
    runs: dict[str, int] = field(default_factory=dict)
    quiet: set[str] = field(default_factory=set)
    recent: list[WindowReading] = field(default_factory=list)
    alarm: Drifted | None = None
    skipped: int = 0

    def feed(self, reading: WindowReading) -> Status:
        if not_judgeable(reading, self.policy):
            self.skipped += 1
            return self.status
        breached = set(breaches(reading, self.policy))
        need = self.policy.consecutive_windows
        self.recent = [*self.recent, reading][-need:]
        self.quiet &= breached  # a quiet signal that recovered has ended its episode
        self.runs = {s: self.runs.get(s, 0) + 1 for s in sorted(breached - self.quiet)}
        fired = tuple(s for s, n in self.runs.items() if n >= need)
        if fired and self.alarm is None:
            self.alarm = Drifted(fired, tuple(self.recent))
        return self.status

    @property
    def status(self) -> Status:
        if self.alarm is not None:
            return self.alarm
        if self.runs:
            return Suspect(tuple(self.runs), max(self.runs.values()))
        return Steady()

    def acknowledge(self) -> None:
        """The alarm was taken (a retrain started): quiet its episode's signals."""
        self.quiet |= set(self.runs) | set(self.alarm.signals if self.alarm else ())
        self.runs, self.alarm = {}, None

    def to_dict(self) -> dict:
        """JSON-able state (the policy is not in it: it comes from the settings)."""
        alarm = self.alarm and [self.alarm.signals, [asdict(r) for r in self.alarm.readings]]
        recent = [asdict(r) for r in self.recent]
        return {"runs": self.runs, "quiet": sorted(self.quiet), "recent": recent} | {
            "alarm": alarm, "skipped": self.skipped
        }  # fmt: skip

    @classmethod
    def from_dict(cls, policy: DriftSettings, state: dict) -> DriftTracker:
        alarm, recent = state["alarm"], [WindowReading(**r) for r in state["recent"]]
        if alarm is not None:
            alarm = Drifted(tuple(alarm[0]), tuple(WindowReading(**r) for r in alarm[1]))
        runs, quiet = dict(state["runs"]), set(state["quiet"])
        return cls(policy, runs, quiet, recent, alarm, state["skipped"])
