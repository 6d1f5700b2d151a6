"""Live model quality from late labels: per version, per prediction-date cohort.

Chargebacks arrive days to months after the prediction, so a day's figures firm up
slowly; each cohort carries its label maturity (labelled / logged rows) beside the
figures, and a young cohort's recall is read as provisional, not as a regression.
Figures are None where they are undefined (no frauds, no flags): NaN would pass every
comparison as False and survive JSON as an invalid token.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from serve_app.core.decisions import RollBack
from serve_app.settings import RetrainSettings, RolloutPolicy

EPOCH = dt.date(1970, 1, 1)
_EPS = 1e-12  # "more than the margin": a drop of exactly the margin, float noise aside, passes


@dataclass(frozen=True)
class CohortCounts:
    """Every logged row of one version on one prediction day (days since the epoch, UTC)."""

    day: int
    rows: int
    alerts: int  # rows flagged at prediction time

    def __post_init__(self) -> None:
        if not 0 <= self.alerts <= self.rows:
            raise ValueError(f"cohort {self.day}: need 0 <= alerts <= rows, got {self}")


@dataclass(frozen=True, eq=False)
class LabelledRows:
    """The logged predictions of one version that have a label, one array entry per row."""

    day: np.ndarray  # int, days since the epoch (UTC) of the prediction
    score: np.ndarray  # float
    decision: np.ndarray  # bool, score >= the version's threshold when it scored
    label: np.ndarray  # int, 1 = fraud

    def __post_init__(self) -> None:
        if not np.isin(np.asarray(self.label), (0, 1)).all():  # before the cast: 0.5 is no 0
            raise ValueError("labels must be 0 or 1")
        types = {"day": np.int64, "score": np.float64, "decision": bool, "label": np.int64}
        for name, dtype in types.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype).ravel())
        if not len(self.day) == len(self.score) == len(self.decision) == len(self.label):
            raise ValueError("day, score, decision and label must have equal lengths")
        if np.isnan(self.score).any():
            raise ValueError("scores must not be NaN")

    @classmethod
    def empty(cls) -> LabelledRows:
        return cls(np.empty(0), np.empty(0), np.empty(0), np.empty(0))

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: np.ndarray) -> LabelledRows:
        return LabelledRows(
            self.day[index], self.score[index], self.decision[index], self.label[index]
        )


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """scikit-learn's `average_precision_score`: sum of (R_k - R_k-1) * P_k over thresholds.

    One threshold per distinct score, so tied rows enter together and their order does
    not matter. None without frauds (scikit-learn warns and returns 0 there).
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if not labels.size or not labels.sum():
        return None
    order = np.argsort(scores, kind="mergesort")[::-1]
    ends = np.r_[np.flatnonzero(np.diff(scores[order])), labels.size - 1]
    tps = np.cumsum(labels[order], dtype=np.float64)[ends]
    precision = tps / (ends + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


@dataclass(frozen=True)
class Quality:
    """Counts for one version over some cohorts, and the figures they give.

    `pr_auc` is stored rather than derived because it needs the scores; build with
    `measure` so it is consistent with the counts.
    """

    rows: int  # logged rows
    alerts: int  # ... of which flagged
    labelled: int
    frauds: int
    legit: int
    flagged_frauds: int  # TP
    flagged_legit: int  # FP
    pr_auc: float | None = None

    def __post_init__(self) -> None:
        ok = (
            self.labelled == self.frauds + self.legit
            and 0 <= self.flagged_frauds <= self.frauds
            and 0 <= self.flagged_legit <= self.legit
            and self.flagged_frauds + self.flagged_legit <= self.alerts <= self.rows
            and 0 <= self.labelled <= self.rows
        )
        if not ok:
            raise ValueError(f"inconsistent counts: {self}")

    @classmethod
    def measure(cls, rows: int, alerts: int, labelled: LabelledRows) -> Quality:
        """Figures over `labelled`; rows and alerts are raised to cover the labelled rows.

        Counts and labels come from different stores: when the counts lag (or miss a
        day) the labelled rows still count, and maturity stays at most 1.
        """
        label, decision = labelled.label == 1, labelled.decision
        tp, fp = int(np.sum(label & decision)), int(np.sum(~label & decision))
        frauds = int(label.sum())
        return cls(
            rows=max(int(rows), len(labelled)),
            alerts=max(int(alerts), tp + fp),
            labelled=len(labelled),
            frauds=frauds,
            legit=len(labelled) - frauds,
            flagged_frauds=tp,
            flagged_legit=fp,
            pr_auc=average_precision(labelled.label, labelled.score),
        )

    @property
    def maturity(self) -> float | None:
        """Share of logged rows with a label; disputes land for months, so young is provisional."""
        return _ratio(self.labelled, self.rows)

    @property
    def recall(self) -> float | None:
        return _ratio(self.flagged_frauds, self.frauds)

    @property
    def precision(self) -> float | None:
        return _ratio(self.flagged_frauds, self.flagged_frauds + self.flagged_legit)

    @property
    def false_positive_rate(self) -> float | None:
        return _ratio(self.flagged_legit, self.legit)

    @property
    def alert_rate(self) -> float | None:
        return _ratio(self.alerts, self.rows)

    def to_dict(self) -> dict[str, int | float | None]:
        figures = ("maturity", "recall", "precision", "false_positive_rate", "alert_rate")
        return asdict(self) | {name: getattr(self, name) for name in figures}


@dataclass(frozen=True)
class CohortQuality:
    day: int
    quality: Quality

    @property
    def date(self) -> str:
        return (EPOCH + dt.timedelta(days=self.day)).isoformat()

    def to_dict(self) -> dict[str, object]:
        return {"day": self.day, "date": self.date, **self.quality.to_dict()}


@dataclass(frozen=True)
class VersionQuality:
    version: int
    role: str  # champion | challenger | shadow | standby ...
    total: Quality
    cohorts: tuple[CohortQuality, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "role": self.role,
            "total": self.total.to_dict(),
            "cohorts": [cohort.to_dict() for cohort in self.cohorts],
        }


def version_quality(
    version: int,
    role: str,
    counts: Sequence[CohortCounts],
    labelled: LabelledRows,
    days: Collection[int] | None = None,
) -> VersionQuality:
    """Quality per cohort (by day) and over all of them, optionally only on `days`.

    Counts for the same day add up (one per log partition). A day with labelled rows but
    no counts yet is a cohort too (its labelled rows are logged rows), so the total is
    always the sum of the cohorts.
    """
    wanted = None if days is None else set(days)
    logged: dict[int, tuple[int, int]] = {}
    for c in counts:
        if wanted is None or c.day in wanted:
            rows, alerts = logged.get(c.day, (0, 0))
            logged[c.day] = (rows + c.rows, alerts + c.alerts)
    if wanted is not None:
        labelled = labelled.take(np.isin(labelled.day, list(wanted)))
    order = np.argsort(labelled.day, kind="stable")
    found, starts = np.unique(labelled.day[order], return_index=True)
    split = np.split(order, starts[1:]) if found.size else []
    by_day = dict(zip(found.tolist(), split, strict=True))
    cohorts = []
    for day in sorted(set(logged) | set(by_day)):
        day_rows = labelled.take(by_day.get(day, np.empty(0, dtype=np.int64)))
        rows, alerts = logged.get(day, (0, 0))
        if rows or len(day_rows):
            cohorts.append(CohortQuality(day, Quality.measure(rows, alerts, day_rows)))
    rows, alerts = sum(c.quality.rows for c in cohorts), sum(c.quality.alerts for c in cohorts)
    total = Quality.measure(rows, alerts, labelled)
    return VersionQuality(version, role, total, tuple(cohorts))


def common_days(a: Sequence[CohortCounts], b: Sequence[CohortCounts]) -> set[int]:
    """Days on which both versions logged rows.

    Compare versions only there: label maturity depends on a cohort's age, and fraud
    varies by weekday and campaign, so a challenger that took traffic only last week
    would otherwise look worse (fewer labels yet) or better (a quiet week) than it is.
    """
    return {c.day for c in a if c.rows} & {c.day for c in b if c.rows}


def quality_breach(
    policy: RolloutPolicy, champion: Quality, challenger: Quality
) -> RollBack | None:
    """Challenger against champion on the same cohorts (see `common_days`), once labelled.

    Recall needs `guard_quality_min_frauds` frauds on each side; the false-positive rate
    needs `guard_quality_min_labels` legitimate rows on each side. A breach is a gap over
    the policy's margin by a significant amount (`_worse`, tested beyond the margin): a few
    hundred labels measure a rate only roughly, and a rollback on noise throws away a
    better model. The guard looks again at every quality interval of a step, so its level
    per look is strict (`guard_quality_alpha`).
    """
    if min(champion.labelled, challenger.labelled) < policy.guard_quality_min_labels:
        return None
    reasons = []
    if min(champion.frauds, challenger.frauds) >= policy.guard_quality_min_frauds:
        ours, theirs = challenger.recall, champion.recall
        assert ours is not None and theirs is not None
        margin = policy.guard_max_recall_drop
        if theirs - ours > margin + _EPS and _worse(
            (ours, challenger.frauds), (theirs, champion.frauds), policy.guard_quality_alpha, margin
        ):
            reasons.append(
                f"live recall {ours:.3f} ({challenger.frauds} frauds) vs the champion's "
                f"{theirs:.3f} ({champion.frauds} frauds) on the same cohorts, "
                f"more than {policy.guard_max_recall_drop} below"
            )
    if min(champion.legit, challenger.legit) >= policy.guard_quality_min_labels:
        ours, theirs = challenger.false_positive_rate, champion.false_positive_rate
        assert ours is not None and theirs is not None
        margin = policy.guard_max_fpr_rise
        if ours - theirs > margin + _EPS and _worse(
            (theirs, champion.legit), (ours, challenger.legit), policy.guard_quality_alpha, margin
        ):
            reasons.append(
                f"live false-positive rate {ours:.4f} ({challenger.legit} legitimate) vs the "
                f"champion's {theirs:.4f} ({champion.legit} legitimate) on the same cohorts, "
                f"more than {policy.guard_max_fpr_rise} above"
            )
    return RollBack("; ".join(reasons), "quality") if reasons else None


def below_evaluation(
    live: Quality, evaluation: dict[str, float], policy: RetrainSettings
) -> str | None:
    """Why a champion's live quality calls for a retrain, or None: its live recall more than
    `quality_recall_drop` below its evaluation-set recall, or its false-positive rate more
    than `quality_fpr_rise` above, on `quality_min_frauds` frauds (`quality_min_labels`
    legitimate rows), by a significant gap (one-sided, against the fixed evaluation figure).
    """
    z = NormalDist().inv_cdf(1 - policy.quality_alpha)
    reasons = []
    expected = evaluation.get("recall")
    if expected is not None and live.frauds >= policy.quality_min_frauds:
        recall = live.recall or 0.0
        if _clearly_over(expected - recall, expected, live.frauds, policy.quality_recall_drop, z):
            reasons.append(f"live recall {recall:.3f} ({live.frauds} frauds) vs {expected:.3f} "
                           "on its evaluation set")  # fmt: skip
    expected = evaluation.get("false_positive_rate")
    if expected is not None and live.legit >= policy.quality_min_labels:
        rate = live.false_positive_rate or 0.0
        if _clearly_over(rate - expected, expected, live.legit, policy.quality_fpr_rise, z):
            reasons.append(f"live false-positive rate {rate:.4f} ({live.legit} legitimate) vs "
                           f"{expected:.4f} on its evaluation set")  # fmt: skip
    return "; ".join(reasons) or None


def _clearly_over(gap: float, known: float, rows: int, margin: float, z: float) -> bool:
    """`gap` over `margin` and over `z` standard errors of a rate measured on `rows` whose
    expected value is `known` (the evaluation figure)."""
    spread = math.sqrt(max(known * (1 - known), 1e-12) / rows)
    return gap > margin and gap / spread > z


def _worse(
    low: tuple[float, int], high: tuple[float, int], alpha: float, margin: float = 0.0
) -> bool:
    """Whether rate `high` exceeds rate `low` by more than `margin` at level `alpha`
    (one-sided two-proportion z-test, unpooled), each given as (rate, rows)."""
    (p1, n1), (p2, n2) = low, high
    spread = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    if spread == 0:
        return p2 - p1 > margin
    return (p2 - p1 - margin) / spread > NormalDist().inv_cdf(1 - alpha)


def threshold_for_alert_rate(scores: np.ndarray, rate: float) -> float:
    """The lowest cut whose alert rate (share of scores >= cut) does not exceed `rate`.

    An alert rate is a review team's capacity, so it is a budget, not a target: with ties
    the rate reached may fall below `rate`, never above it. The cut is a score itself (or
    just above the highest one, to flag nothing), so `scores >= cut` reproduces the rate
    exactly in the scores' own precision. ValueError when no cut in [0, 1] can, i.e. more
    than `rate` of the scores are exactly 1.0.
    """
    s = np.asarray(scores).ravel()
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if not s.size or np.isnan(s).any() or s.min() < 0 or s.max() > 1 or not 0 <= rate <= 1:
        raise ValueError("need non-empty scores in [0, 1] and a rate in [0, 1]")
    values, counts = np.unique(s, return_counts=True)  # ascending
    flagged_at = np.cumsum(counts[::-1])[::-1]  # rows >= each distinct value
    fits = np.flatnonzero(flagged_at / s.size <= rate)
    if fits.size:
        return float(values[fits[0]])
    above = np.nextafter(values[-1], s.dtype.type(np.inf))
    if above > 1:
        raise ValueError(f"{flagged_at[-1]} of {s.size} scores are 1.0: no cut flags {rate}")
    return float(above)


def rates_at_threshold(
    labels: np.ndarray, scores: np.ndarray, threshold: float
) -> tuple[float | None, float | None, float]:
    """(recall, false-positive rate, alert rate) when `score >= threshold` is flagged."""
    labels, scores = np.asarray(labels).ravel(), np.asarray(scores).ravel()
    if not scores.size or labels.shape != scores.shape:
        raise ValueError("need as many labels as scores, and at least one")
    flagged, fraud = scores >= threshold, labels == 1
    recall = _ratio(int(np.sum(flagged & fraud)), int(fraud.sum()))
    false_positive_rate = _ratio(int(np.sum(flagged & ~fraud)), int((~fraud).sum()))
    return recall, false_positive_rate, float(flagged.mean())
