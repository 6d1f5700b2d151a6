import datetime as dt
import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_score,
    recall_score,
)

from serve_app.core.quality import (
    CohortCounts,
    CohortQuality,
    LabelledRows,
    Quality,
    average_precision,
    common_days,
    quality_breach,
    rates_at_threshold,
    threshold_for_alert_rate,
    version_quality,
)
from serve_app.settings import RolloutPolicy

POLICY = RolloutPolicy()  # min labels 200, min frauds 20, recall drop 0.05, fpr rise 0.01
SEEDS = range(8)
FIGURES = ("maturity", "recall", "precision", "false_positive_rate", "alert_rate", "pr_auc")


def scored(rng: np.random.Generator, n: int, fraud_rate: float = 0.2, decimals: int = 2):
    """Labels and scores that carry signal, rounded so many scores tie."""
    label = (rng.random(n) < fraud_rate).astype(int)
    score = np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0, 1).round(decimals)
    return label, score


def labelled_rows(rng: np.random.Generator, n: int, days: list[int], threshold: float = 0.5):
    label, score = scored(rng, n)
    return LabelledRows(rng.choice(days, n), score, score >= threshold, label)


def sklearn_figures(label: np.ndarray, decision: np.ndarray, score: np.ndarray) -> dict:
    tn, fp, fn, tp = confusion_matrix(label, decision, labels=[0, 1]).ravel()
    frauds, flagged = int(label.sum()), int(decision.sum())
    return {
        "recall": recall_score(label, decision) if frauds else None,
        "precision": precision_score(label, decision) if flagged else None,
        "false_positive_rate": fp / (fp + tn) if fp + tn else None,
        "pr_auc": average_precision_score(label, score) if frauds else None,
        "counts": (int(tp), int(fp), int(tn), int(fn)),
    }


def assert_matches_sklearn(q: Quality, rows: LabelledRows) -> None:
    expected = sklearn_figures(rows.label, rows.decision, rows.score)
    tp, fp, tn, fn = expected.pop("counts")
    assert (q.flagged_frauds, q.flagged_legit, q.legit - q.flagged_legit) == (tp, fp, tn)
    assert q.frauds - q.flagged_frauds == fn
    for name, value in expected.items():
        ours = getattr(q, name)
        if value is None:
            assert ours is None, name
        else:
            assert ours == pytest.approx(value, rel=1e-12, abs=1e-15), name


def no_nan(value) -> None:
    """Walk a to_dict result: every float finite, and valid JSON without NaN."""
    json.dumps(value, allow_nan=False)
    if isinstance(value, dict):
        for v in value.values():
            no_nan(v)
    elif isinstance(value, list):
        for v in value:
            no_nan(v)
    elif isinstance(value, float):
        assert math.isfinite(value)


# --- average precision -----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_average_precision_equals_sklearn_with_ties(seed, decimals):
    rng = np.random.default_rng(seed)
    for n in (1, 2, 5, 37, 400):
        label, score = scored(rng, n, fraud_rate=0.3, decimals=decimals)
        if label.sum():
            expected = average_precision_score(label, score)
            assert average_precision(label, score) == pytest.approx(expected, rel=1e-12)
        else:
            assert average_precision(label, score) is None


def test_average_precision_on_heavy_ties_and_extremes():
    rng = np.random.default_rng(7)
    label = (rng.random(300) < 0.1).astype(int)
    for score in (rng.choice([0.0, 0.5, 1.0], 300), np.full(300, 0.3), rng.random(300)):
        assert average_precision(label, score) == pytest.approx(
            average_precision_score(label, score), rel=1e-12
        )
    assert average_precision(np.ones(4, int), np.array([0.1, 0.2, 0.2, 0.9])) == 1.0
    assert average_precision(np.zeros(4, int), np.array([0.1, 0.2, 0.2, 0.9])) is None
    assert average_precision(np.empty(0, int), np.empty(0)) is None
    # one tie group holding every row: precision is the fraud share at the only threshold
    assert average_precision(np.array([1, 0, 0, 0]), np.full(4, 0.5)) == 0.25


# --- Quality against scikit-learn ------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_quality_figures_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    for n in (3, 50, 500):
        rows = labelled_rows(rng, n, [100], threshold=rng.uniform(0.3, 0.8))
        logged = n * 3
        q = Quality.measure(logged, int(rows.decision.sum()) * 3, rows)
        assert_matches_sklearn(q, rows)
        assert (q.rows, q.labelled, q.frauds + q.legit) == (logged, n, n)
        assert q.maturity == n / logged
        assert q.alert_rate == rows.decision.sum() / n
        no_nan(q.to_dict())


