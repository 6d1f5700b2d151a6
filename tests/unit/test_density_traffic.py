"""The density benchmark's names and request mix (no Ray, no registry)."""

from __future__ import annotations

from collections import Counter

from benchmarks.density import hot_set, traffic
from serve_app.registry.seed import DEMO_MODELS, demo_names


def test_demo_names_extend_the_demo_models_without_repeats():
    names = demo_names(500)
    assert names[: len(DEMO_MODELS)] == list(DEMO_MODELS)
    assert len(set(names)) == 500
    assert names[len(DEMO_MODELS)] == "fraud-card-eu-01"


def test_traffic_asks_every_model_and_the_hot_set_most():
    names = demo_names(500)
    counts = Counter(traffic(names, 3_000))
    assert set(counts) == set(names)
    hot = sum(counts[name] for name in hot_set(names, 10))
    assert hot / counts.total() > 0.5
    assert traffic(names, 3_000) == traffic(names, 3_000)
