"""What the router learns from each request: metrics, traffic per model, rollout windows
and every model's recent windows.

Traffic counts choose the models every new replica opens first; the rollout windows are
what rollout guards judge; the recent windows are the console's requests/s, p99, error
rate and score distributions (core/fleet.py). All are shipped to the control actor on
each table sync.
"""

from __future__ import annotations

import numpy as np

from serve_app.core.routing import ModelRoute
from serve_app.core.stats import VersionWindow
from serve_app.metrics import UNKNOWN_MODEL, ScoringMetrics, outcome


class Observer:
    def __init__(self, metrics: ScoringMetrics) -> None:
        self.metrics = metrics
        self._traffic: dict[str, int] = {}
        self._windows: dict[str, dict[int, VersionWindow]] = {}
        self._recent: dict[str, dict[int, VersionWindow]] = {}

    def request(
        self,
        route: ModelRoute | None,
        version: int | None,
        status: int,
        elapsed_ms: float,
        scores: np.ndarray | None,
        loaded_here: bool,
    ) -> None:
        """Metrics for every request; a rollout window too while the model has a challenger.

        A request that had to open the model first is left out of the window: its time is
        the load's, whichever version then answered it.
        """
        model = route.name if route else UNKNOWN_MODEL
        tags = {"model": model, "version": str(version or "")}
        self.metrics.requests.inc(tags={**tags, "outcome": outcome(status)})
        self.metrics.latency.observe(elapsed_ms, tags=tags)
        if scores is not None:
            self.metrics.rows.inc(len(scores), tags=tags)
        if route is None:
            return
        self._traffic[route.name] = self._traffic.get(route.name, 0) + 1
        if version is not None and not 400 <= status < 500:
            recent = self._recent.setdefault(route.name, {}).get(version)
            if recent is None:
                recent = self._recent[route.name][version] = VersionWindow()
            recent.record(elapsed_ms, scores, error=status >= 500)
        if loaded_here or route.challenger is None or version not in route.versions:
            return
        if not 400 <= status < 500:
            self.window(route.name, version).record(elapsed_ms, scores, error=status >= 500)

    def window(self, name: str, version: int) -> VersionWindow:
        return self._windows.setdefault(name, {}).setdefault(version, VersionWindow())

    def drain(self) -> tuple[dict[str, int], dict[str, dict[int, VersionWindow]], dict]:
        """Everything observed since the last drain, for the control actor: traffic, rollout
        windows, recent windows."""
        traffic, self._traffic = self._traffic, {}
        windows, self._windows = self._windows, {}
        recent, self._recent = self._recent, {}
        return traffic, windows, recent