def test_to_dict_gives_every_count_and_figure_unrounded():
    rows = LabelledRows([1, 1, 1], [0.9, 0.4, 0.7], [True, False, True], [1, 1, 0])
    d = Quality.measure(10, 4, rows).to_dict()
    assert d == {
        "rows": 10,
        "alerts": 4,
        "labelled": 3,
        "frauds": 2,
        "legit": 1,
        "flagged_frauds": 1,
        "flagged_legit": 1,
        "pr_auc": average_precision_score([1, 1, 0], [0.9, 0.4, 0.7]),
        "maturity": 0.3,
        "recall": 0.5,
        "precision": 0.5,
        "false_positive_rate": 1.0,
        "alert_rate": 0.4,
    }
    assert d["pr_auc"] == 0.5 * 1 + 0.5 * (2 / 3)  # not rounded
    assert json.loads(json.dumps(d)) == d


# --- per cohort and the days restriction -----------------------------------------------


def cohort_fixture(seed: int):
    rng = np.random.default_rng(seed)
    days = [20_000 + d for d in rng.choice(60, 6, replace=False).tolist()]
    rows = labelled_rows(rng, 600, days)
    counts = []
    for day in days:
        mask = rows.day == day
        labelled, alerts = int(mask.sum()), int(rows.decision[mask].sum())
        extra = int(rng.integers(0, 300))  # unlabelled rows, some of them flagged
        counts.append(CohortCounts(day, labelled + extra, alerts + extra // 3))
    rng.shuffle(counts)
    return rows, counts


@pytest.mark.parametrize("seed", SEEDS)
def test_each_cohort_equals_that_cohort_alone_and_the_total_pools_them(seed):
    rows, counts = cohort_fixture(seed)
    vq = version_quality(3, "challenger", counts, rows)
    assert (vq.version, vq.role) == (3, "challenger")
    assert [c.day for c in vq.cohorts] == sorted(c.day for c in counts)
    by_day = {c.day: c for c in counts}
    for cohort in vq.cohorts:
        mask = rows.day == cohort.day
        alone = rows.take(mask)
        c = by_day[cohort.day]
        assert cohort.quality == Quality.measure(c.rows, c.alerts, alone)
        assert cohort.quality == version_quality(3, "x", [c], alone).total
        assert_matches_sklearn(cohort.quality, alone)
    total = vq.total
    assert total.rows == sum(c.rows for c in counts)
    assert total.alerts == sum(c.alerts for c in counts)
    for name in ("labelled", "frauds", "legit", "flagged_frauds", "flagged_legit"):
        assert getattr(total, name) == sum(getattr(c.quality, name) for c in vq.cohorts)
    assert_matches_sklearn(total, rows)
    no_nan(vq.to_dict())


@pytest.mark.parametrize("seed", SEEDS)
def test_days_restricts_to_those_cohorts(seed):
    rows, counts = cohort_fixture(seed)
    all_days = sorted(c.day for c in counts)
    chosen = {all_days[0], all_days[3], all_days[5], 1}  # 1: a day with nothing at all
    vq = version_quality(3, "champion", counts, rows, days=chosen)
    assert [c.day for c in vq.cohorts] == [all_days[0], all_days[3], all_days[5]]
    mask = np.isin(rows.day, list(chosen))
    alone = version_quality(3, "champion", [c for c in counts if c.day in chosen], rows.take(mask))
    assert vq == alone
    assert_matches_sklearn(vq.total, rows.take(mask))
    assert version_quality(3, "champion", counts, rows, days=[]).total == Quality(
        0, 0, 0, 0, 0, 0, 0
    )
    assert version_quality(3, "champion", counts, rows, days=iter(chosen)) == vq


def test_same_day_counts_add_up_and_empty_cohorts_are_dropped():
    rows = LabelledRows([5, 5], [0.9, 0.1], [True, False], [1, 0])
    counts = [CohortCounts(5, 10, 2), CohortCounts(5, 30, 1), CohortCounts(6, 0, 0)]
    vq = version_quality(1, "champion", counts, rows)
    assert [(c.day, c.quality.rows, c.quality.alerts) for c in vq.cohorts] == [(5, 40, 3)]


def test_labelled_rows_without_counts_still_count_and_maturity_stays_at_most_1():
    rows = LabelledRows(
        [7, 7, 8, 8, 8], [0.9, 0.2, 0.8, 0.7, 0.1], [1, 0, 1, 1, 0], [1, 0, 0, 1, 0]
    )
    vq = version_quality(1, "champion", [CohortCounts(7, 1, 0)], rows)  # counts lag; 8 missing
    day7, day8 = vq.cohorts
    assert (day7.quality.rows, day7.quality.alerts, day7.quality.maturity) == (2, 1, 1.0)
    assert (day8.quality.rows, day8.quality.alerts, day8.quality.maturity) == (3, 2, 1.0)
    assert (vq.total.rows, vq.total.labelled, vq.total.maturity) == (5, 5, 1.0)


def test_cohort_date_is_iso_utc():
    assert CohortQuality(0, Quality(0, 0, 0, 0, 0, 0, 0)).date == "1970-01-01"
    day = (dt.date(2026, 12, 31) - dt.date(1970, 1, 1)).days
    cohort = CohortQuality(day, Quality(1, 0, 0, 0, 0, 0, 0))
    assert cohort.date == "2026-12-31"
    assert cohort.to_dict()["date"] == "2026-12-31" and cohort.to_dict()["day"] == day


def test_common_days_needs_rows_on_both_sides():
    a = [CohortCounts(1, 5, 0), CohortCounts(2, 5, 1), CohortCounts(3, 0, 0), CohortCounts(4, 1, 0)]
    b = [CohortCounts(2, 9, 0), CohortCounts(3, 9, 0), CohortCounts(4, 2, 2), CohortCounts(5, 1, 0)]
    assert common_days(a, b) == {2, 4}
    assert common_days(a, []) == set()


# --- edge cases: None, never NaN -------------------------------------------------------


def test_no_labels_gives_maturity_0_and_no_label_figures():
    vq = version_quality(2, "shadow", [CohortCounts(9, 50, 5)], LabelledRows.empty())
    q = vq.total
    assert (q.rows, q.alerts, q.labelled, q.maturity, q.alert_rate) == (50, 5, 0, 0.0, 0.1)
    assert q.recall is q.precision is q.false_positive_rate is q.pr_auc is None
    no_nan(vq.to_dict())


def test_empty_everything():
    vq = version_quality(2, "challenger", [], LabelledRows.empty())
    assert vq.cohorts == ()
    assert vq.total == Quality(0, 0, 0, 0, 0, 0, 0)
    assert all(getattr(vq.total, name) is None for name in FIGURES)
    assert vq.to_dict() == {
        "version": 2,
        "role": "challenger",
        "total": vq.total.to_dict(),
        "cohorts": [],
    }
    no_nan(vq.to_dict())
    assert len(LabelledRows.empty()) == 0


def test_one_class_and_no_alerts():
    legit_only = LabelledRows([1] * 4, [0.9, 0.2, 0.6, 0.1], [1, 0, 1, 0], [0] * 4)
    q = Quality.measure(4, 2, legit_only)
    assert q.recall is None and q.pr_auc is None
    assert (q.precision, q.false_positive_rate) == (0.0, 0.5)
    fraud_only = LabelledRows([1] * 4, [0.9, 0.2, 0.6, 0.1], [1, 0, 1, 0], [1] * 4)
    q = Quality.measure(4, 2, fraud_only)
    assert (q.recall, q.precision, q.false_positive_rate, q.pr_auc) == (0.5, 1.0, None, 1.0)
    quiet = LabelledRows([1] * 4, [0.9, 0.2, 0.6, 0.1], [0] * 4, [1, 0, 1, 0])
    q = Quality.measure(4, 0, quiet)
    assert (q.recall, q.precision, q.false_positive_rate, q.alert_rate) == (0.0, None, 0.0, 0.0)
    for rows in (legit_only, fraud_only, quiet):
        no_nan(Quality.measure(4, 2, rows).to_dict())


@pytest.mark.parametrize("seed", SEEDS)
def test_figures_are_none_or_finite_on_tiny_random_samples(seed):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        n = int(rng.integers(0, 4))
        label = rng.integers(0, 2, n)
        decision = rng.random(n) < 0.5
        rows = LabelledRows(rng.integers(0, 3, n), rng.random(n).round(1), decision, label)
        counts = [CohortCounts(d, int(rng.integers(0, 3)), 0) for d in range(3)]
        vq = version_quality(1, "champion", counts, rows)
        no_nan(vq.to_dict())
        for q in [vq.total] + [c.quality for c in vq.cohorts]:
            for name in FIGURES:
                value = getattr(q, name)
                assert value is None or (isinstance(value, float) and 0 <= value <= 1)


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="alerts"):
        CohortCounts(1, 3, 4)
    with pytest.raises(ValueError, match="equal lengths"):
        LabelledRows([1, 2], [0.1], [True], [0])
    with pytest.raises(ValueError, match="0 or 1"):
        LabelledRows([1], [0.1], [True], [2])
    with pytest.raises(ValueError, match="0 or 1"):
        LabelledRows([1], [0.1], [True], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        LabelledRows([1], [float("nan")], [True], [1])
    with pytest.raises(ValueError, match="inconsistent"):
        Quality(rows=5, alerts=1, labelled=3, frauds=2, legit=1, flagged_frauds=2, flagged_legit=0)
    with pytest.raises(ValueError, match="inconsistent"):
        Quality(rows=2, alerts=0, labelled=3, frauds=2, legit=1, flagged_frauds=0, flagged_legit=0)


# --- quality_breach --------------------------------------------------------------------


def quality(frauds: int, caught: int, legit: int, false_alarms: int) -> Quality:
    labelled, alerts = frauds + legit, caught + false_alarms
    return Quality(labelled * 2, alerts, labelled, frauds, legit, caught, false_alarms)


CHAMPION = quality(39, 32, 2000, 20)  # recall 0.821, fpr 0.0100


def test_not_judged_before_either_side_has_enough_labels():
    awful = quality(39, 0, 160, 160)  # 199 labelled
    assert quality_breach(POLICY, CHAMPION, awful) is None
    assert quality_breach(POLICY, quality(10, 10, 189, 0), quality(39, 0, 2000, 2000)) is None


def test_recall_not_judged_before_either_side_has_enough_frauds():
    assert quality_breach(POLICY, CHAMPION, quality(19, 0, 2000, 20)) is None
    assert quality_breach(POLICY, quality(19, 19, 2000, 20), quality(39, 0, 2000, 20)) is None


def test_recall_breach_names_the_figures_and_their_frauds():
    breach = quality_breach(POLICY, CHAMPION, quality(41, 15, 2000, 20))
    assert breach is not None and breach.kind == "quality"
    assert breach.reason == (
        "live recall 0.366 (41 frauds) vs the champion's 0.821 (39 frauds) "
        "on the same cohorts, more than 0.05 below"
    )


def test_fpr_breach_names_the_figures_and_their_legitimate_rows():
    breach = quality_breach(POLICY, CHAMPION, quality(39, 32, 1950, 98))
    assert breach is not None and breach.kind == "quality"
    assert breach.reason == (
        "live false-positive rate 0.0503 (1950 legitimate) vs the champion's 0.0100 "
        "(2000 legitimate) on the same cohorts, more than 0.01 above"
    )


def test_fpr_is_judged_without_enough_frauds_but_needs_enough_legitimate_rows():
    few_frauds = quality_breach(POLICY, CHAMPION, quality(5, 0, 2000, 100))
    assert few_frauds is not None and "false-positive rate" in few_frauds.reason
    assert "recall" not in few_frauds.reason
    policy = RolloutPolicy(guard_quality_min_labels=200, guard_quality_min_frauds=5)
    mostly_fraud = quality(50, 50, 199, 199)  # 249 labelled, 199 legitimate
    assert quality_breach(policy, quality(50, 50, 2000, 0), mostly_fraud) is None


def test_both_breaches_are_reported_together():
    breach = quality_breach(POLICY, CHAMPION, quality(41, 15, 1950, 98))
    assert breach is not None
    recall, fpr = breach.reason.split("; ")
    assert recall.startswith("live recall 0.366") and fpr.startswith("live false-positive")


def test_within_margins_including_exactly_at_them():
    """The margins alone: alpha 0.5 makes any gap in the bad direction significant."""
    margins = RolloutPolicy(guard_quality_alpha=0.5)
    champion = quality(40, 32, 2000, 20)  # recall 0.80, fpr 0.01
    assert quality_breach(margins, champion, quality(40, 30, 2000, 40)) is None  # 0.05, 0.01
    assert quality_breach(margins, champion, quality(40, 31, 2000, 30)) is None
    assert quality_breach(margins, champion, quality(40, 29, 2000, 20)) is not None
    assert quality_breach(margins, champion, quality(40, 32, 2000, 41)) is not None
    strict = RolloutPolicy(
        guard_max_recall_drop=0.0, guard_max_fpr_rise=0.0, guard_quality_alpha=0.5
    )
    assert quality_breach(strict, champion, champion) is None
    assert quality_breach(strict, champion, quality(40, 31, 2000, 20)) is not None


def test_a_gap_over_the_margin_must_also_be_significant():
    """Seen in the drift demo: 227 legitimate rows put an FPR of 0.0485 within noise of the
    champion's 0.0253 (z 1.6); a rollback then would throw away the better model."""
    champion = quality(100, 80, 3239, 82)  # fpr 0.0253
    noisy = quality(10, 8, 227, 11)  # fpr 0.0485
    assert quality_breach(POLICY, champion, noisy) is None
    assert quality_breach(RolloutPolicy(guard_quality_alpha=0.5), champion, noisy) is not None
    many = quality(100, 80, 2270, 110)  # the same rate on ten times the rows: z 2.5
    assert quality_breach(POLICY, champion, many) is not None
    recall_40 = quality(40, 29, 2000, 20)  # 0.725 vs 0.80 on 40 frauds: z 0.8
    assert quality_breach(POLICY, quality(40, 32, 2000, 20), recall_40) is None


def test_the_gap_is_tested_beyond_the_margin_at_a_strict_level_per_look():
    """The drift demo's retrained version, better on the new traffic, was rolled back
    early in its canary on both guards in turn: 4 of 23 frauds caught against 76 of 196
    (gap 0.21, z 2.5 for any gap but 1.9 beyond the 0.05 margin), and 11 false alarms in
    209 legitimate rows against 58 in 2,273 (z 1.7, 1.1 beyond the margin). The guard looks
    every quality interval, so a lenient level per look rolls back good versions often."""
    champion = quality(196, 76, 2273, 58)
    assert quality_breach(POLICY, champion, quality(23, 4, 2000, 51)) is None
    assert quality_breach(POLICY, champion, quality(40, 20, 209, 11)) is None
    lenient = RolloutPolicy(guard_quality_alpha=0.05)
    assert quality_breach(lenient, champion, quality(23, 4, 2000, 51)) is not None
    clearly_worse = quality(60, 8, 2000, 51)  # recall 0.13 vs 0.39: z 3.6 beyond the margin
    assert quality_breach(POLICY, champion, clearly_worse) is not None


def test_a_better_challenger_passes():
    assert quality_breach(POLICY, CHAMPION, quality(39, 39, 2000, 0)) is None
    assert quality_breach(POLICY, CHAMPION, CHAMPION) is None


def test_breach_on_version_quality_of_the_same_cohorts():
    rng = np.random.default_rng(3)
    champ_rows, champ_counts = cohort_fixture(1)
    same = common_days(champ_counts, champ_counts[:3])
    label, score = scored(rng, 3000)
    blind = LabelledRows(rng.choice(sorted(same), 3000), score, np.zeros(3000, bool), label)
    champion = version_quality(1, "champion", champ_counts, champ_rows, same).total
    challenger = version_quality(2, "challenger", champ_counts[:3], blind, same).total
    breach = quality_breach(RolloutPolicy(guard_quality_min_frauds=5), champion, challenger)
    assert breach is not None and breach.reason.startswith("live recall 0.000")


# --- threshold helpers -----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("decimals", [2, 3, 12])
def test_threshold_reproduces_the_closest_rate_not_above(seed, decimals):
    rng = np.random.default_rng(seed)
    label, score = scored(rng, 500, decimals=decimals)
    score = np.minimum(score, 0.999)  # more than `rate` at exactly 1.0 has no cut (below)
    distinct = np.unique(score)
    achievable = {float(np.mean(score >= v)) for v in distinct} | {0.0}
    for rate in (0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 1.0, float(rng.random())):
        cut = threshold_for_alert_rate(score, rate)
        assert isinstance(cut, float) and 0.0 <= cut <= 1.0
        reached = float(np.mean(score >= cut))
        assert reached == max(r for r in achievable if r <= rate)
        assert rates_at_threshold(label, score, cut)[2] == reached
    if decimals == 12:  # no ties: every k/n is reached exactly
        assert rates_at_threshold(label, score, threshold_for_alert_rate(score, 0.07))[2] == 0.07


def test_threshold_edge_cases():
    scores = np.array([0.2, 0.4, 0.4, 0.9])
    assert threshold_for_alert_rate(scores, 1.0) == 0.2
    assert threshold_for_alert_rate(scores, 0.75) == 0.4
    assert threshold_for_alert_rate(scores, 0.74) == 0.9  # the tie at 0.4 would exceed
    assert np.mean(scores >= threshold_for_alert_rate(scores, 0.0)) == 0.0
    equal = np.full(10, 0.3)
    assert threshold_for_alert_rate(equal, 1.0) == 0.3
    for rate in (0.0, 0.5, 0.99):
        cut = threshold_for_alert_rate(equal, rate)
        assert 0.3 < cut <= 1.0 and np.mean(equal >= cut) == 0.0
    assert threshold_for_alert_rate(np.ones(5), 1.0) == 1.0
    assert threshold_for_alert_rate(np.zeros(5), 0.0) > 0.0
    with pytest.raises(ValueError, match=r"scores are 1\.0"):
        threshold_for_alert_rate(np.array([0.5, 1.0, 1.0]), 0.5)
    for bad_scores, rate in (([], 0.1), ([0.5], -0.1), ([0.5], 1.1), ([float("nan")], 0.1)):
        with pytest.raises(ValueError):
            threshold_for_alert_rate(np.array(bad_scores), rate)
    with pytest.raises(ValueError):
        threshold_for_alert_rate(np.array([1.5]), 0.1)


def test_threshold_holds_in_float32():
    rng = np.random.default_rng(11)
    score = (rng.random(1000) * 0.99).astype(np.float32).round(2)
    for rate in (0.0, 0.013, 0.2):
        cut = threshold_for_alert_rate(score, rate)
        reached = float(np.mean(score >= cut))
        assert reached <= rate and reached == float(np.mean(score.astype(np.float64) >= cut))
    top = np.full(4, np.float32(0.7))
    cut = threshold_for_alert_rate(top, 0.0)
    assert np.mean(top >= cut) == 0.0 and np.mean(top.astype(np.float64) >= cut) == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_rates_at_threshold_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    label, score = scored(rng, 300)
    for threshold in (0.0, 0.3, 0.5, float(np.median(score)), 1.0, 1.01):
        recall, fpr, alert_rate = rates_at_threshold(label, score, threshold)
        decision = score >= threshold
        tn, fp, _fn, _tp = confusion_matrix(label, decision, labels=[0, 1]).ravel()
        assert recall == pytest.approx(recall_score(label, decision, zero_division=0.0))
        assert fpr == pytest.approx(fp / (fp + tn))
        assert alert_rate == decision.mean()


def test_rates_at_threshold_edge_cases():
    assert rates_at_threshold(np.zeros(3), np.array([0.1, 0.6, 0.9]), 0.5) == (None, 2 / 3, 2 / 3)
    assert rates_at_threshold(np.ones(2), np.array([0.1, 0.6]), 0.5) == (0.5, None, 0.5)
    with pytest.raises(ValueError):
        rates_at_threshold(np.empty(0), np.empty(0), 0.5)
    with pytest.raises(ValueError):
        rates_at_threshold(np.zeros(2), np.zeros(3), 0.5)


def test_a_champion_below_its_evaluation_wants_a_retrain_once_the_gap_is_clear():
    from serve_app.core.quality import below_evaluation
    from serve_app.settings import RetrainSettings

    policy = RetrainSettings()  # recall -0.10 on 50 frauds, FPR +0.02 on 1,000 rows, p < 0.01
    figures = {"recall": 0.80, "false_positive_rate": 0.01}
    assert below_evaluation(quality(200, 158, 5000, 50), figures, policy) is None
    missed = below_evaluation(quality(200, 110, 5000, 50), figures, policy)  # recall 0.55
    assert missed == "live recall 0.550 (200 frauds) vs 0.800 on its evaluation set"
    assert below_evaluation(quality(49, 10, 5000, 50), figures, policy) is None  # too few
    assert below_evaluation(quality(60, 41, 5000, 50), figures, policy) is None  # 0.68: noise
    flagged = below_evaluation(quality(200, 160, 5000, 250), figures, policy)  # FPR 0.05
    assert flagged.startswith("live false-positive rate 0.0500 (5000 legitimate)")
    assert below_evaluation(quality(200, 160, 999, 100), figures, policy) is None
    assert below_evaluation(quality(200, 110, 5000, 50), {}, policy) is None
