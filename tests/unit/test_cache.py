"""The prediction cache: keys, TTL, size bound, invalidation and opt-in per model."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.core.cache import PredictionCache, feature_digest


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


ROWS = np.arange(24, dtype=np.float32).reshape(2, 12)
SCORES = np.array([0.1, 0.9], dtype=np.float32)


def cache(**options) -> tuple[PredictionCache, Clock]:
    clock = Clock()
    options = {"patterns": ["fraud-*"], "ttl_s": 10.0, "max_entries": 3} | options
    return PredictionCache(clock=clock, **options), clock


def test_digest_changes_with_any_value_shape_or_dtype():
    base = feature_digest(ROWS)
    assert feature_digest(ROWS.copy()) == base
    changed = ROWS.copy()
    changed[1, 11] += 1e-6
    assert feature_digest(changed) != base
    assert feature_digest(ROWS.reshape(1, 24)) != base
    assert feature_digest(ROWS.astype(np.float64)) != base
    assert feature_digest(np.asfortranarray(ROWS)) == base  # same values, other layout


def test_hit_after_put_miss_for_other_version_or_model():
    store, _ = cache()
    digest = feature_digest(ROWS)
    assert store.get("fraud-card-eu", 1, digest) is None
    store.put("fraud-card-eu", 1, digest, SCORES)
    assert store.get("fraud-card-eu", 1, digest) is SCORES
    assert store.get("fraud-card-eu", 2, digest) is None
    assert store.get("fraud-card-us", 1, digest) is None


def test_entries_expire_after_the_ttl():
    store, clock = cache()
    digest = feature_digest(ROWS)
    store.put("fraud-card-eu", 1, digest, SCORES)
    clock.now += 9.9
    assert store.get("fraud-card-eu", 1, digest) is SCORES
    clock.now += 0.1
    assert store.get("fraud-card-eu", 1, digest) is None
    assert len(store) == 0


def test_size_bound_evicts_least_recently_used():
    store, _ = cache()
    digests = [feature_digest(ROWS + i) for i in range(4)]
    for digest in digests[:3]:
        store.put("fraud-card-eu", 1, digest, SCORES)
    store.get("fraud-card-eu", 1, digests[0])  # now the most recently used
    store.put("fraud-card-eu", 1, digests[3], SCORES)
    assert len(store) == 3
    assert store.get("fraud-card-eu", 1, digests[1]) is None
    assert store.get("fraud-card-eu", 1, digests[0]) is SCORES


def test_retain_drops_versions_no_longer_served_for_that_model_only():
    store, _ = cache(max_entries=10)
    digest = feature_digest(ROWS)
    for model, version in [("fraud-card-eu", 1), ("fraud-card-eu", 2), ("fraud-atm-us", 1)]:
        store.put(model, version, digest, SCORES)
    store.retain("fraud-card-eu", [2])
    assert store.get("fraud-card-eu", 1, digest) is None
    assert store.get("fraud-card-eu", 2, digest) is SCORES
    assert store.get("fraud-atm-us", 1, digest) is SCORES
    store.retain("fraud-atm-us", [])
    assert len(store) == 1


@pytest.mark.parametrize(
    ("patterns", "model", "enabled"),
    [
        ((), "fraud-card-eu", False),
        (("fraud-card-eu",), "fraud-card-eu", True),
        (("fraud-card-eu",), "fraud-card-euro", False),
        (("fraud-card-*",), "fraud-card-us", True),
        (("fraud-card-*",), "fraud-atm-us", False),
        (("*-us", "x"), "fraud-atm-us", True),
    ],
)
def test_caching_is_opt_in_by_name_or_pattern(patterns, model, enabled):
    store, _ = cache(patterns=patterns)
    assert store.enabled_for(model) is enabled
    assert store.enabled_for(model) is enabled  # memoised answer is the same
