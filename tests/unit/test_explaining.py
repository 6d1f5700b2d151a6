"""The explain path with the router's real parts (dataplane, fast lane, onnxruntime,
LightGBM) and a stand-in for the control actor: the version that explains is the one that
scores, the explainer opens once on the first explanation, and bad input, a version
without a text model and a spent budget get their 4xx."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from serve_app.core.access import SCORE
from serve_app.core.cache import PredictionCache
from serve_app.core.explain import sigmoid
from serve_app.core.routing import ModelRoute, RoutingTable
from serve_app.metrics import ScoringMetrics
from serve_app.protocol.errors import NotFound
from serve_app.registry.seed import FEATURES, synthetic_transactions, train_booster
from serve_app.runtime.convert import convert_checked
from serve_app.runtime.onnx import ModelArtifact
from serve_app.serving import auth, http
from serve_app.serving.asgi import HttpRequest
from serve_app.serving.dataplane import Dataplane
from serve_app.serving.explaining import Explanations
from serve_app.serving.fastlane import FastLane
from serve_app.serving.observe import Observer
from serve_app.serving.pools import PoolLane
from serve_app.settings import AppSettings

NAME = "fraud-why-eu"
SECRET = 4242.4242  # a feature value that must never reach an answer
ROUTE = ModelRoute(NAME, 1, FEATURES, challenger=2, challenger_weight=50.0)


@pytest.fixture(scope="module")
def boosters():
    """Versions 1-3 with a text model each (v3 outside the table), v4 registered without."""
    found = {}
    for version in (1, 2, 3, 4):
        frame, labels = synthetic_transactions(NAME, 1_500, f"v{version}")
        booster = train_booster(frame, labels, rounds=15)
        found[version] = (booster, convert_checked(booster, frame.to_numpy()[:64]))
    return found


class ControlActor:
    """Hands out artifacts and text models like the control actor, counting the texts."""

    def __init__(self, boosters) -> None:
        self.boosters = boosters
        self.texts: list[int] = []
        self.away = False  # the registry cannot be read

    async def artifact(self, name: str, version: int) -> ModelArtifact:
        if version not in self.boosters:  # as the router's fetch answers
            raise NotFound(f"model '{name}' has no version {version}")
        return ModelArtifact(name, version, self.boosters[version][1], FEATURES)

    async def booster_text(self, name: str, version: int) -> str | None:
        self.texts.append(version)
        await asyncio.sleep(0.01)  # concurrent first explanations overlap here
        if self.away:
            raise ConnectionError("the registry does not answer")
        return None if version == 4 else self.boosters[version][0].model_to_string()


class State:
    def __init__(self, settings: AppSettings) -> None:
        self.table = RoutingTable(revision=1, routes={NAME: ROUTE})
        self.settings = settings
        self.cache = PredictionCache()
        self.metrics = ScoringMetrics()

    async def version_info(self, name, version):  # pool models only
        raise AssertionError("no pool in this test")

    def authorize(self, request, found):  # the router's check, on the environment's tokens
        access, authorization = auth.load_access(self.settings.admin), request.headers.get(
            "authorization"
        )
        return auth.authorize(access, SCORE, found.name, authorization, False)


def explanations(boosters, **explain) -> tuple[Explanations, ControlActor]:
    actor = ControlActor(boosters)
    state = State(AppSettings(explain=explain))
    fast = FastLane(actor.artifact, 8, state.metrics)
    dataplane = Dataplane(state, fast, PoolLane({}), Observer(state.metrics), None)
    return Explanations(state, dataplane, actor.booster_text), actor


def post(path: str, payload, headers: dict[str, str] | None = None) -> HttpRequest:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    scope = {
        "method": "POST",
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return HttpRequest(scope, receive)


def v2(rows: np.ndarray, **parameters) -> dict:
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": rows.ravel().tolist()}], "parameters": parameters}


def explain(service: Explanations, payload, path=f"/v2/models/{NAME}/explain", **headers):
    request = post(path, payload, headers)
    reply = asyncio.run(service.explain(request, http.match("POST", path)))
    return reply.status, orjson.loads(reply.body), reply.headers or {}


def rows(count: int) -> np.ndarray:
    frame, _ = synthetic_transactions(NAME, count, "requests")
    return frame.to_numpy().astype(np.float64)


def test_the_split_version_explains_and_its_contributions_add_up_to_its_score(boosters):
    service, _ = explanations(boosters)
    batch = rows(3)
    keys = [f"acct-{n}" for n in range(8)]
    assert {ROUTE.choose(k) for k in keys} == {1, 2}, "the keys reach both versions"
    for key in keys:
        status, body, headers = explain(service, v2(batch, top_k=4), **{"x-routing-key": key})
        assert status == 200, body
        version = ROUTE.choose(key)
        assert body["model_version"] == headers["x-model-version"] == str(version)
        booster = boosters[version][0]
        raw = [row["raw_score"] for row in body["rows"]]
        np.testing.assert_allclose(raw, booster.predict(batch, raw_score=True), atol=1e-9)
        scores = [row["score"] for row in body["rows"]]
        np.testing.assert_allclose(scores, sigmoid(np.array(raw)), atol=1e-4)
        magnitudes = [abs(c["value_contribution"]) for c in body["rows"][0]["contributions"]]
        assert len(magnitudes) == 4 and magnitudes == sorted(magnitudes, reverse=True)


def test_a_pinned_version_explains_and_its_explainer_opens_once(boosters):
    service, actor = explanations(boosters)
    path = f"/v2/models/{NAME}/versions/3/explain"

    async def together():
        calls = [
            service.explain(post(path, v2(rows(1))), http.match("POST", path)) for _ in range(4)
        ]
        return await asyncio.gather(*calls)

    replies = asyncio.run(together())
    assert [r.status for r in replies] == [200] * 4
    assert {orjson.loads(r.body)["model_version"] for r in replies} == {"3"}
    assert actor.texts == [3], "the text model is fetched once, on the first explanation"
    status, body, _ = explain(service, v2(rows(1)), path=f"/v2/models/{NAME}/versions/99/explain")
    assert status == 404 and "no version 99" in body["error"]


def test_a_version_without_a_text_model_answers_409_and_is_not_asked_again(boosters):
    service, actor = explanations(boosters)
    path = f"/v2/models/{NAME}/versions/4/explain"
    for _ in range(2):
        status, body, _ = explain(service, v2(rows(1)), path=path)
        assert status == 409 and "no explainer for version 4" in body["error"], body
    assert actor.texts == [4]


def test_the_lru_keeps_its_bound(boosters):
    service, actor = explanations(boosters, max_explainers_per_replica=1)
    for version in (1, 2, 1):
        path = f"/v2/models/{NAME}/versions/{version}/explain"
        assert explain(service, v2(rows(1)), path=path)[0] == 200
    assert actor.texts == [1, 2, 1]


def test_over_its_budget_an_explanation_is_a_429_with_retry_after(boosters):
    service, _ = explanations(boosters, rows_per_s=0.5, burst_rows=4)
    assert explain(service, v2(rows(4)))[0] == 200
    status, body, headers = explain(service, v2(rows(1)))
    assert status == 429 and "rate limit" in body["error"]
    assert headers["retry-after"] == "2"  # one row at 0.5 rows/s
    status, body, _ = explain(service, v2(rows(5)))
    assert status == 422 and "limit of 4" in body["error"]


def test_bad_input_gets_a_4xx_that_never_echoes_a_feature_value(boosters, monkeypatch):
    service, _ = explanations(boosters)
    batch = rows(1)
    batch[0, 0] = SECRET
    for payload, status in (
        (b"{not json", 400),
        (v2(batch, top_k=0), 422),
        (v2(batch[:, :5]), 422),
        ({"inputs": []}, 400),
    ):
        answer = explain(service, payload)
        assert answer[0] == status, answer
        assert str(SECRET) not in orjson.dumps(answer[1]).decode()
    status, body, _ = explain(service, v2(batch), path="/v2/models/nope/explain")
    assert status == 404 and "not served" in body["error"]
    assert str(SECRET) not in orjson.dumps(explain(service, v2(batch))[1]).decode()
    monkeypatch.setenv(auth.SCORING_TOKEN_ENV, "s3cret")
    guarded, _ = explanations(boosters)
    assert explain(guarded, v2(batch))[0] == 401
    assert explain(guarded, v2(batch), authorization="Bearer s3cret")[0] == 200


def test_a_registry_that_is_away_is_a_503_and_the_next_explanation_asks_again(boosters):
    service, actor = explanations(boosters)
    actor.away = True
    status, body, _ = explain(service, v2(rows(1)))
    assert status == 503 and "cannot be fetched now" in body["error"], body
    actor.away = False
    assert explain(service, v2(rows(1)))[0] == 200
    assert len(actor.texts) == 2, "a failed fetch is not kept"
