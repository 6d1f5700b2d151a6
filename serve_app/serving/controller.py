"""The control actor: follows the registry, runs rollouts, publishes routing tables.

A single-replica Serve deployment (a named, detached Ray actor that Serve restarts,
reconfigures and deletes with the application), and the only MLflow client on the
serving side. Each poll it:
1. loads and checks every new `champion` (download, open, score the input example);
   a version that fails stays out with its reason recorded, the previous one serves;
2. gates every new `challenger` on the evaluation set, then walks it through the
   rollout policy's steps, rolling back on a guard breach or promoting at the end;
3. publishes the resulting table; replicas long-poll `sync` for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict
from typing import Any

from ray import serve

from serve_app.core import rollout as machine
from serve_app.core.placement import UnknownPool, assign_pool
from serve_app.core.reconcile import plan
from serve_app.core.rollout import Rollout
from serve_app.core.routing import ModelRoute, RoutingTable
from serve_app.core.stats import VersionWindow, psi
from serve_app.history import Event, EventLog
from serve_app.metrics import ControllerMetrics
from serve_app.registry.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    Registry,
    RegistryError,
    VersionNotFound,
)
from serve_app.runtime.evaluation import alert_rate, evaluate_on_set
from serve_app.runtime.onnx import ModelArtifact, ModelLoadError, OnnxModel, load_checked
from serve_app.settings import AppSettings, RolloutPolicy

logger = logging.getLogger("ray.serve")

PINNED_CACHE = 64
ROLLOUT_TAG = "serve_app.rollout"
POLICY_TAG = "serve_app.rollout_policy"
REPLICA_STALE_S = 10.0  # replicas report every SYNC_WAIT_S (2 s) at most


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=1_000,
    ray_actor_options={"num_cpus": 0},
    health_check_period_s=5,
    logging_config={"enable_access_log": False},  # replicas long-poll it all the time
)
class Controller:
    def __init__(self) -> None:
        self._settings = AppSettings()
        self._registry: Registry | None = None
        self._table = RoutingTable(epoch=uuid.uuid4().hex)
        self._table_changed = asyncio.Event()
        self._champions: dict[str, ModelArtifact] = {}
        self._rollouts: dict[str, Rollout] = {}
        self._windows: dict[str, dict[int, VersionWindow]] = {}
        self._standby: dict[str, tuple[int, float]] = {}  # model → (version, until)
        self._policies: dict[str, RolloutPolicy] = {}
        self._pools: dict[str, str | None] = {}  # model → pool (None: the fast lane)
        self._placement_errors: dict[str, str] = {}
        self._artifacts: dict[tuple[str, int], ModelArtifact] = {}
        self._broken: dict[tuple[str, int], str] = {}
        self._rejected: dict[tuple[str, int], str] = {}
        self._fetch_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._history: EventLog | None = None
        self._control_errors: dict[str, str] = {}  # model → what stops its rollout work
        self._replicas: dict[str, dict[str, Any]] = {}
        self._traffic: Counter[str] = Counter()
        self._aliases: dict[str, dict[str, int]] = {}
        self._last_poll: dict[str, Any] = {"ok": None, "at": None, "error": None}
        self._metrics = ControllerMetrics()
        self._poller: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one reconcile or admin action at a time

    async def reconfigure(self, config: dict[str, Any]) -> None:
        self._settings = AppSettings.model_validate(config)
        if self._registry is None:
            self._registry = Registry(self._settings.registry.tracking_uri or "")
        if self._history is None:
            history = self._settings.history
            self._history = EventLog(history.database_uri or "", history.retention_days)
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
        models = await self._io(self._registry.sweep, self._settings.registry.model_filter)
        self._aliases = {name: info.aliases for name, info in models.items()}
        self._policies = {name: self._policy(info.tags) for name, info in models.items()}
        self._pools = {name: self._pool_of(name, info.tags) for name, info in models.items()}
        champions = {n: a[CHAMPION] for n, a in self._aliases.items() if CHAMPION in a}
        todo = plan(self._table, champions, set(models), set(self._broken))
        for name in todo.to_drop:
            self._forget(name)
        await self._adopt_champions(todo.to_load)
        for name, info in models.items():
            challenger = info.aliases.get(CHALLENGER)
            await self._isolated(name, self._follow_challenger(name, challenger, info.tags))
        for name in list(self._rollouts):
            await self._isolated(name, self._step(name))
        now = time.time()
        self._standby = {
            n: s for n, s in self._standby.items() if s[1] > now and n in self._champions
        }
        self._publish()
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

    def _policy(self, tags: dict[str, str]) -> RolloutPolicy:
        override = tags.get(POLICY_TAG)
        if not override:
            return self._settings.rollout
        try:
            merged = {**self._settings.rollout.model_dump(), **_json_object(override)}
            return RolloutPolicy.model_validate(merged)
        except ValueError as error:
            logger.warning("ignoring invalid %s tag: %s", POLICY_TAG, error)
            return self._settings.rollout

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
        for state in (self._champions, self._rollouts, self._windows, self._standby):
            state.pop(name, None)
        self._control_errors.pop(name, None)
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
            self._broken[key] = reason
            self._metrics.load_failures.inc(tags={"model": name})
            self._record(name, "load_failed", reason, version)
            return None
        except Exception as error:  # the registry or its store is unreachable: retry later
            self._record(name, "load_retry", f"{type(error).__name__}: {error}", version)
            return None
        self._artifacts[key] = fetched.artifact
        return fetched.artifact

    # -- rollouts --------------------------------------------------------------------------
    async def _follow_challenger(
        self, name: str, candidate: int | None, tags: dict[str, str]
    ) -> None:
        rollout = self._rollouts.get(name)
        if rollout is not None and rollout.candidate != candidate:
            self._end_rollout(
                name, "rollout_cancelled", "the challenger alias moved or was removed"
            )
            rollout = None
        champion = self._champions.get(name)
        if candidate is None or champion is None or rollout is not None:
            return
        key = (name, candidate)
        if candidate == champion.version or key in self._rejected or key in self._broken:
            return
        persisted = _rollout_from_tag(tags.get(ROLLOUT_TAG))
        resumable = persisted and (persisted.candidate, persisted.champion) == (
            candidate,
            champion.version,
        )
        if resumable and await self._load_checked(name, candidate) is not None:
            self._rollouts[name] = persisted
            self._windows[name] = {}
            self._record(name, "rollout_resumed", f"at {persisted.weight:g}%", candidate)
            return
        reason = await self._gate(name, champion, candidate)
        if reason is not None:
            await self._reject(name, candidate, reason)
            return
        policy = self._policies.get(name, self._settings.rollout)
        started = Rollout.start(name, candidate, champion.version, policy, time.time())
        await self._save_rollout(started)
        self._record(
            name, "gate_passed", f"{started.phase} starts at {started.weight:g}%", candidate
        )

    async def _gate(self, name: str, champion: ModelArtifact, candidate: int) -> str | None:
        artifact = await self._load_checked(name, candidate)
        if artifact is None:
            return self._broken.get((name, candidate), "the registry is unreachable")
        if artifact.features != champion.features:
            return "its signature differs from the champion's (feature names or order)"
        try:
            evaluation = await self._io(self._registry.eval_set, name)
        except RegistryError as error:
            return f"the registered evaluation set is unusable: {error}"
        if evaluation is None:
            return "the model has no registered evaluation set to compare on"
        rows, labels, features = evaluation
        if features != champion.features:
            return "the evaluation set's features differ from the signature"
        policy = self._policies.get(name, self._settings.rollout)

        def compare() -> str | None:
            current, new = OnnxModel(champion), OnnxModel(artifact)
            rate = alert_rate(current, rows)
            return machine.gate(
                policy,
                evaluate_on_set(current, rows, labels, rate),
                evaluate_on_set(new, rows, labels, rate),
            )

        return await self._io(compare)

    async def _reject(self, name: str, candidate: int, reason: str) -> None:
        self._rejected[(name, candidate)] = reason
        self._record(name, "gate_rejected", reason, candidate)
        await self._io(self._registry.tag_version, name, candidate, "serve_app.gate", "rejected")
        await self._io(self._registry.tag_version, name, candidate, "serve_app.gate_reason", reason)
        await self._io(self._registry.delete_alias, name, CHALLENGER)

    async def _step(self, name: str) -> None:
        rollout = self._rollouts[name]
        policy = self._policies.get(name, self._settings.rollout)
        windows = self._windows.get(name, {})
        champion = windows.get(rollout.champion, VersionWindow())
        challenger = windows.get(rollout.candidate, VersionWindow())
        decision = machine.evaluate(rollout, policy, time.time(), champion, challenger)
        if isinstance(decision, machine.Advance):
            advanced = rollout.at_step(decision.step, policy, time.time())
            await self._save_rollout(advanced)
            detail = f"step {decision.step + 1}/{len(policy.steps)}: {advanced.weight:g}%"
            self._record(name, "step_reached", detail, rollout.candidate)
        elif isinstance(decision, machine.Promote):
            await self._promote(name)
        elif isinstance(decision, machine.RollBack):
            await self._roll_back(name, decision.reason, decision.kind)

    async def _save_rollout(self, rollout: Rollout) -> None:
        self._rollouts[rollout.model] = rollout
        self._windows[rollout.model] = {}
        await self._io(self._registry.set_model_tag, rollout.model, ROLLOUT_TAG, rollout.to_json())

    async def _promote(self, name: str) -> None:
        rollout = self._rollouts[name]
        artifact = await self._load_checked(name, rollout.candidate)
        if artifact is None:
            await self._roll_back(name, "the candidate can no longer be loaded", "load_failed")
            return
        await self._io(self._registry.set_alias, name, CHAMPION, rollout.candidate)
        await self._io(self._registry.delete_alias, name, CHALLENGER)
        self._aliases[name] = {CHAMPION: rollout.candidate}
        self._set_champion(artifact)

    async def _roll_back(self, name: str, reason: str, kind: str) -> None:
        rollout = self._rollouts[name]
        self._rejected[(name, rollout.candidate)] = reason
        self._end_rollout(name, "rolled_back", reason)
        self._metrics.rollbacks.inc(tags={"model": name, "reason": kind})
        self._publish()  # weight to 0 at once, before the registry round trips
        await self._io(self._registry.delete_alias, name, CHALLENGER)
        await self._io(
            self._registry.tag_version, name, rollout.candidate, "serve_app.rollback_reason", reason
        )

    def _end_rollout(self, name: str, kind: str, detail: str) -> None:
        rollout = self._rollouts.pop(name)
        self._windows.pop(name, None)
        self._record(name, kind, detail, rollout.candidate)
        self._registry.delete_model_tag(name, ROLLOUT_TAG)

    # -- publishing --------------------------------------------------------------------------
    def _publish(self) -> None:
        routes = {name: self._route(name, artifact) for name, artifact in self._champions.items()}
        k = self._settings.router.preload_top_k
        hot = tuple(sorted(routes, key=lambda name: (-self._traffic[name], name))[:k])
        table = self._table.with_routes(routes, hot)
        if table is self._table:
            return
        self._table = table
        routed = {(r.name, v) for r in routes.values() for v in r.versions}
        surplus = [key for key in self._artifacts if key not in routed]
        for key in surplus[: max(0, len(surplus) - PINNED_CACHE)]:
            del self._artifacts[key]
        self._export_gauges()
        self._table_changed.set()
        self._table_changed = asyncio.Event()

    def _route(self, name: str, champion: ModelArtifact) -> ModelRoute:
        rollout = self._rollouts.get(name)
        standby = self._standby.get(name, (None, 0))[0]
        pool = self._pools.get(name)
        if rollout is None:
            return ModelRoute(name, champion.version, champion.features, standby=standby, pool=pool)
        return ModelRoute(
            name,
            champion.version,
            champion.features,
            challenger=rollout.candidate,
            challenger_weight=rollout.weight,
            shadow=rollout.phase == machine.SHADOW,
            standby=standby,
            pool=pool,
        )

    def _export_gauges(self) -> None:
        for name, route in self._table.routes.items():
            phase = self._rollouts[name].phase if name in self._rollouts else "idle"
            self._metrics.export_route(name, route, phase)
        self._metrics.models_routed.set(len(self._table.routes))

    def _record(self, model: str, kind: str, detail: str, version: int | None = None) -> None:
        try:
            self._history.append(Event(time.time(), model, kind, detail, version))
        except Exception as error:  # the history database is down: never stop control
            logger.warning("could not record %s %s in the history: %s", model, kind, error)
        log = (
            logger.warning
            if kind in ("load_failed", "gate_rejected", "rolled_back", "control_error")
            else logger.info
        )
        log("%s: %s %s", model, kind, detail)

    # -- called by scoring replicas ------------------------------------------------------------
    async def sync(
        self,
        replica: str,
        node: str,
        loaded: list[str],
        opens: int,
        traffic: dict[str, int],
        windows: dict[str, dict[int, VersionWindow]],
        stamp: tuple[str, int],
        wait_s: float,
    ) -> RoutingTable | None:
        """Long poll: the current table once it differs from the replica's `stamp`, else None.

        A table not yet filled from the registry is never handed out: a restarted
        controller must not empty the replicas' tables while it takes its first sweep.
        """
        revision = stamp[1] if stamp[0] == self._table.epoch else 0
        self._remember_replica(replica, node, loaded, opens, revision, sum(traffic.values()))
        self._traffic.update(traffic)
        for name, by_version in windows.items():
            if name in self._windows:
                current = self._windows[name]
                for version, window in by_version.items():
                    current[version] = current.get(version, VersionWindow()).merge(window)
        if self._table.revision == 0 or self._table.stamp == tuple(stamp):
            changed = self._table_changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=wait_s)
            except TimeoutError:
                return None
        return self._table

    def _remember_replica(
        self,
        replica: str,
        node: str,
        loaded: list[str],
        opens: int,
        revision: int | None = None,
        requests: int = 0,
    ) -> None:
        """What a replica holds, the table it serves from (None: unchanged) and how many
        requests it has answered (how the ingress spreads load shows in status)."""
        known = self._replicas.get(replica, {})
        self._replicas[replica] = {
            "loaded": sorted(loaded),
            "opens": opens,
            "node": node,
            "seen": time.time(),
            "revision": known.get("revision", 0) if revision is None else revision,
            "requests": known.get("requests", 0) + requests,
        }

    async def artifact(self, name: str, version: int) -> ModelArtifact | str | None:
        """A checked version's bytes; None if it does not exist, a reason if it is unusable."""
        key = (name, version)
        async with self._fetch_locks.setdefault(key, asyncio.Lock()):
            if key not in self._artifacts and key not in self._broken:
                await self._load_checked(name, version)
        self._fetch_locks.pop(key, None)
        if key in self._artifacts:
            return self._artifacts[key]
        return self._broken.get(key)

    # -- admin ------------------------------------------------------------------------------------
    async def set_weight(self, name: str, weight: float) -> tuple[int, str]:
        async with self._lock:
            rollout = self._rollouts.get(name)
            if rollout is None:
                return 409, f"model '{name}' has no challenger in rollout"
            await self._save_rollout(rollout.manual(weight, time.time()))
            self._record(name, "manual_weight", f"{weight:g}% by an operator", rollout.candidate)
            self._publish()
            return 200, f"challenger v{rollout.candidate} of '{name}' at {weight:g}%"

    async def promote(self, name: str) -> tuple[int, str]:
        async with self._lock:
            rollout = self._rollouts.get(name)
            if rollout is None:
                return 409, f"model '{name}' has no challenger to promote"
            self._record(name, "manual_promote", "by an operator", rollout.candidate)
            await self._promote(name)
            self._publish()
            return 200, f"v{rollout.candidate} is the champion of '{name}'"

    async def rollback(self, name: str) -> tuple[int, str]:
        """Abort a running rollout, or else move `champion` back to the standby version."""
        async with self._lock:
            if name in self._rollouts:
                candidate = self._rollouts[name].candidate
                await self._roll_back(name, "manual rollback by an operator", "manual")
                return 200, f"rolled back challenger v{candidate} of '{name}'"
            standby = self._standby.get(name)
            artifact = standby and await self._load_checked(name, standby[0])
            if not artifact:
                return 409, f"model '{name}' has no previous version within its grace period"
            await self._io(self._registry.set_alias, name, CHAMPION, artifact.version)
            self._aliases.setdefault(name, {})[CHAMPION] = artifact.version
            detail = f"champion back to v{artifact.version}"
            self._record(name, "manual_rollback", detail, artifact.version)
            self._set_champion(artifact)
            self._publish()
            return 200, f"'{name}' champion is back to v{standby[0]}"

    async def status(self) -> dict[str, Any]:
        now = time.time()
        live = {r: i for r, i in self._replicas.items() if now - i["seen"] < REPLICA_STALE_S}
        models = {}
        for name in sorted(set(self._table.routes) | set(self._aliases)):
            route = self._table.get(name)
            rollout = self._rollouts.get(name)
            models[name] = {
                "aliases": self._aliases.get(name, {}),
                "serving": None
                if route is None
                else {
                    "champion": route.champion,
                    "challenger": route.challenger,
                    "challenger_weight": route.challenger_weight if route.challenger else 0.0,
                    "shadow": route.shadow,
                    "pool": route.pool,
                    "standby": route.standby,
                },
                "rollout": None
                if rollout is None
                else {**asdict(rollout), "window": self._window_summary(name, rollout)},
                "loaded_on": sorted(r for r, i in live.items() if name in i["loaded"]),
                "failed_versions": {v: why for (n, v), why in self._broken.items() if n == name},
                "rejected_versions": {
                    v: why for (n, v), why in self._rejected.items() if n == name
                },
                "control_error": self._control_errors.get(name) or self._placement_errors.get(name),
            }
        return {
            "registry_uri": self._settings.registry.tracking_uri,
            "controller_epoch": self._table.epoch,
            "table_revision": self._table.revision,
            "last_poll": self._last_poll,
            "replicas": {
                r: {
                    "loaded": len(i["loaded"]),
                    "model_opens": i["opens"],
                    "node": i["node"],
                    "table_revision": i["revision"],
                    "requests": i["requests"],
                }
                for r, i in live.items()
            },
            "models": models,
        }

    def _window_summary(self, name: str, rollout: Rollout) -> dict[str, Any]:
        windows = self._windows.get(name, {})
        champion = windows.get(rollout.champion, VersionWindow())
        challenger = windows.get(rollout.candidate, VersionWindow())
        return {
            "champion_requests": champion.requests,
            "challenger_requests": challenger.requests,
            "challenger_error_rate": challenger.error_rate,
            "p99_ms": {"champion": champion.p99_ms(), "challenger": challenger.p99_ms()},
            "psi": psi(champion.scores, challenger.scores),
            "shadow_agreement": challenger.agreement,
            "shadow_compared": challenger.compared,
        }

    async def history(self, name: str | None = None, since: float | None = None) -> list[dict]:
        events = await self._io(self._history.read, name, since)
        return [asdict(e) for e in events]


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _rollout_from_tag(text: str | None) -> Rollout | None:
    if not text:
        return None
    try:
        return Rollout.from_json(text)
    except (ValueError, TypeError):
        return None
