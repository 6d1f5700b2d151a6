import numpy as np
import pytest

from serve_app.core import rollout as machine
from serve_app.core.rollout import EvalResult, Rollout
from serve_app.core.stats import VersionWindow, psi, recall_at_rate
from serve_app.settings import RolloutPolicy

POLICY = RolloutPolicy(
    steps=(5.0, 50.0, 100.0), step_dwell_s=10, step_min_requests=20, guard_min_scores=50
)
GOOD = EvalResult(auc=0.90, recall=0.60, p99_ms=0.2)


def window(
    requests: int, latency_ms: float = 1.0, errors: int = 0, score: float = 0.1
) -> VersionWindow:
    w = VersionWindow()
    for i in range(requests):
        w.record(latency_ms, np.array([score + (i % 7) * 0.01]), error=i < errors)
    return w


def test_gate_admits_an_equal_candidate_and_names_each_failure():
    assert machine.gate(POLICY, GOOD, GOOD) is None
    assert "AUC" in machine.gate(POLICY, GOOD, EvalResult(0.70, 0.60, 0.2))
    assert "recall" in machine.gate(POLICY, GOOD, EvalResult(0.90, 0.40, 0.2))
    assert "budget" in machine.gate(POLICY, GOOD, EvalResult(0.90, 0.60, 50.0))


NAN = float("nan")


@pytest.mark.parametrize(
    ("champion", "candidate", "reason"),
    [
        (EvalResult(NAN, 0.6, 0.2), EvalResult(NAN, 0.6, 0.2), "no AUC (it needs both classes)"),
        (GOOD, EvalResult(NAN, 0.6, 0.2), "no AUC"),
        (EvalResult(0.9, NAN, 0.2), EvalResult(0.9, NAN, 0.2), "no recall"),
        (GOOD, EvalResult(0.9, 0.6, NAN), "no single-row latency"),
    ],
)
def test_gate_refuses_a_candidate_the_evaluation_set_cannot_judge(champion, candidate, reason):
    """Comparisons with NaN are all False: without this check no margin could fail."""
    assert reason in machine.gate(POLICY, champion, candidate)


def test_gate_refuses_with_the_evaluation_sets_problem():
    unusable = EvalResult.unusable("the evaluation set has no 'is_fraud' label column")
    assert machine.gate(POLICY, unusable, unusable) == (
        "the evaluation set has no 'is_fraud' label column"
    )
    assert "label column" in machine.gate(POLICY, GOOD, unusable)


def test_canary_walks_steps_after_dwell_and_requests_then_promotes():
    r = Rollout.start("m", 2, 1, POLICY, now=0.0)
    assert (r.phase, r.weight) == ("canary", 5.0)
    healthy = (window(100), window(60))
    assert machine.evaluate(r, POLICY, 5.0, *healthy) == machine.Hold(), "dwell not over"
    assert machine.evaluate(r, POLICY, 11.0, window(100), window(10)) == machine.Hold(), "too few"
    assert machine.evaluate(r, POLICY, 11.0, window(30), window(30)) == machine.Hold(), (
        "the drift guard has not had enough scores to judge the step"
    )
    assert machine.evaluate(r, POLICY, 11.0, *healthy) == machine.Advance(1)
    r = r.at_step(1, POLICY, now=11.0)
    assert r.weight == 50.0
    r = r.at_step(2, POLICY, now=30.0)
    assert machine.evaluate(r, POLICY, 41.0, *healthy) == machine.Promote()


@pytest.mark.parametrize(
    ("challenger", "kind"),
    [
        (window(50, errors=10), "error_rate"),
        (window(120, latency_ms=40.0), "latency"),
        (window(50, score=0.8), "drift"),
    ],
)
def test_guard_breaches_roll_back(challenger, kind):
    r = Rollout.start("m", 2, 1, POLICY, now=0.0)
    decision = machine.evaluate(r, POLICY, 1.0, window(200), challenger)
    assert isinstance(decision, machine.RollBack) and decision.kind == kind


def test_one_slow_request_in_a_small_window_is_not_a_latency_breach():
    r = Rollout.start("m", 2, 1, POLICY, now=0.0)
    hiccup = window(60).merge(window(1, latency_ms=250.0))
    assert machine.evaluate(r, POLICY, 1.0, window(600), hiccup) == machine.Hold()
    slow_tail = window(100).merge(window(3, latency_ms=250.0))
    decision = machine.evaluate(r, POLICY, 1.0, window(600), slow_tail)
    assert isinstance(decision, machine.RollBack) and decision.kind == "latency"


def test_guards_wait_for_enough_samples():
    r = Rollout.start("m", 2, 1, POLICY, now=0.0)
    assert machine.evaluate(r, POLICY, 1.0, window(200), window(5, errors=5)) == machine.Hold()


def test_shadow_and_manual_never_advance_on_their_own():
    shadow_policy = POLICY.model_copy(update={"mode": "shadow", "shadow_sample_percent": 50.0})
    r = Rollout.start("m", 2, 1, shadow_policy, now=0.0)
    assert (r.phase, r.weight) == ("shadow", 50.0)
    assert machine.evaluate(r, shadow_policy, 1e6, window(500), window(500)) == machine.Hold()
    manual = Rollout.start("m", 2, 1, POLICY, now=0.0).manual(30.0, now=1.0)
    assert machine.evaluate(manual, POLICY, 1e6, window(500), window(500)) == machine.Hold()


def test_rollout_round_trips_through_its_tag():
    r = Rollout.start("m", 7, 6, POLICY, now=123.5).at_step(1, POLICY, now=200.0)
    assert Rollout.from_json(r.to_json()) == r


def test_policy_validation():
    with pytest.raises(ValueError, match="end at 100"):
        RolloutPolicy(steps=(5.0, 50.0))
    with pytest.raises(ValueError, match="rise strictly"):
        RolloutPolicy(steps=(50.0, 5.0, 100.0))


def test_window_statistics():
    w = window(100, latency_ms=2.0).merge(window(1, latency_ms=300.0))
    assert w.requests == 101 and w.p99_ms() == 2.0
    assert window(100, latency_ms=300.0).p99_ms() == 500
    assert window(10, errors=2).error_rate == 0.2
    same = window(100).scores
    assert psi(same, same) == 0.0
    assert psi(same, window(100, score=0.8).scores) > 1.0
    shadow = VersionWindow()
    shadow.compare(np.array([0.1, 0.9, 0.6]) >= 0.5, np.array([0.2, 0.8, 0.4]) >= 0.5)
    assert shadow.agreement == pytest.approx(2 / 3)


def test_recall_at_rate():
    labels = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert recall_at_rate(labels, scores, 0.1) == 0.5
    assert recall_at_rate(labels, scores, 0.2) == 0.5
