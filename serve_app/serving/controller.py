"""The control actor: polls the registry and publishes routing tables to the replicas.

A single-replica Serve deployment (a named, detached Ray actor that Serve restarts,
reconfigures and deletes with the application). A new `champion` version is
downloaded, opened in onnxruntime and checked against its logged input example
before it enters a table; a version that fails stays out, with its reason recorded,
and the previous version keeps serving. Replicas long-poll `sync` for new tables and
fetch model bytes from `artifact`, so only this actor talks to MLflow.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, replace
from typing import Any

from ray import serve

from serve_app.core.reconcile import plan
from serve_app.core.routing import ModelRoute, RoutingTable
from serve_app.metrics import ControllerMetrics
from serve_app.registry.mlflow_registry import CHAMPION, FetchedVersion, Registry, RegistryError
from serve_app.runtime.onnx import ModelArtifact, ModelLoadError, load_checked
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

MAX_EVENTS = 2_000
PINNED_CACHE = 64


@dataclass(frozen=True)
class Event:
    at: float
    model: str
    kind: str
    detail: str
    version: int | None = None


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=1_000,
    ray_actor_options={"num_cpus": 0},
    health_check_period_s=5,
    logging_config={"enable_access_log": False},  # replicas long-poll it all the time
)
class Controller:
    def __init__(self) -> None:
        self._settings: AppSettings | None = None
        self._registry: Registry | None = None
        self._table = RoutingTable(epoch=uuid.uuid4().hex)
        self._table_changed = asyncio.Event()
        self._artifacts: dict[tuple[str, int], ModelArtifact] = {}
        self._broken: dict[tuple[str, int], str] = {}
        self._fetch_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self._replicas: dict[str, dict[str, Any]] = {}
        self._traffic: Counter[str] = Counter()
        self._registry_aliases: dict[str, dict[str, int]] = {}
        self._last_poll: dict[str, Any] = {"ok": None, "at": None, "error": None}
        self._metrics = ControllerMetrics()
        self._poller: asyncio.Task | None = None

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self._settings = AppSettings.model_validate(config)
        if self._registry is None:
            self._registry = Registry(self._settings.registry.tracking_uri or "")
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    # -- the control loop --------------------------------------------------------
    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception as error:  # the registry may be down: keep serving
                self._metrics.registry_polls.inc(tags={"result": "error"})
                self._last_poll.update(ok=False, error=f"{type(error).__name__}: {error}")
                logger.warning("registry poll failed: %s", error)
            await asyncio.sleep(self._settings.registry.poll_interval_s)

    async def reconcile(self) -> None:
        settings = self._settings
        models = await asyncio.to_thread(self._registry.sweep, settings.registry.model_filter)
        self._registry_aliases = {name: info.aliases for name, info in models.items()}
        champions = {
            n: info.aliases[CHAMPION] for n, info in models.items() if CHAMPION in info.aliases
        }
        todo = plan(self._table, champions, set(models), set(self._broken))
        table = self._table.without(todo.to_drop)
        for name in todo.to_drop:
            self._record(name, "removed", "no longer in the registry")
        limit = asyncio.Semaphore(settings.registry.download_workers)

        async def load(name: str, version: int) -> ModelArtifact | None:
            async with limit:
                return await self._load_checked(name, version)

        loaded = await asyncio.gather(*(load(n, v) for n, v in todo.to_load.items()))
        for artifact in filter(None, loaded):
            previous = table.get(artifact.name)
            table = table.with_route(ModelRoute(artifact.name, artifact.version, artifact.features))
            detail = f"serving v{artifact.version}" + (
                f" (was v{previous.champion})" if previous else ""
            )
            self._record(artifact.name, "champion_serving", detail, artifact.version)
        if table.revision == 0:  # the first sweep makes the service ready, even when empty
            table = replace(table, revision=1)
        table = table.with_hot(self._hot_models(table))
        self._publish(table)
        self._metrics.registry_polls.inc(tags={"result": "ok"})
        self._metrics.last_successful_poll.set(time.time())
        self._last_poll.update(ok=True, at=time.time(), error=None)

    async def _load_checked(self, name: str, version: int) -> ModelArtifact | None:
        """Download and check one version; record and return None when it is unusable."""
        try:
            fetched: FetchedVersion = await asyncio.to_thread(self._registry.fetch, name, version)
            await asyncio.to_thread(load_checked, fetched.artifact, fetched.input_example)
        except (ModelLoadError, RegistryError, KeyError) as error:
            reason = f"{type(error).__name__}: {error}"
            self._broken[(name, version)] = reason
            self._metrics.load_failures.inc(tags={"model": name})
            self._record(name, "load_failed", reason, version)
            return None
        except Exception as error:  # the registry or its store is unreachable: retry later
            self._record(name, "load_retry", f"{type(error).__name__}: {error}", version)
            return None
        self._artifacts[(name, version)] = fetched.artifact
        return fetched.artifact

    def _publish(self, table: RoutingTable) -> None:
        if table == self._table:
            return
        self._table = table
        routed = {(r.name, v) for r in table.routes.values() for v in r.versions}
        for key in [k for k in self._artifacts if k not in routed]:
            if len(self._artifacts) <= len(routed) + PINNED_CACHE:
                break
            del self._artifacts[key]
        for route in table.routes.values():
            self._metrics.served_version.set(
                route.champion, tags={"model": route.name, "role": CHAMPION}
            )
            self._metrics.challenger_weight.set(route.challenger_weight, tags={"model": route.name})
        self._metrics.models_routed.set(len(table.routes))
        self._table_changed.set()
        self._table_changed = asyncio.Event()

    def _hot_models(self, table: RoutingTable) -> tuple[str, ...]:
        """The busiest models (by traffic the replicas reported), then by name."""
        k = self._settings.pool.preload_top_k
        ranked = sorted(table.routes, key=lambda name: (-self._traffic[name], name))
        return tuple(ranked[:k])

    def _record(self, model: str, kind: str, detail: str, version: int | None = None) -> None:
        self._events.append(Event(time.time(), model, kind, detail, version))
        log = logger.warning if kind.endswith("failed") else logger.info
        log("%s: %s %s", model, kind, detail)

    # -- called by scoring replicas ---------------------------------------------
    async def sync(
        self,
        replica: str,
        loaded: list[str],
        traffic: dict[str, int],
        stamp: tuple[str, int],
        wait_s: float,
    ) -> RoutingTable | None:
        """Long poll: the current table once it differs from the replica's `stamp`, else None.

        A table not yet filled from the registry is never handed out: a restarted
        controller must not empty the replicas' tables while it takes its first sweep.
        """
        self.report_loaded(replica, loaded)
        self._traffic.update(traffic)
        if self._table.revision == 0 or self._table.stamp == tuple(stamp):
            changed = self._table_changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=wait_s)
            except TimeoutError:
                return None
        return self._table

    def report_loaded(self, replica: str, loaded: list[str]) -> None:
        self._replicas[replica] = {"loaded": sorted(loaded), "seen": time.time()}

    async def artifact(self, name: str, version: int) -> ModelArtifact | str | None:
        """A checked version's bytes; None if it does not exist, a reason if it is unusable."""
        key = (name, version)
        async with self._fetch_locks.setdefault(key, asyncio.Lock()):
            if key not in self._artifacts and key not in self._broken:
                await self._load_checked(name, version)
        self._fetch_locks.pop(key, None)
        if key in self._artifacts:
            return self._artifacts[key]
        reason = self._broken.get(key)
        return None if reason is None or reason.startswith("KeyError") else reason

    # -- admin --------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        now = time.time()
        live = {r: info for r, info in self._replicas.items() if now - info["seen"] < 30}
        models = {}
        for name in sorted(set(self._table.routes) | set(self._registry_aliases)):
            route = self._table.get(name)
            models[name] = {
                "aliases": self._registry_aliases.get(name, {}),
                "serving": None
                if route is None
                else {
                    "champion": route.champion,
                    "challenger": route.challenger,
                    "challenger_weight": route.challenger_weight,
                    "shadow": route.shadow,
                },
                "loaded_on": sorted(r for r, info in live.items() if name in info["loaded"]),
                "failed_versions": {v: why for (n, v), why in self._broken.items() if n == name},
            }
        return {
            "registry_uri": self._settings.registry.tracking_uri if self._settings else None,
            "table_revision": self._table.revision,
            "last_poll": self._last_poll,
            "replicas": {r: {"loaded": len(info["loaded"])} for r, info in live.items()},
            "models": models,
        }

    async def history(self, name: str | None = None) -> list[dict[str, Any]]:
        return [asdict(e) for e in self._events if name is None or e.model == name]
