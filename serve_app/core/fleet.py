"""Recent traffic per model and version (the last minute, in 10 s buckets) for the console.

Rollout windows (`VersionWindow`s merged per rollout step) exist only while a model has a
challenger and restart at every step; an operator looking at the fleet wants every model's
recent requests/s, p99, error rate and score distribution. Replicas ship a second set of
windows with each table sync; the control actor files them here by arrival time and drops
buckets older than the span, so every figure says which window it covers.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from serve_app.core.stats import VersionWindow

SPAN_S = 60.0
BUCKET_S = 10.0


class RecentTraffic:
    """Windows per model and version over the last `span_s`, bucketed by `bucket_s`."""

    def __init__(self, started: float, span_s: float = SPAN_S, bucket_s: float = BUCKET_S):
        self._started = started
        self._span_s = span_s
        self._bucket_s = bucket_s
        self._buckets: dict[str, deque[tuple[int, dict[int, VersionWindow]]]] = {}

    def add(self, now: float, name: str, by_version: dict[int, VersionWindow]) -> None:
        slot = int(now // self._bucket_s)
        buckets = self._buckets.setdefault(name, deque())
        if not buckets or buckets[-1][0] != slot:
            buckets.append((slot, {}))
        current = buckets[-1][1]
        for version, window in by_version.items():
            current[version] = current.get(version, VersionWindow()).merge(window)
        self._prune(buckets, slot)

    def forget(self, name: str) -> None:
        self._buckets.pop(name, None)

    def summary(self, name: str, now: float) -> dict[str, Any]:
        """Requests/s, p99 (the upper edge of its latency bucket), error rate and score
        bins per version, over the window the kept buckets cover (`window_s`: between
        `span_s - bucket_s` and `span_s`, shorter just after the start)."""
        slot = int(now // self._bucket_s)
        buckets = self._buckets.get(name, deque())
        self._prune(buckets, slot)
        merged: dict[int, VersionWindow] = {}
        for _, by_version in buckets:
            for version, window in by_version.items():
                merged[version] = merged.get(version, VersionWindow()).merge(window)
        covered_since = max(self._started, self._oldest(slot) * self._bucket_s)
        window_s = max(now - covered_since, 1e-9)
        total = VersionWindow()
        for window in merged.values():
            total = total.merge(window)
        return {
            "window_s": round(window_s, 1),
            **_figures(total, window_s),
            "versions": {
                version: {**_figures(window, window_s), "score_bins": window.scores}
                for version, window in sorted(merged.items())
            },
        }

    def _oldest(self, slot: int) -> int:
        return slot - math.ceil(self._span_s / self._bucket_s) + 1

    def _prune(self, buckets: deque, slot: int) -> None:
        oldest = self._oldest(slot)
        while buckets and buckets[0][0] < oldest:
            buckets.popleft()


def _figures(window: VersionWindow, window_s: float) -> dict[str, Any]:
    """None, not 0, where no request answered: a p99 or error rate of nothing is unknown."""
    seen = window.requests > 0
    return {
        "requests": window.requests,
        "requests_per_s": round(window.requests / window_s, 3),
        "p99_ms": window.p99_ms() if seen else None,
        "error_rate": window.error_rate if seen else None,
    }
