"""The scoring pool: an autoscaling Serve deployment that is also the HTTP ingress.

Each replica answers HTTP itself, chooses the version from its copy of the routing
table and scores in process, so a request costs one hop (proxy → replica). Models
are multiplexed by name with Serve's `@serve.multiplexed` (LRU per replica); the unit
loaded is a model's routed versions together, which keeps the proxy's affinity header
(`serve_multiplexed_model_id: <model name>`) meaningful while canaries run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from serve_app import __version__
from serve_app.core.cache import PredictionCache, feature_digest
from serve_app.core.routing import ModelRoute, RoutingTable
from serve_app.core.stats import VersionWindow
from serve_app.metrics import UNKNOWN_MODEL, PoolMetrics, outcome
from serve_app.protocol import mlflow_scoring, v2
from serve_app.protocol.batch import Decoded
from serve_app.protocol.errors import (
    BadRequest,
    Conflict,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ServeAppError,
)
from serve_app.runtime.onnx import ModelArtifact, OnnxModel
from serve_app.serving import auth, http
from serve_app.settings import APP_NAME, AppSettings

logger = logging.getLogger("ray.serve")

SYNC_WAIT_S = 2.0
METRICS_FLUSH_S = 1.0
LRU_TOUCH_S = 1.0  # how often a busy model's place in Serve's LRU is refreshed
STARTUP_WAIT_S = 60.0  # a new replica waits this long for its first table before serving
JSON = "application/json"
THREAD_ROWS = 2_048  # larger batches score off the event loop
PINNED_VERSIONS = 2

Fetch = Callable[[str, int], Awaitable[ModelArtifact]]


class ModelVersions:
    """The versions of one model open in this replica: the multiplexed unit."""

    def __init__(self, name: str, fetch: Fetch, on_evict: Callable[[ModelVersions], None]) -> None:
        self.name = name
        self._fetch = fetch
        self._on_evict = on_evict
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

    def __del__(self) -> None:  # Serve's multiplexing LRU calls this on eviction
        if self._open:
            self._open = {}
            self._on_evict(self)


# No access log: writing a line per request costs more than scoring the row.
@serve.deployment(logging_config={"enable_access_log": False})
class ScoringPool:
    def __init__(self, controller: DeploymentHandle) -> None:
        self._controller = controller
        self._settings = AppSettings()
        self._table = RoutingTable()
        self._cache = PredictionCache()
        self._loaded: dict[str, ModelVersions] = {}
        self._touched: dict[str, float] = {}  # model → when Serve's LRU last saw it
        self._traffic: Counter[str] = Counter()
        self._metrics = PoolMetrics()
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        self._node_id = ray.get_runtime_context().get_node_id()
        self._load_model: Callable[[str], Awaitable[ModelVersions]] | None = None
        self._background: list[asyncio.Task] = []
        self._first_table = asyncio.Event()
        self._windows: dict[str, dict[int, VersionWindow]] = {}
        self._shadow_tasks: set[asyncio.Task] = set()
        self._admin_token = auth.load_token(auth.ADMIN_TOKEN_ENV)
        self._scoring_token = auth.load_token(auth.SCORING_TOKEN_ENV)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        previous, self._settings = self._settings, AppSettings.model_validate(config)
        if (cache := self._settings.cache) != previous.cache:
            self._cache = PredictionCache(cache.models, cache.ttl_s, cache.max_entries)
        if self._load_model is None:  # the LRU bound is fixed for a replica's life

            async def open_model(name: str) -> ModelVersions:  # Serve caches its LRU on it
                return await self._open_model(name)

            self._load_model = serve.multiplexed(
                max_num_models_per_replica=self._settings.pool.max_models_per_replica
            )(open_model)
            loop = asyncio.get_running_loop()
            self._background = [
                loop.create_task(self._sync_forever()),
                loop.create_task(self._flush_metrics_forever()),
            ]
            # Serve routes traffic to a replica once reconfigure returns: hold it back
            # until the replica has a routing table and its hot models are open.
            try:
                await asyncio.wait_for(self._first_table.wait(), STARTUP_WAIT_S)
            except TimeoutError:
                logger.warning("no routing table after %.0f s; starting unready", STARTUP_WAIT_S)

    # -- models -------------------------------------------------------------------
    async def _open_model(self, name: str) -> ModelVersions:
        started = time.perf_counter()
        bundle = ModelVersions(name, self._fetch, self._evicted)
        route = self._table.get(name)
        for version in route.answering if route else ():  # a standby opens on rollback
            await bundle.get(version)
        self._loaded[name] = bundle
        self._report_loaded()
        self._metrics.model_loads.inc(tags={"model": name})
        self._metrics.model_load_seconds.observe(
            time.perf_counter() - started, tags={"model": name}
        )
        return bundle

    async def _bundle(self, name: str) -> ModelVersions:
        """The model's open versions.

        Serve's multiplexed loader records a Ray metric on every call (4% of a replica's
        CPU under load, benchmarks/results/profile.md), so an open model asks it only
        once per LRU_TOUCH_S: enough to keep its place in the LRU.
        """
        bundle = self._loaded.get(name)
        now = time.monotonic()
        if bundle is None or now - self._touched.get(name, 0.0) > LRU_TOUCH_S:
            bundle = await self._load_model(name)
            self._touched[name] = now
        return bundle

    def _evicted(self, bundle: ModelVersions) -> None:
        """Runs in an executor thread; the next load reports the new set to the controller."""
        if self._loaded.get(bundle.name) is bundle:  # not a newer bundle of the same model
            self._loaded.pop(bundle.name, None)
        self._metrics.model_evictions.inc(tags={"model": bundle.name})

    def _report_loaded(self) -> None:
        """Tell the controller at once (fire and forget), so placement in status is fresh."""
        self._controller.report_loaded.remote(self._replica_id, self._node_id, list(self._loaded))

    async def _fetch(self, name: str, version: int) -> ModelArtifact:
        found = await self._controller.artifact.remote(name, version)
        if found is None:
            raise NotFound(f"model '{name}' has no version {version}")
        if isinstance(found, str):
            raise Conflict(f"version {version} of model '{name}' failed its load check")
        return found

    async def _flush_metrics_forever(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self._metrics.flush()

    # -- routing table --------------------------------------------------------------
    async def _sync_forever(self) -> None:
        while True:
            try:
                traffic, self._traffic = dict(self._traffic), Counter()
                windows, self._windows = self._windows, {}
                table = await self._controller.sync.remote(
                    self._replica_id,
                    self._node_id,
                    list(self._loaded),
                    traffic,
                    windows,
                    self._table.stamp,
                    SYNC_WAIT_S,
                )
                if table is not None:
                    await self._adopt(table)
            except Exception as error:  # the controller is restarting: keep the old table
                logger.warning("routing table sync failed: %s", error)
                await asyncio.sleep(1.0)

    async def _adopt(self, table: RoutingTable) -> None:
        """Open the new versions of loaded models first, then switch tables at once."""
        changed = self._table.changed_models(table)
        for name in changed & self._loaded.keys():
            route = table.get(name)
            for version in route.versions if route else ():
                try:
                    await self._loaded[name].get(version)
                except Exception as error:
                    logger.warning("pre-loading %s v%s failed: %s", name, version, error)
        self._table = table
        for name in changed:
            route = table.get(name)
            self._cache.retain(name, route.versions if route else ())
            if route is not None and name in self._loaded:
                self._loaded[name].retain(route.versions)
        for name in table.hot:
            if name not in self._loaded:
                try:
                    await self._load_model(name)
                except Exception as error:
                    logger.warning("pre-loading hot model %s failed: %s", name, error)
        self._first_table.set()

    # -- HTTP -------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        try:
            found = http.match(request.method, request.url.path)
            handler = getattr(self, "_" + found.handler)
            return await handler(request, found)
        except ServeAppError as error:
            return _error(error.status, error.message)
        except Exception:
            logger.exception("unexpected error on %s %s", request.method, request.url.path)
            return _error(500, "internal error")

    async def _score(self, request: Request, found: http.Match, protocol: str) -> Response:
        started = time.perf_counter()
        name = found.name or ""
        route = self._table.get(name)
        version: int | None = None
        scores: np.ndarray | None = None
        cached: str | None = None
        loaded_here = False  # this request had to load the model first
        try:
            auth.require_scoring(request.headers.get("authorization"), self._scoring_token)
            route = self._require_route(name)
            body = await self._read_body(request)
            pinned = http.parse_version(found.version)
            loaded_here = name not in self._loaded
            self._metrics.model_cache.inc(tags={"model": name, "result": _hit(not loaded_here)})
            bundle = await self._bundle(name)
            model = None if pinned is None else await bundle.get_pinned(pinned, route.versions)
            decoded = self._decode(
                protocol, body, request, model.features if model else route.features
            )
            if model is None:
                version = route.choose(self._routing_key(request, decoded))
                model = await bundle.get(version)
            version = model.version
            scores, cached = await self._scores(name, model, decoded.batch)
            if protocol == "v2":
                payload = v2.encode_response(name, version, scores, decoded.request_id)
            else:
                payload = mlflow_scoring.encode_response(scores)
            status = 200
        except ServeAppError as error:
            status, payload = error.status, _error_body(error.message)
        except Exception:
            logger.exception("scoring %s v%s failed", name, version)
            status, payload = 500, _error_body("internal error while scoring")
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._observe(route, version, status, elapsed_ms, scores, loaded_here=loaded_here)
        if scores is not None and route.shadow and found.version is None:
            self._shadow_copy(route, decoded.batch, scores)
        headers = None
        if status == 200:
            headers = {"x-model-name": name, "x-model-version": str(version)}
            if cached is not None:
                headers["x-prediction-cache"] = cached
        return Response(payload, status_code=status, media_type=JSON, headers=headers)

    def _require_route(self, name: str) -> ModelRoute:
        route = self._table.get(name)
        if route is None:
            if not self._table.revision:
                raise NotReady("the routing table is not loaded yet")
            raise NotFound(f"model '{name}' is not served")
        return route

    def _decode(self, protocol: str, body: bytes, request: Request, features) -> Decoded:
        limit = self._settings.limits.max_rows
        if protocol == "v2":
            return v2.decode_request(body, request.headers.get(v2.HEADER_LENGTH), features, limit)
        return mlflow_scoring.decode_request(body, features, limit)

    def _routing_key(self, request: Request, decoded: Decoded) -> str | None:
        routing = self._settings.routing
        key = request.headers.get(routing.key_header)
        if key is None and routing.key_field is not None:
            value = decoded.parameters.get(routing.key_field)
            key = None if value is None else str(value)
        return key

    def _observe(
        self,
        route: ModelRoute | None,
        version: int | None,
        status: int,
        elapsed_ms: float,
        scores: np.ndarray | None,
        loaded_here: bool,
    ) -> None:
        """Metrics for every request; a rollout window too while the model has a challenger.

        A request that had to load the model first is left out of the window: its time is
        the load's, whichever version then answered it.
        """
        model = route.name if route else UNKNOWN_MODEL
        tags = {"model": model, "version": str(version or "")}
        self._metrics.requests.inc(tags={**tags, "outcome": outcome(status)})
        self._metrics.latency.observe(elapsed_ms, tags=tags)
        if scores is not None:
            self._metrics.rows.inc(len(scores), tags=tags)
        if route is None:
            return
        self._traffic[route.name] += 1
        if loaded_here or route.challenger is None or version not in route.versions:
            return
        if not 400 <= status < 500:
            self._window(route.name, version).record(elapsed_ms, scores, error=status >= 500)

    def _window(self, name: str, version: int) -> VersionWindow:
        return self._windows.setdefault(name, {}).setdefault(version, VersionWindow())

    def _shadow_copy(self, route: ModelRoute, batch: np.ndarray, champion: np.ndarray) -> None:
        """Score a sampled copy on the challenger after the answer is on its way."""
        if random.random() * 100.0 >= route.challenger_weight:
            return
        task = asyncio.get_running_loop().create_task(self._shadow(route, batch, champion))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, route: ModelRoute, batch: np.ndarray, champion: np.ndarray) -> None:
        started = time.perf_counter()
        window = self._window(route.name, route.challenger)
        try:
            bundle = await self._bundle(route.name)
            scores = (await bundle.get(route.challenger)).predict(batch)
        except Exception as error:  # a failing shadow never touches the answer
            logger.warning("shadow scoring %s v%s failed: %s", route.name, route.challenger, error)
            window.record((time.perf_counter() - started) * 1000.0, error=True)
            return
        window.record((time.perf_counter() - started) * 1000.0, scores)
        window.compare(champion, scores)

    async def _scores(
        self, name: str, model: OnnxModel, batch: np.ndarray
    ) -> tuple[np.ndarray, str | None]:
        """Scores, through the prediction cache when the model has one (then hit or miss)."""
        if not self._cache.enabled_for(name):
            return await self._predict(model, batch), None
        digest = feature_digest(batch)
        scores = self._cache.get(name, model.version, digest)
        result = _hit(scores is not None)
        self._metrics.prediction_cache.inc(tags={"model": name, "result": result})
        if scores is None:
            scores = await self._predict(model, batch)
            self._cache.put(name, model.version, digest, scores)
        return scores, result

    async def _predict(self, model: OnnxModel, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] > THREAD_ROWS:
            return await asyncio.to_thread(model.predict, batch)
        return model.predict(batch)

    async def _read_body(self, request: Request) -> bytes:
        limit = self._settings.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        body = await request.body()
        if len(body) > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        return body

    async def _v2_infer(self, request: Request, found: http.Match) -> Response:
        return await self._score(request, found, "v2")

    async def _mlflow_invocations(self, request: Request, found: http.Match) -> Response:
        return await self._score(request, found, "mlflow")

    async def _live(self, request: Request, found: http.Match) -> Response:
        return _json({"live": True})

    async def _ready(self, request: Request, found: http.Match) -> Response:
        if not self._table.revision:
            raise NotReady("the routing table is not loaded yet")
        return _json({"ready": True, "models": len(self._table.routes)})

    async def _v2_server_metadata(self, request: Request, found: http.Match) -> Response:
        return _json(
            {"name": APP_NAME, "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def _v2_model_metadata(self, request: Request, found: http.Match) -> Response:
        route, version = self._route_and_version(found)
        features = route.features
        if version not in route.versions:
            features = (await self._fetch(route.name, version)).features
        return _json(v2.model_metadata(route.name, [version], features))

    async def _v2_model_ready(self, request: Request, found: http.Match) -> Response:
        route, version = self._route_and_version(found)
        if version not in route.versions:
            await self._fetch(route.name, version)
        return _json({"name": route.name, "version": str(version), "ready": True})

    def _route_and_version(self, found: http.Match) -> tuple[ModelRoute, int]:
        route = self._table.get(found.name or "")
        if route is None:
            raise NotFound(f"model '{found.name}' is not served")
        version = http.parse_version(found.version)
        return route, route.champion if version is None else version

    async def _admin_models(self, request: Request, found: http.Match) -> Response:
        return _json(await self._controller.status.remote())

    async def _admin_canary(self, request: Request, found: http.Match) -> Response:
        auth.require_admin(request.headers.get("authorization"), self._admin_token)
        payload = v2.parse_json(await self._read_body(request))
        weight = payload.get("weight") if isinstance(payload, dict) else None
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not 0 <= weight <= 100
        ):
            raise BadRequest("the body needs a 'weight' between 0 and 100 (percent)")
        return _admin_answer(await self._controller.set_weight.remote(found.name, float(weight)))

    async def _admin_promote(self, request: Request, found: http.Match) -> Response:
        auth.require_admin(request.headers.get("authorization"), self._admin_token)
        return _admin_answer(await self._controller.promote.remote(found.name))

    async def _admin_rollback(self, request: Request, found: http.Match) -> Response:
        auth.require_admin(request.headers.get("authorization"), self._admin_token)
        return _admin_answer(await self._controller.rollback.remote(found.name))

    async def _admin_history(self, request: Request, found: http.Match) -> Response:
        since = http.parse_since(request.query_params.get("since"), time.time())
        events = await self._controller.history.remote(found.name, since)
        return _json({"model": found.name, "since": since, "events": events})


def _json(content: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS), status_code=status, media_type=JSON
    )


def _admin_answer(outcome: tuple[int, str]) -> Response:
    status, message = outcome
    return _json({"message": message} if status < 400 else {"error": message}, status)


def _hit(found: bool) -> str:
    return "hit" if found else "miss"


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _error(status: int, message: str) -> Response:
    return Response(_error_body(message), status_code=status, media_type=JSON)
