"""The router's fast lane with real onnxruntime sessions and a stand-in for the control
actor: an LRU of models, each opened once however many requests ask at the same time,
new versions opened before a table switch and unrouted ones closed after it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serve_app.core.routing import ModelRoute
from serve_app.metrics import ScoringMetrics
from serve_app.registry.seed import FEATURES, synthetic_transactions, train_booster
from serve_app.runtime.convert import convert_checked
from serve_app.runtime.onnx import ModelArtifact
from serve_app.serving.fastlane import FastLane


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    frame, labels = synthetic_transactions("fraud-lane-eu", 1_500, "lane")
    return convert_checked(train_booster(frame, labels, rounds=10), frame.to_numpy()[:64])


class Registry:
    """Hands out artifacts like the control actor, counting and pacing the fetches."""

    def __init__(self, onnx_bytes: bytes) -> None:
        self.onnx_bytes = onnx_bytes
        self.fetched: list[tuple[str, int]] = []

    async def fetch(self, name: str, version: int) -> ModelArtifact:
        self.fetched.append((name, version))
        await asyncio.sleep(0.01)  # concurrent first requests overlap here
        return ModelArtifact(name, version, self.onnx_bytes, FEATURES)


def route(name: str, champion: int = 1, **fields) -> ModelRoute:
    return ModelRoute(name, champion, FEATURES, **fields)


def test_concurrent_first_requests_open_a_model_once_and_the_lru_evicts_the_oldest(onnx_bytes):
    registry = Registry(onnx_bytes)
    lane = FastLane(registry.fetch, capacity=2, metrics=ScoringMetrics())

    async def scenario() -> None:
        models = await asyncio.gather(*(lane.model(route("a"), 1, False) for _ in range(8)))
        assert len({id(m) for m in models}) == 1 and registry.fetched == [("a", 1)]
        await lane.model(route("b"), 1, False)
        await lane.model(route("a"), 1, False)  # a is now the most recent
        await lane.model(route("c"), 1, False)
        assert lane.loaded == ["a", "c"], "b was the least recently used"
        scores = await lane.predict(models[0], np.ones((3, len(FEATURES)), np.float32))
        assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))

    asyncio.run(scenario())


def test_new_versions_open_before_the_switch_and_unrouted_ones_close_after(onnx_bytes):
    registry = Registry(onnx_bytes)
    lane = FastLane(registry.fetch, capacity=4, metrics=ScoringMetrics())

    async def scenario() -> None:
        await lane.model(route("a"), 1, False)
        canary = route("a", challenger=2, challenger_weight=10.0)
        await lane.prepare(canary)
        assert ("a", 2) in registry.fetched, "the challenger opens before any request needs it"
        promoted = route("a", champion=2)
        lane.settle("a", promoted)
        fetched = len(registry.fetched)
        await lane.model(promoted, 2, False)
        assert len(registry.fetched) == fetched, "the routed version stayed open"
        await lane.model(promoted, 1, True)  # a pinned old version opens on demand
        assert registry.fetched[-1] == ("a", 1)
        lane.settle("a", route("a", pool="elsewhere"))
        assert lane.loaded == [], "a model moved to a pool leaves the fast lane"
        await lane.prepare(route("b", pool="elsewhere"))
        assert ("b", 1) not in registry.fetched, "pool models never open in the fast lane"

    asyncio.run(scenario())
