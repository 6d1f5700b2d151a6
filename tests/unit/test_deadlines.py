"""Request deadlines: where a budget comes from, which wins, what is refused, and when a
request counts as too late to score."""

from __future__ import annotations

import pytest

from serve_app.core.deadlines import (
    MAX_TIMEOUT_MS,
    NO_DEADLINE,
    Deadline,
    DeadlineExceeded,
    budget_ms,
    model_default,
)
from serve_app.protocol.errors import BadRequest

HEADER = "x-request-timeout-ms"


def test_the_header_wins_over_the_parameter_which_wins_over_the_default():
    assert budget_ms(HEADER, "40", 80, 100.0) == 40.0
    assert budget_ms(HEADER, None, 80, 100.0) == 80.0
    assert budget_ms(HEADER, None, "12.5", None) == 12.5
    assert budget_ms(HEADER, None, None, 100.0) == 100.0
    assert budget_ms(HEADER, None, None, None) is None


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "nan", "inf", str(MAX_TIMEOUT_MS + 1), ""])
def test_a_budget_that_is_not_a_positive_number_of_ms_is_a_400_naming_its_source(bad):
    with pytest.raises(BadRequest, match=HEADER):
        budget_ms(HEADER, bad, None, None)
    with pytest.raises(BadRequest, match=r"parameters\.timeout_ms"):
        budget_ms(HEADER, None, bad, None)
    for value in (True, [1], {"ms": 1}):
        with pytest.raises(BadRequest):
            budget_ms(HEADER, None, value, None)


def test_a_models_default_comes_from_the_first_matching_pattern():
    per_model = {"fraud-card-*": 50.0, "fraud-*": 200.0}
    assert model_default("fraud-card-eu", per_model, 1000.0) == 50.0
    assert model_default("fraud-loan-us", per_model, 1000.0) == 200.0
    assert model_default("risk-x", per_model, 1000.0) == 1000.0
    assert model_default("risk-x", {}, None) is None


def test_a_request_is_too_late_once_its_budget_is_spent_and_the_504_says_so():
    deadline = Deadline(started=100.0, budget_ms=50.0)
    assert deadline.remaining_s(100.01) == pytest.approx(0.04)
    deadline.check(100.049)
    with pytest.raises(DeadlineExceeded, match="deadline of 50 ms passed") as late:
        deadline.check(100.05)
    assert late.value.status == 504 and "not scored" in late.value.message
    NO_DEADLINE.check(1e12)  # no budget: never late
    assert NO_DEADLINE.remaining_s(5.0) is None
