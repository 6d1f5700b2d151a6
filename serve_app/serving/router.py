"""The router: the autoscaling ingress deployment that owns the HTTP API.

Each replica holds the latest routing table (long-polled from the control actor),
chooses the version for every request, and scores fast-lane models in process or calls
the model's pool. It keeps no state that another replica needs, so it scales freely:
a new replica opens the busiest models before it takes traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.core.access import Access, Principal
from serve_app.core.autoscaling import BUSY, BusyClock
from serve_app.core.cache import PredictionCache
from serve_app.core.drift import ReferenceProfile
from serve_app.core.routing import RoutingTable
from serve_app.labels.store import LabelStore
from serve_app.metrics import ScoringMetrics
from serve_app.predictions.drift_sink import DriftCounter
from serve_app.predictions.writer import PredictionLog, open_prediction_log
from serve_app.protocol.errors import Conflict, NotFound, ServeAppError
from serve_app.runtime.onnx import ModelArtifact
from serve_app.serving import asgi, auth, expect_continue, http
from serve_app.serving.admin import AdminEndpoints
from serve_app.serving.asgi import HttpRequest, Reply
from serve_app.serving.dataplane import Dataplane, VersionInfo, error_body
from serve_app.serving.explaining import Explanations
from serve_app.serving.fastlane import FastLane
from serve_app.serving.label_api import LABEL_HANDLERS, LabelEndpoints
from serve_app.serving.observe import Observer
from serve_app.serving.pools import PoolLane
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

SYNC_WAIT_S = 2.0
METRICS_FLUSH_S = 1.0
WAITING_LOG_S = 30.0  # how often a replica without its first table says why it waits
FEATURES_CACHE = 64  # signatures of versions outside the table (pinned requests)
SCORING = {"v2_infer": "v2", "mlflow_invocations": "mlflow"}


# No access log: writing a line per request costs more than scoring the row; WARNING
# also spares building the access record that the filter would drop.
@serve.deployment(
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
    graceful_shutdown_wait_loop_s=0.5,  # checks for requests in flight when stopping
)
@serve.ingress()
class Router:
    def __init__(
        self, controller: DeploymentHandle, pools: dict[str, DeploymentHandle] | None = None
    ) -> None:
        expect_continue.install()  # a 413 before any `100 Continue` (see the module)
        self._controller = controller
        self.settings = AppSettings()
        self.access = Access()  # nobody, until reconfigure reads the principals
        self.table = RoutingTable()
        self.cache = PredictionCache()
        self.metrics = ScoringMetrics()
        self._observer = Observer(self.metrics)
        self._pools = PoolLane(pools or {})
        self._versions: OrderedDict[tuple[str, int], VersionInfo] = OrderedDict()
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        self._node_id = ray.get_runtime_context().get_node_id()
        self._first_table = asyncio.Event()
        self._busy = BusyClock(time.monotonic(), time.process_time())
        self._fast: FastLane | None = None
        self._store: LabelStore | None = None
        self._log: PredictionLog | None = None
        self._labels: LabelEndpoints | None = None
        self._background: list[asyncio.Task] = []
        self._dataplane: Dataplane | None = None
        self._explanations: Explanations | None = None
        self._admin = AdminEndpoints(self, controller)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        previous, self.settings = self.settings, AppSettings.model_validate(config)
        self.access = await asyncio.to_thread(auth.load_access, self.settings.admin)
        if (cache := self.settings.cache) != previous.cache:
            self.cache = PredictionCache(cache.models, cache.ttl_s, cache.max_entries)
        if self._fast is not None:  # the fast lane's size is fixed for a replica's life
            return
        Path(self.settings.home).mkdir(parents=True, exist_ok=True)  # its label store is there
        capacity = self.settings.router.max_models_per_replica
        self._fast = FastLane(self._fetch, capacity, self.metrics)
        labels = self.settings.labels
        self._store = await asyncio.to_thread(
            LabelStore, labels.database_uri or "", labels.retention_days
        )
        self._log = await asyncio.to_thread(
            open_prediction_log, self.settings, self._replica_id, self._store
        )
        self._labels = LabelEndpoints(self, self._store)
        self._dataplane = Dataplane(self, self._fast, self._pools, self._observer, self._log)
        self._explanations = Explanations(self, self._dataplane, self._booster_text)
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._sync_forever()),
            loop.create_task(self._flush_metrics_forever()),
        ]
        # Serve routes traffic to a replica once reconfigure returns, and counts the app
        # RUNNING once every replica has: hold it back until it has a routing table and its
        # hot models are open, however long the registry is away. Otherwise a cluster that
        # cannot read MLflow would look healthy and answer 503 to everything (and KubeRay's
        # upgrade would switch traffic to it).
        started = time.monotonic()
        while not self._first_table.is_set():
            try:
                await asyncio.wait_for(self._first_table.wait(), WAITING_LOG_S)
            except TimeoutError:
                logger.warning(
                    "no routing table after %.0f s: the control actor cannot read the "
                    "registry yet (is MLflow reachable?); this replica takes no traffic "
                    "until it has one",
                    time.monotonic() - started,
                )

    def __serve_build_asgi_app__(self) -> asgi.App:
        """Serve calls this once the replica is built: the router answers HTTP itself."""
        return asgi.App(self._answer)

    async def _answer(self, request: HttpRequest) -> Reply:
        try:
            found = http.match(request.method, request.path)
            if found.handler == "mlflow_root_invocations":
                found = http.Match("mlflow_invocations", self._default_model())
            protocol = SCORING.get(found.handler)
            if protocol is not None:
                return await self._dataplane.score(request, found, protocol)  # authorizes
            if found.handler == "v2_explain":
                return await self._explanations.explain(request, found)  # authorizes
            principal = self.authorize(request, found)
            endpoints = self._labels if found.handler in LABEL_HANDLERS else self._admin
            return await getattr(endpoints, found.handler)(request, found, principal)
        except ServeAppError as error:
            return Reply(error_body(error.message), error.status, error.headers() or None)
        except Exception:
            logger.exception("unexpected error on %s %s", request.method, request.path)
            return Reply(error_body("internal error"), 500)

    def authorize(self, request: HttpRequest, found: http.Match) -> Principal | None:
        """The one access check: the verb the handler needs, on the model in its path."""
        verb = auth.HANDLER_VERBS.get(found.handler)
        if verb is None:
            return None
        reads_closed = self.settings.admin.reads_need_token
        authorization = request.headers.get("authorization")
        return auth.authorize(self.access, verb, found.name, authorization, reads_closed)

    def _default_model(self) -> str:
        name = self.settings.routing.default_model
        if name is None:
            raise NotFound(
                "no model is served at /invocations (set routing.default_model); "
                "score a model at /models/{name}/invocations"
            )
        return name

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls this for the router's autoscaling policy (core/autoscaling.py)."""
        return {BUSY: self._busy.share(time.monotonic(), time.process_time())}

    async def version_info(self, name: str, version: int) -> VersionInfo:
        """Signature and threshold of a version outside the table, for a request pinning it."""
        key = (name, version)
        if key not in self._versions:
            artifact = await self._fetch(name, version)
            self._versions[key] = VersionInfo(artifact.features, artifact.threshold)
            while len(self._versions) > FEATURES_CACHE:
                self._versions.popitem(last=False)
        return self._versions[key]

    async def _fetch(self, name: str, version: int) -> ModelArtifact:
        found = await self._controller.artifact.remote(name, version)
        if found is None:
            raise NotFound(f"model '{name}' has no version {version}")
        if isinstance(found, str):
            raise Conflict(f"version {version} of model '{name}' failed its load check")
        return found

    async def _booster_text(self, name: str, version: int) -> str | None:
        """A version's LightGBM text model, for its explainer (None: registered without)."""
        return await self._controller.booster_text.remote(name, version)

    async def _flush_metrics_forever(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.metrics.flush()
            if self._log is not None:
                written, dropped = self._log.tally.take()
                for (model, sink), rows in written.items():
                    self.metrics.prediction_log_rows.inc(rows, {"model": model, "sink": sink})
                for (model, reason), rows in dropped.items():
                    tags = {"model": model, "reason": reason}
                    self.metrics.prediction_log_dropped.inc(rows, tags)

    def __del__(self) -> None:
        """Serve's graceful shutdown: write what the prediction log still holds."""
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()

    async def _sync_forever(self) -> None:
        while True:
            try:
                traffic, windows, recent = self._observer.drain()
                drift = self._log.drift if self._log is not None else None
                table = await self._controller.sync.remote(
                    self._replica_id,
                    self._node_id,
                    self._fast.loaded,
                    self._fast.opens,
                    traffic,
                    windows,
                    drift.take() if drift is not None else {},
                    self.table.stamp,
                    SYNC_WAIT_S,
                    recent,
                )
                if table is not None:
                    await self._adopt(table)
                if drift is not None:
                    await self._fetch_profiles(drift)
            except Exception as error:  # the controller is restarting: keep the old table
                logger.warning("routing table sync failed: %s", error)
                await asyncio.sleep(1.0)

    async def _fetch_profiles(self, drift: DriftCounter) -> None:
        """The reference profiles the drift counter asked for (once per version)."""
        for name, version in drift.wanted():
            try:
                found = await self._controller.drift_profile.remote(name, version)
            except Exception as error:  # the registry is away: asked again next sync
                logger.warning("drift profile of %s v%s not fetched: %s", name, version, error)
                continue
            profile = None if found is None else ReferenceProfile.from_json(found)
            drift.install((name, version), profile)

    async def _adopt(self, table: RoutingTable) -> None:
        """Open the new versions of open models first, then switch tables at once."""
        changed = self.table.changed_models(table)
        for name in changed:
            try:
                await self._fast.prepare(table.get(name))
            except Exception as error:
                logger.warning("opening new versions of %s failed: %s", name, error)
        self.table = table
        for name in changed:
            route = table.get(name)
            self.cache.retain(name, route.versions if route else ())
            self._fast.settle(name, route)
        for name in table.hot:
            route = table.get(name)
            if route is not None and route.pool is None and not self._fast.is_open(name):
                try:
                    await self._fast.versions(route)
                except Exception as error:
                    logger.warning("opening hot model %s failed: %s", name, error)
        self._first_table.set()
