"""A token bucket: how many rows a caller may have explained, refilled at a steady rate.

Pure (the clock is passed in) so that the arithmetic behind a 429 and its Retry-After is
unit-tested without sleeping.
"""

from __future__ import annotations

import math


class TokenBucket:
    """`rate` tokens a second up to `burst`; a request takes as many as it has rows."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, cost: float, now: float) -> float:
        """0.0 when `cost` tokens were taken; else the seconds until they would be there
        (nothing is taken then). A cost above `burst` can never pass: inf."""
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = max(self._at, now)
        if cost > self.burst:
            return math.inf
        if cost <= self._tokens:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate


def retry_after_header(wait_s: float) -> str:
    """Retry-After in whole seconds (RFC 9110 delay-seconds), never 0 for a refused call."""
    return str(max(1, math.ceil(wait_s)))
