"""Pool assignment: tag first, then name patterns in declaration order, else the fast lane."""

from __future__ import annotations

import pytest

from serve_app.core.placement import FAST_LANE, POOL_TAG, UnknownPool, assign_pool
from serve_app.settings import ModelPoolSettings

POOLS = (
    ModelPoolSettings(name="legacy", models=("fraud-loan-*", "fraud-ach-eu")),
    ModelPoolSettings(name="loans", models=("fraud-loan-*",)),
)


@pytest.mark.parametrize(
    ("name", "tags", "pool"),
    [
        ("fraud-card-eu", {}, FAST_LANE),
        ("fraud-loan-uk", {}, "legacy"),  # the first matching pool wins
        ("fraud-ach-eu", {}, "legacy"),
        ("fraud-ach-us", {}, FAST_LANE),
        ("fraud-card-eu", {POOL_TAG: "loans"}, "loans"),  # the tag beats the patterns
        ("fraud-loan-uk", {POOL_TAG: "loans"}, "loans"),
        ("fraud-loan-uk", {POOL_TAG: ""}, "legacy"),
    ],
)
def test_assignment(name, tags, pool):
    assert assign_pool(name, tags, POOLS) == pool


def test_a_tag_naming_an_undeclared_pool_is_refused_with_the_declared_ones():
    with pytest.raises(UnknownPool, match=r"'gpu' names none of the pools \['legacy', 'loans'\]"):
        assign_pool("fraud-card-eu", {POOL_TAG: "gpu"}, POOLS)


def test_without_pools_everything_is_fast_lane():
    assert assign_pool("fraud-loan-uk", {}, ()) is FAST_LANE
