"""The control actor: follows the registry, runs rollouts, publishes routing tables.

This module is its shell: state, the poll loop, champions and publishing. The rollout
steps (`rollout_steps.py`), the replicas' side (`replica_channel.py`), the operator's
actions and views (`operator.py`) and the pins file (`pinning.py`) are mixed in from rooms
of their own.

A single-replica Serve deployment (a named, detached Ray actor that Serve restarts,
reconfigures and deletes with the application), and the only MLflow client on the
serving side. Each poll it:
1. loads and checks every new `champion`, or pinned version (download, open, score the
   input example); a version that fails stays out with its reason recorded, the previous
   one serves, and it is checked again every `registry.broken_retry_s`;
2. gates every new `challenger` on the evaluation set, then walks it through the
   rollout policy's steps, rolling back on a guard breach or promoting at the end;
3. publishes the resulting table; replicas long-poll `sync` for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from ray import serve

from serve_app.core.fleet import RecentTraffic
from serve_app.core.placement import UnknownPool, assign_pool
from serve_app.core.quality import Quality
from serve_app.core.reconcile import plan
from serve_app.core.rollout import Rollout
from serve_app.core.routing import RoutingTable
from serve_app.core.stats import VersionWindow
from serve_app.history import Event, EventLog
from serve_app.labels.kafka_labels import LabelConsumer
from serve_app.labels.store import LabelStore
from serve_app.metrics import ControllerMetrics
from serve_app.registry.mlflow_registry import Registry, RegistryError, VersionNotFound
from serve_app.runtime.onnx import ModelArtifact, ModelLoadError, load_checked
from serve_app.serving.drift_watch import DriftWatch
from serve_app.serving.operator import OperatorActions
from serve_app.serving.pinning import PinWatch
from serve_app.serving.publishing import TablePublisher
from serve_app.serving.quality_watch import QualityWatch
from serve_app.serving.replica_channel import ReplicaChannel
from serve_app.serving.retrain_watch import RetrainWatch
from serve_app.serving.rollout_steps import POLICY_TAG as POLICY_TAG  # where tests find it
from serve_app.serving.rollout_steps import RolloutSteps
from serve_app.settings import AppSettings, RolloutPolicy

logger = logging.getLogger("ray.serve")


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=1_000,
    ray_actor_options={"num_cpus": 0},
    health_check_period_s=5,
    logging_config={"enable_access_log": False},  # replicas long-poll it all the time
    graceful_shutdown_wait_loop_s=0.5,  # Serve's 2 s steps made every stop seconds longer
)
class Controller(
    RolloutSteps,
    ReplicaChannel,
    OperatorActions,
    QualityWatch,
    DriftWatch,
    RetrainWatch,
    TablePublisher,
    PinWatch,
):
    def __init__(self) -> None:
        self._settings = AppSettings()
        self._registry: Registry | None = None
        self._table = RoutingTable(epoch=uuid.uuid4().hex)
        self._table_changed = asyncio.Event()
        self._champions: dict[str, ModelArtifact] = {}
        self._rollouts: dict[str, Rollout] = {}
        self._windows: dict[str, dict[int, VersionWindow]] = {}
        self._recent = RecentTraffic(time.time())  # every model's last minute (the console)
        self._standby: dict[str, tuple[int, float]] = {}  # model → (version, until)
        self._policies: dict[str, RolloutPolicy] = {}
        self._pools: dict[str, str | None] = {}  # model → pool (None: the fast lane)
        self._placement_errors: dict[str, str] = {}
        self._artifacts: dict[tuple[str, int], ModelArtifact] = {}
        self._broken: dict[tuple[str, int], str] = {}
        self._broken_at: dict[tuple[str, int], float] = {}  # when its check last failed
        self._rejected: dict[tuple[str, int], str] = {}
        self._fetch_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._history: EventLog | None = None
        self._last_event: dict[str, Event] = {}
        self._store: LabelStore | None = None
        self._label_consumer: LabelConsumer | None = None
        self._label_counts: Counter[tuple[str, str]] = Counter()  # from the consumer's thread
        self._label_counts_lock = threading.Lock()
        self._quality_due = self._prune_due = 0.0
        self._live_quality: dict[str, dict[str, Quality]] = {}  # model → role → figures
        self._rollout_quality: dict[tuple[str, int], tuple[Quality, Quality] | None] = {}
        self._eval_figures: dict[tuple[str, int], dict[str, float]] = {}
        self._control_errors: dict[str, str] = {}  # model → what stops its rollout work
        self._replicas: dict[str, dict[str, Any]] = {}
        self._traffic: Counter[str] = Counter()
        self._aliases: dict[str, dict[str, int]] = {}
        self._last_poll: dict[str, Any] = {"ok": None, "at": None, "error": None}
        self._metrics = ControllerMetrics()
        self._poller: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one reconcile or admin action at a time
        self._init_drift()
        self._init_retraining()
        self._init_pins()

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self._settings = AppSettings.model_validate(config)
        Path(self._settings.home).mkdir(
            parents=True, exist_ok=True
        )  # `serve deploy` on a new machine
        if self._registry is None:
            self._registry = Registry(self._settings.registry.tracking_uri or "")
        if self._history is None:
            history = self._settings.history
            self._history = EventLog(history.database_uri or "", history.retention_days)
            self._last_event = await self._io(self._history.latest)
        if self._store is None:
            labels = self._settings.labels
            self._store = await self._io(
                LabelStore, labels.database_uri or "", labels.retention_days
            )
        topic = self._settings.labels.kafka_topic
        if topic and self._label_consumer is None:
            self._label_consumer = LabelConsumer(
                self._settings.prediction_log.kafka,
                topic,
                self._settings.labels.kafka_group,
                self._store,
                self._count_labels,
            )
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def _io(self, function, *args):
        """Registry calls block: run them off the event loop."""
        return await asyncio.to_thread(function, *args)

    # -- the control loop --------------------------------------------------------------
    async def _poll_forever(self) -> None:
        while True:
            try:
                async with self._lock:
                    await self.reconcile()
            except Exception as error:  # the registry may be down: keep serving
                self._metrics.registry_polls.inc(tags={"result": "error"})
                self._last_poll.update(ok=False, error=f"{type(error).__name__}: {error}")
                logger.warning("registry poll failed: %s", error)
            await asyncio.sleep(self._settings.registry.poll_interval_s)

    async def reconcile(self) -> None:
        self._tend_retrains()  # first: a finished job's challenger is its own, not a stranger
        models = await self._io(self._registry.sweep, self._settings.registry.model_filter)
        self._aliases = {name: info.aliases for name, info in models.items()}
        self._policies = {name: self._policy(info.tags) for name, info in models.items()}
        self._pools = {name: self._pool_of(name, info.tags) for name, info in models.items()}
        champions = await self._pinned_champions(models)  # pins outrank `champion`
        todo = plan(self._table, champions, set(models), self._still_broken())
        for name in todo.to_drop:
            self._forget(name)
        await self._adopt_champions(todo.to_load)
        await self._settle_pins()
        for name, info in models.items():
            if name in self._retrain_jobs:
                continue  # its challenger is gated once the job that set it is collected
            challenger = self._challenger_of(name, info)  # none while pinned
            await self._isolated(name, self._follow_challenger(name, challenger, info.tags))
        for name in list(self._rollouts):
            await self._isolated(name, self._step(name))
        now = time.time()
        self._standby = {
            n: s for n, s in self._standby.items() if s[1] > now and n in self._champions
        }
        self._publish()
        await self._watch_quality()
        self._export_gauges()
        self._export_label_counts()
        self._metrics.registry_polls.inc(tags={"result": "ok"})
        self._metrics.last_successful_poll.set(now)
        self._last_poll.update(ok=True, at=now, error=None)

    async def _isolated(self, name: str, work) -> None:
        """Run one model's rollout work; a failure stops that model's rollout, no other's.

        The error is recorded once per distinct message (not on every poll) and shown in
        status until the model's work succeeds again.
        """
        try:
            await work
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            if self._control_errors.get(name) != message:
                self._control_errors[name] = message
                self._metrics.control_errors.inc(tags={"model": name})
                self._record(name, "control_error", message)
            logger.debug("rollout work for %s failed", name, exc_info=True)
        else:
            self._control_errors.pop(name, None)

    def _still_broken(self) -> set[tuple[str, int]]:
        """Versions that failed their check within `broken_retry_s`: the others are checked
        again (a store that was unreadable, an artifact restored in place)."""
        due = time.time() - self._settings.registry.broken_retry_s
        return {key for key, at in self._broken_at.items() if at > due}

    def _pool_of(self, name: str, tags: dict[str, str]) -> str | None:
        """The model's pool; a tag naming an undeclared pool leaves it in the fast lane."""
        try:
            pool = assign_pool(name, tags, self._settings.pools)
            self._placement_errors.pop(name, None)
            return pool
        except UnknownPool as error:
            if self._placement_errors.get(name) != str(error):
                self._placement_errors[name] = str(error)
                self._record(name, "control_error", f"{error}; serving it in the fast lane")
            return None

    async def _adopt_champions(self, to_load: dict[str, int]) -> None:
        limit = asyncio.Semaphore(self._settings.registry.download_workers)

        async def load(name: str, version: int) -> ModelArtifact | None:
            async with limit:
                return await self._load_checked(name, version)

        loaded = await asyncio.gather(*(load(n, v) for n, v in to_load.items()))
        for artifact in filter(None, loaded):
            self._set_champion(artifact)

    def _set_champion(self, artifact: ModelArtifact) -> None:
        name, previous = artifact.name, self._champions.get(artifact.name)
        self._champions[name] = artifact
        detail = f"serving v{artifact.version}"
        if previous is not None:
            self._restart_drift(name)
            grace = self._policies.get(name, self._settings.rollout).promotion_grace_s
            self._standby[name] = (previous.version, time.time() + grace)
            detail += f" (was v{previous.version}, kept open {grace:g} s for rollback)"
        self._record(name, "champion_serving", detail, artifact.version)
        rollout = self._rollouts.get(name)
        if rollout is not None and rollout.candidate != artifact.version:
            self._end_rollout(name, "rollout_cancelled", "the champion changed under it")
        elif rollout is not None:
            self._end_rollout(name, "promoted", f"v{artifact.version} is champion")

    def _forget(self, name: str) -> None:
        for state in (
            self._champions,
            self._rollouts,
            self._windows,
            self._standby,
            self._live_quality,
        ):
            state.pop(name, None)
        self._control_errors.pop(name, None)
        self._recent.forget(name)
        self._forget_drift(name)
        self._metrics.forget_model(name)
        self._record(name, "removed", "no longer in the registry")

    async def _load_checked(self, name: str, version: int) -> ModelArtifact | None:
        """Download and check one version; record and return None when it is unusable."""
        key = (name, version)
        if key in self._artifacts:
            return self._artifacts[key]
        try:
            fetched = await self._io(self._registry.fetch, name, version)
            await self._io(load_checked, fetched.artifact, fetched.input_example)
        except VersionNotFound:  # a client asked for a version that does not exist
            return None
        except (ModelLoadError, RegistryError) as error:
            reason = f"{type(error).__name__}: {error}"
            again = self._broken.get(key) == reason  # a retry that failed the same way
            self._broken[key], self._broken_at[key] = reason, time.time()
            self._metrics.load_failures.inc(tags={"model": name})
            if not again:
                self._record(name, "load_failed", reason, version)
            return None
        except Exception as error:  # the registry or its store is unreachable: retry later
            self._record(name, "load_retry", f"{type(error).__name__}: {error}", version)
            return None
        self._artifacts[key] = fetched.artifact
        self._eval_figures[key] = fetched.eval_figures
        self._broken.pop(key, None)
        self._broken_at.pop(key, None)
        return fetched.artifact

    def _record(
        self,
        model: str,
        kind: str,
        detail: str,
        version: int | None = None,
        principal: str | None = None,
    ) -> None:
        event = Event(time.time(), model, kind, detail, version, principal)
        self._last_event[model] = event
        try:
            self._history.append(event)
        except Exception as error:  # the history database is down: never stop control
            logger.warning("could not record %s %s in the history: %s", model, kind, error)
        log = (
            logger.warning
            if kind in ("load_failed", "gate_rejected", "rolled_back", "control_error")
            else logger.info
        )
        log("%s: %s %s%s", model, kind, detail, f" (by {principal})" if principal else "")
