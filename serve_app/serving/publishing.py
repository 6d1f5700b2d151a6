"""The control actor's publishing: the routing table replicas long-poll for, and the
gauges that describe it.

A part of `Controller` (serving/controller.py), kept in a room of its own: each poll ends
here, turning champions, rollouts, standbys and pools into one table, with each routed
version's threshold.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from serve_app.core import rollout as machine
from serve_app.core.routing import ModelRoute
from serve_app.runtime.onnx import ModelArtifact

PINNED_CACHE = 64  # artifacts of versions outside the table kept for pinned requests


class TablePublisher:
    def _publish(self) -> None:
        routes = {name: self._route(name, artifact) for name, artifact in self._champions.items()}
        k = self._settings.router.preload_top_k
        hot = tuple(sorted(routes, key=lambda name: (-self._traffic[name], name))[:k])
        table = self._table.with_routes(routes, hot)
        if table is self._table:
            return
        self._table = table
        routed = {(r.name, v) for r in routes.values() for v in r.versions}
        surplus = [key for key in self._artifacts if key not in routed]
        for key in surplus[: max(0, len(surplus) - PINNED_CACHE)]:
            del self._artifacts[key]
        self._table_changed.set()
        self._table_changed = asyncio.Event()

    def _route(self, name: str, champion: ModelArtifact) -> ModelRoute:
        rollout = self._rollouts.get(name)
        route = ModelRoute(
            name,
            champion.version,
            champion.features,
            standby=self._standby.get(name, (None, 0))[0],
            pool=self._pools.get(name),
        )
        if rollout is not None:
            route = replace(
                route,
                challenger=rollout.candidate,
                challenger_weight=rollout.weight,
                shadow=rollout.phase == machine.SHADOW,
            )
        return replace(route, thresholds=self._thresholds(route, champion))

    def _thresholds(self, route: ModelRoute, champion: ModelArtifact) -> tuple:
        """Each routed version's alert threshold: it moves with the version."""
        found = []
        for version in route.versions:
            artifact = champion if version == champion.version else None
            artifact = artifact or self._artifacts.get((route.name, version))
            if artifact is not None:
                found.append((version, artifact.threshold))
        return tuple(found)

    def _export_gauges(self) -> None:
        """Set every routed model's gauges, on every poll: Ray evicts a gauge that is not
        refreshed within two export intervals, so a table that stays the same must not
        let them vanish (a removed model's do, after `forget_model` zeroes them)."""
        for name, route in self._table.routes.items():
            phase = self._rollouts[name].phase if name in self._rollouts else "idle"
            self._metrics.export_route(name, route, phase)
            self._export_quality(name)
            self._export_drift(name)
        self._export_pins()
        self._metrics.models_routed.set(len(self._table.routes))
