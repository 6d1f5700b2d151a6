"""The fast lane: models of the router's own environment, scored in the router's process.

Most models need nothing but onnxruntime, so most requests should cost no hop between
processes. Each router replica keeps its own LRU of open models (not Serve's
multiplexing, which Ray does not support on an ingress deployment); a model is opened
with all its routed versions together, so a canary never waits for a load.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import numpy as np

from serve_app.core.routing import ModelRoute
from serve_app.metrics import ScoringMetrics
from serve_app.runtime.onnx import ModelArtifact, OnnxModel

PINNED_VERSIONS = 2  # versions outside the table a model keeps open for pinned requests
THREAD_ROWS = 2_048  # larger batches score off the event loop

Fetch = Callable[[str, int], Awaitable[ModelArtifact]]


class ModelVersions:
    """The versions of one model open in this replica: the unit the LRU holds."""

    def __init__(self, name: str, fetch: Fetch) -> None:
        self.name = name
        self._fetch = fetch
        self._open: dict[int, OnnxModel] = {}
        self._pinned: list[int] = []

    async def get(self, version: int) -> OnnxModel:
        model = self._open.get(version)
        if model is None:
            artifact = await self._fetch(self.name, version)
            model = self._open.setdefault(version, await asyncio.to_thread(OnnxModel, artifact))
        return model

    async def get_pinned(self, version: int, routed: tuple[int, ...]) -> OnnxModel:
        if version not in routed and version not in self._pinned:
            self._pinned = [*self._pinned, version][-PINNED_VERSIONS:]
            self.retain(routed)
        return await self.get(version)

    def retain(self, routed: tuple[int, ...]) -> None:
        keep = set(routed) | set(self._pinned)
        self._open = {v: m for v, m in self._open.items() if v in keep}


class FastLane:
    def __init__(self, fetch: Fetch, capacity: int, metrics: ScoringMetrics) -> None:
        self._fetch = fetch
        self.capacity = capacity
        self._metrics = metrics
        self._open: OrderedDict[str, ModelVersions] = OrderedDict()
        self._opening: dict[str, asyncio.Future[ModelVersions]] = {}
        self.opens = 0  # models opened over the replica's life: cold loads, shown in status

    @property
    def loaded(self) -> list[str]:
        return list(self._open)

    def is_open(self, name: str) -> bool:
        return name in self._open

    async def versions(self, route: ModelRoute) -> ModelVersions:
        """The model's open versions, opening it (once, however many ask) when it is not."""
        bundle = self._open.get(route.name)
        if bundle is not None:
            self._open.move_to_end(route.name)
            return bundle
        pending = self._opening.get(route.name)
        if pending is None:
            pending = asyncio.get_running_loop().create_task(self._open_model(route))
            self._opening[route.name] = pending
            pending.add_done_callback(lambda _: self._opening.pop(route.name, None))
        return await asyncio.shield(pending)

    async def model(self, route: ModelRoute, version: int, pinned: bool) -> OnnxModel:
        bundle = await self.versions(route)
        return await (bundle.get_pinned(version, route.versions) if pinned else bundle.get(version))

    async def predict(self, model: OnnxModel, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] > THREAD_ROWS:
            return await asyncio.to_thread(model.predict, batch)
        return model.predict(batch)

    async def prepare(self, route: ModelRoute | None) -> None:
        """Before a new table takes over: open the new versions of an open model."""
        bundle = self._open.get(route.name) if route and route.pool is None else None
        for version in route.versions if bundle else ():
            await bundle.get(version)

    def settle(self, name: str, route: ModelRoute | None) -> None:
        """After: close what the new table no longer routes here."""
        bundle = self._open.get(name)
        if bundle is None:
            return
        if route is None or route.pool is not None:  # gone, or moved to a pool
            del self._open[name]
        else:
            bundle.retain(route.versions)

    async def _open_model(self, route: ModelRoute) -> ModelVersions:
        started = time.perf_counter()
        bundle = ModelVersions(route.name, self._fetch)
        for version in route.answering:  # a standby opens only on rollback
            await bundle.get(version)
        self._open[route.name] = bundle
        while len(self._open) > self.capacity:
            evicted, _ = self._open.popitem(last=False)
            self._metrics.model_evictions.inc(tags={"model": evicted})
        self.opens += 1
        self._metrics.model_loads.inc(tags={"model": route.name})
        elapsed = time.perf_counter() - started
        self._metrics.model_load_seconds.observe(elapsed, tags={"model": route.name})
        return bundle
