"""The prediction cache on the running service: opt-in per model, TTL, new versions miss."""

from __future__ import annotations

import time

from serve_app.registry.seed import seed_model
from tests.conftest import CACHE_TTL_S, CACHED_MODEL, wait_until
from tests.integration.helpers import ROW, call, exported, settled, v2_payload

CACHE_HEADER = "x-prediction-cache"


def score(url: str, model: str, row: list[float], version: int | None = None):
    path = f"/versions/{version}" if version else ""
    status, answer, headers = call(f"{url}/v2/models/{model}{path}/infer", v2_payload([row]))
    assert status == 200, answer
    return answer["outputs"][0]["data"], headers


def test_repeated_features_hit_until_the_ttl_and_other_models_never_cache(service):
    row = [*ROW[:-1], 7.25]
    first, headers = score(service.url, CACHED_MODEL, row)
    assert headers[CACHE_HEADER] == "miss"
    again, headers = score(service.url, CACHED_MODEL, row)
    assert headers[CACHE_HEADER] == "hit" and again == first
    _, headers = score(service.url, CACHED_MODEL, [*ROW[:-1], 7.5])
    assert headers[CACHE_HEADER] == "miss"
    time.sleep(CACHE_TTL_S + 0.5)
    expired, headers = score(service.url, CACHED_MODEL, row)
    assert headers[CACHE_HEADER] == "miss" and expired == first
    _, headers = score(service.url, "fraud-card-eu", row)
    assert CACHE_HEADER not in headers, "models not listed in cache.models are never cached"


def test_a_new_champion_never_answers_from_the_old_versions_entries(service):
    row = [*ROW[:-1], 9.75]
    old_scores, headers = score(service.url, CACHED_MODEL, row)
    old = int(headers["x-model-version"])
    assert score(service.url, CACHED_MODEL, row)[1][CACHE_HEADER] == "hit"
    new = seed_model(service.registry, CACHED_MODEL, alias=None, salt="cache-retrained")
    service.registry.set_alias(CACHED_MODEL, "champion", new)
    wait_until(
        lambda: score(service.url, CACHED_MODEL, ROW)[1]["x-model-version"] == str(new),
        timeout=20,
        what="the new champion to answer",
    )
    new_scores, headers = score(service.url, CACHED_MODEL, row)
    assert headers["x-model-version"] == str(new) and headers[CACHE_HEADER] == "miss"
    assert new_scores != old_scores
    pinned_old, headers = score(service.url, CACHED_MODEL, row, version=old)
    assert headers["x-model-version"] == str(old) and pinned_old == old_scores


def test_hit_rate_is_exported_per_model(service):
    """Counted from a baseline: the counter is cumulative, and earlier tests hit it too."""
    row = [*ROW[:-1], 11.5]
    labels = {"model": CACHED_MODEL}
    family = "ray_serve_app_prediction_cache_requests_total"
    before = {r: settled(family, **labels, result=r) for r in ("hit", "miss")}
    for _ in range(3):
        score(service.url, CACHED_MODEL, row)

    def counted() -> dict[str, float]:
        return {r: exported(family, **labels, result=r) - before[r] for r in ("hit", "miss")}

    # Ray's metrics agent exports every few seconds: wait for all three lookups to show.
    wait_until(lambda: sum(counted().values()) >= 3, timeout=30, interval=1.0, what="3 lookups")
    time.sleep(1.0)  # a miscount would show as more than three
    assert counted() == {"hit": 2, "miss": 1}
