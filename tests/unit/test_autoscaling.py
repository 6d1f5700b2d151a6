"""The router's autoscaling policy and the busy share its replicas report."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from serve_app.core.autoscaling import BUSY, BusyClock, BusyTarget


def context(busy: list[float], ongoing: float = 0.0, target_ongoing: float = 8.0):
    metrics = {BUSY: {f"replica-{i}": b for i, b in enumerate(busy)}}
    return SimpleNamespace(
        aggregated_metrics=metrics,
        total_num_requests=ongoing,
        config=SimpleNamespace(target_ongoing_requests=target_ongoing),
    )


@pytest.mark.parametrize(
    ("busy", "ongoing", "replicas"),
    [
        ([0.95], 0.0, 2),  # one saturated replica: add one
        ([0.5, 0.55], 0.0, 2),  # two at target: stay
        ([0.9, 0.9], 0.0, 3),
        ([0.2, 0.2, 0.2], 0.0, 1),  # idle: back to one (Serve's bounds keep the minimum)
        ([0.6], 0.0, 1),  # exactly at target is not over it
        ([0.1], 20.0, 3),  # awaiting requests (pool calls) ask for more: 20 / 8
        ([], 0.0, 1),
    ],
)
def test_replicas_follow_the_busy_share(busy, ongoing, replicas):
    assert BusyTarget(0.6)(context(busy, ongoing)) == (replicas, {})


def test_no_metrics_yet_keeps_one_replica():
    ctx = SimpleNamespace(aggregated_metrics=None, total_num_requests=None, config=None)
    assert BusyTarget()(ctx) == (1, {})


def test_a_target_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="busy target"):
        BusyTarget(1.5)


def test_the_clock_reports_the_cpu_share_since_the_last_read():
    clock = BusyClock(wall=100.0, cpu=10.0)
    assert clock.share(wall=102.0, cpu=11.0) == pytest.approx(0.5)
    assert clock.share(wall=104.0, cpu=11.0) == 0.0  # idle since
    assert clock.share(wall=104.0, cpu=12.0) == 0.0  # no wall time: no share
