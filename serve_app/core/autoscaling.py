"""Router autoscaling on how busy its replicas are, not on their ongoing requests.

A fast-lane request is scored without yielding the event loop, and Serve samples a
replica's ongoing requests on that same loop: the count is 0 at every sample however
loaded the replica is, so Serve's default policy never scales the router (measured:
one replica at 2,100 req/s and c16). Instead each replica reports how busy its process
is (CPU time over wall time: uvicorn, Serve's wrapper and scoring together; serve-app's
own handler is only a quarter of it), and this policy sizes the deployment so that the
share stays near a target. Serve applies the deployment's bounds and up/downscale
delays around it.
"""

from __future__ import annotations

import math
from typing import Any

BUSY = "busy"  # the custom metric each router replica reports (Router.record_autoscaling_stats)


class BusyTarget:
    """Replicas = total busy share / target, or what the ongoing requests ask, if more."""

    def __init__(self, target: float = 0.6) -> None:
        if not 0 < target <= 1:
            raise ValueError(f"the busy target {target} is not in (0, 1]")
        self.target = target

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        busy = sum(((ctx.aggregated_metrics or {}).get(BUSY) or {}).values())
        by_busy = math.ceil(busy / self.target - 1e-9)
        per_replica = getattr(ctx.config, "target_ongoing_requests", None) or 1.0
        by_requests = math.ceil((ctx.total_num_requests or 0.0) / per_replica)
        return max(1, by_busy, by_requests), {}


class BusyClock:
    """A process's CPU time as a share of the wall time since the last read."""

    def __init__(self, wall: float, cpu: float) -> None:
        self._wall, self._cpu = wall, cpu

    def share(self, wall: float, cpu: float) -> float:
        elapsed = wall - self._wall
        share = (cpu - self._cpu) / elapsed if elapsed > 0 else 0.0
        self._wall, self._cpu = wall, cpu
        return max(share, 0.0)
