"""The scoring path, as a straight line: body → decode → choose version → score → encode.

Scoring happens in the router's process for fast-lane models and on a pool for the
others; everything around it (the split, pinning, the prediction cache, rollout
windows, shadow copies, the answer's headers) is the same for both lanes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import orjson

from serve_app.core import deadlines
from serve_app.core.access import Principal
from serve_app.core.cache import PredictionCache, feature_digest
from serve_app.core.deadlines import NO_DEADLINE, Deadline, DeadlineExceeded
from serve_app.core.routing import ModelRoute, RoutingTable
from serve_app.labels.feedback import valid_request_id
from serve_app.metrics import ScoringMetrics
from serve_app.predictions.records import LoggedBatch, decisions
from serve_app.predictions.writer import PredictionLog
from serve_app.protocol import mlflow_scoring, v2
from serve_app.protocol.batch import Decoded
from serve_app.protocol.errors import (
    BadRequest,
    NotFound,
    NotReady,
    ServeAppError,
)
from serve_app.runtime.onnx import RUNTIME
from serve_app.serving import http
from serve_app.serving.asgi import HttpRequest, Reply
from serve_app.serving.fastlane import FastLane
from serve_app.serving.observe import Observer
from serve_app.serving.pools import PoolLane
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

FAST_LANE = "fast"


class RouterState(Protocol):
    """What the scoring path reads from the router: replaced whole, never edited."""

    table: RoutingTable
    settings: AppSettings
    cache: PredictionCache
    metrics: ScoringMetrics

    async def version_info(self, name: str, version: int) -> VersionInfo: ...

    def authorize(self, request: HttpRequest, found: http.Match) -> Principal | None: ...


@dataclass(frozen=True)
class VersionInfo:
    """What the router needs of a version outside the table (a pinned request)."""

    features: tuple[str, ...]
    threshold: float


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray
    threshold: float  # the scoring version's alert threshold
    lane: str  # "fast" or the pool's name
    runtime: str  # the library and version that scored, e.g. "onnxruntime 1.32.0"
    cached: str | None = None  # "hit" | "miss" for models with a prediction cache


class Dataplane:
    def __init__(
        self,
        state: RouterState,
        fast: FastLane,
        pools: PoolLane,
        observer: Observer,
        log: PredictionLog | None,
    ) -> None:
        self._state = state
        self._fast = fast
        self._pools = pools
        self._observe = observer
        self._log = log
        self._shadow_tasks: set[asyncio.Task] = set()
        self._pool_runtimes: dict[str, str] = {}  # what each pool last said it runs

    async def score(self, request: HttpRequest, found: http.Match, protocol: str) -> Reply:
        started = time.perf_counter()
        name = found.name or ""
        route = self._state.table.get(name)
        version: int | None = None
        scored: Scored | None = None
        decoded: Decoded | None = None
        request_id: str | None = None
        key: str | None = None
        error_headers: dict[str, str] = {}
        loaded_here = False  # this request had to open the model first
        try:
            request_id = header_request_id(request)
            self._state.authorize(request, found)  # here, so that refusals are counted
            route = self.require_route(name)
            body = await request.body(self._state.settings.limits.max_body_bytes)
            pinned = http.parse_version(found.version)
            loaded_here = route.pool is None and not self._fast.is_open(name)
            features = await self.features_of(route, pinned)
            decoded = self._decode(protocol, body, request, features)
            deadline = self._deadline(name, request, decoded, started)
            deadline.check(time.perf_counter())
            request_id = body_request_id(decoded) or request_id or new_request_id()
            key = self.routing_key(request, decoded)
            version = pinned if pinned is not None else route.choose(key)
            self._observe.metrics.model_cache.inc(
                tags={"model": name, "result": "miss" if loaded_here else "hit"}
            )
            scored = await self._cached(route, version, decoded.batch, pinned is not None, deadline)
            flagged = decisions(scored.scores, scored.threshold)
            if protocol == "v2":
                payload = v2.encode_response(name, version, scored.scores, flagged, request_id)
            else:
                payload = mlflow_scoring.encode_response(scored.scores, flagged)
            status = 200
        except ServeAppError as error:
            status, payload = error.status, error_body(error.message)
            error_headers = error.headers()  # Retry-After of a shed request
            if isinstance(error, DeadlineExceeded):
                self._observe.metrics.deadline_exceeded.inc(tags={"model": name})
        except Exception:
            logger.exception("scoring %s v%s failed", name, version)
            status, payload = 500, error_body("internal error while scoring")
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        scores = scored.scores if scored else None
        self._observe.request(route, version, status, elapsed_ms, scores, loaded_here)
        headers = ({"x-request-id": request_id} if request_id else {}) | error_headers
        if scored is not None:
            self._logged(route, version, request_id, key, features, decoded, scored, elapsed_ms)
            if route.shadow and found.version is None:
                self._shadow_copy(route, decoded, scored.scores, request_id, key)
            headers.update(
                {
                    "x-model-name": name,
                    "x-model-version": str(version),
                    "x-serve-app-lane": scored.lane,
                    "x-model-runtime": scored.runtime,
                }
            )
            if scored.cached is not None:
                headers["x-prediction-cache"] = scored.cached
        return Reply(payload, status, headers or None)

    def _logged(
        self, route, version, request_id, key, features, decoded, scored, elapsed_ms
    ) -> None:
        """Hand the scored request to the prediction log (sampled; never blocks); `features`
        name the columns the batch was decoded into."""
        if self._log is None or not self._log.sampled(route.name):
            return
        if version == route.champion:
            role = "champion"
        elif version == route.challenger and not route.shadow:
            role = "challenger"
        else:
            role = "pinned"
        self._log.offer(
            LoggedBatch(
                request_id,
                time.time(),
                route.name,
                version,
                role,
                scored.lane,
                key,
                features,
                decoded.batch,
                scored.scores,
                scored.threshold,
                elapsed_ms,
                scored.cached,
            )
        )

    def require_route(self, name: str) -> ModelRoute:
        table = self._state.table
        route = table.get(name)
        if route is None:
            if not table.revision:
                raise NotReady("the routing table is not loaded yet")
            raise NotFound(f"model '{name}' is not served")
        return route

    async def features_of(self, route: ModelRoute, pinned: int | None) -> tuple[str, ...]:
        """The feature names a request's batch is decoded into: the pinned version's."""
        if pinned is None or pinned in route.versions:
            return route.features
        return (await self.pinned_info(route, pinned)).features

    async def pinned_info(self, route: ModelRoute, version: int) -> VersionInfo:
        """Signature and threshold of a version outside the table. A fast-lane model opens
        the version here (scoring then finds it open); a pool model asks the router's cache."""
        if route.pool is None:
            model = await self._fast.model(route, version, pinned=True)
            return VersionInfo(model.features, model.threshold)
        return await self._state.version_info(route.name, version)

    async def _threshold(self, route: ModelRoute, version: int) -> float:
        if version in route.versions:
            return route.threshold(version)
        return (await self.pinned_info(route, version)).threshold

    async def _cached(
        self, route: ModelRoute, version: int, batch: np.ndarray, pinned: bool, deadline: Deadline
    ) -> Scored:
        """Scores, through the prediction cache when the model has one (then hit or miss)."""
        cache = self._state.cache
        if not cache.enabled_for(route.name):
            return await self.scored(route, version, batch, pinned, deadline)
        digest = feature_digest(batch)
        scores = cache.get(route.name, version, digest)
        result = "miss" if scores is None else "hit"
        self._observe.metrics.prediction_cache.inc(tags={"model": route.name, "result": result})
        if scores is not None:
            lane = route.pool or FAST_LANE
            runtime = self._pool_runtimes.get(lane, RUNTIME)
            return Scored(scores, await self._threshold(route, version), lane, runtime, "hit")
        scored = await self.scored(route, version, batch, pinned, deadline)
        cache.put(route.name, version, digest, scored.scores)
        return replace(scored, cached="miss")

    async def scored(
        self,
        route: ModelRoute,
        version: int,
        batch: np.ndarray,
        pinned: bool,
        deadline: Deadline = NO_DEADLINE,
    ) -> Scored:
        """Scores from the model's lane; a request whose deadline passes while it waits (for
        a model to open, for a pool replica) is dropped unscored."""
        if route.pool is not None:
            pool_call = self._pools.score(route.pool, route.name, version, batch)
            try:
                answer = await asyncio.wait_for(
                    pool_call, deadline.remaining_s(time.perf_counter())
                )
            except TimeoutError:  # the pool's queue held it too long: cancelled there
                raise DeadlineExceeded(deadline.message(time.perf_counter())) from None
            self._pool_runtimes[route.pool] = answer.runtime
            return Scored(answer.scores, answer.threshold, route.pool, answer.runtime)
        model = await self._fast.model(route, version, pinned)
        deadline.check(time.perf_counter())
        scores = await self._fast.predict(model, batch)
        return Scored(scores, model.threshold, FAST_LANE, RUNTIME)

    def _decode(self, protocol: str, body: bytes, request: HttpRequest, features) -> Decoded:
        limit = self._state.settings.limits.max_rows
        if protocol == "v2":
            return v2.decode_request(body, request.headers.get(v2.HEADER_LENGTH), features, limit)
        content_type = request.headers.get("content-type")
        return mlflow_scoring.decode_request(body, features, limit, content_type)

    def _deadline(
        self, name: str, request: HttpRequest, decoded: Decoded, started: float
    ) -> Deadline:
        settings = self._state.settings.deadlines
        default = deadlines.model_default(name, settings.models, settings.default_ms)
        header = request.headers.get(settings.header)
        parameter = decoded.parameters.get(deadlines.PARAMETER)
        return Deadline(started, deadlines.budget_ms(settings.header, header, parameter, default))

    def routing_key(self, request: HttpRequest, decoded: Decoded) -> str | None:
        routing = self._state.settings.routing
        key = request.headers.get(routing.key_header)
        if key is None and routing.key_field is not None:
            value = decoded.parameters.get(routing.key_field)
            key = None if value is None else str(value)
        return key

    def _shadow_copy(
        self, route: ModelRoute, decoded: Decoded, champion: np.ndarray, request_id: str, key
    ) -> None:
        """Score a sampled copy on the challenger after the answer is on its way."""
        if random.random() * 100.0 >= route.challenger_weight:
            return
        shadow = self._shadow(route, decoded.batch, champion, request_id, key)
        task = asyncio.get_running_loop().create_task(shadow)
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self, route: ModelRoute, batch: np.ndarray, champion: np.ndarray, request_id: str, key
    ) -> None:
        started = time.perf_counter()
        window = self._observe.window(route.name, route.challenger)
        try:
            scored = await self.scored(route, route.challenger, batch, False)
        except Exception as error:  # a failing shadow never touches the answer
            logger.warning("shadow scoring %s v%s failed: %s", route.name, route.challenger, error)
            window.record((time.perf_counter() - started) * 1000.0, error=True)
            return
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        window.record(elapsed_ms, scored.scores)
        window.compare(
            decisions(champion, route.threshold(route.champion)),
            decisions(scored.scores, scored.threshold),
        )
        if self._log is not None and self._log.sampled(route.name):
            self._log.offer(
                LoggedBatch(
                    request_id,
                    time.time(),
                    route.name,
                    route.challenger,
                    "shadow",
                    scored.lane,
                    key,
                    route.features,
                    batch,
                    scored.scores,
                    scored.threshold,
                    elapsed_ms,
                )
            )


def header_request_id(request: HttpRequest) -> str | None:
    value = request.headers.get("x-request-id")
    if value is not None and not valid_request_id(value):
        raise BadRequest("X-Request-Id must be 1-128 visible ASCII characters")
    return value


def body_request_id(decoded: Decoded) -> str | None:
    """The V2 `id` (it wins over the header: it is what the client's answer echoes)."""
    if decoded.request_id is not None and not valid_request_id(decoded.request_id):
        raise BadRequest("the request 'id' must be 1-128 visible ASCII characters")
    return decoded.request_id


def new_request_id() -> str:
    return os.urandom(16).hex()


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
