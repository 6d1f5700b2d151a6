"""Which pool serves a model: the fast lane in the router, or a model pool behind it.

A registered-model tag names the pool explicitly (the model owner's choice, made next to
the model); otherwise the first pool whose name patterns match; otherwise the fast lane.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from serve_app.settings import ModelPoolSettings

POOL_TAG = "serve_app.pool"
FAST_LANE = None  # a route without a pool is scored in the router's own process


class UnknownPool(ValueError):
    """The tag names a pool the configuration does not declare."""


def assign_pool(
    name: str, tags: Mapping[str, str], pools: Sequence[ModelPoolSettings]
) -> str | None:
    declared = {pool.name for pool in pools}
    tagged = tags.get(POOL_TAG)
    if tagged:
        if tagged not in declared:
            known = sorted(declared)
            raise UnknownPool(f"tag {POOL_TAG}={tagged!r} names none of the pools {known}")
        return tagged
    for pool in pools:
        if any(fnmatchcase(name, pattern) for pattern in pool.models):
            return pool.name
    return FAST_LANE
