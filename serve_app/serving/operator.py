"""The control actor's operator side: manual canary weight, promote, rollback, status,
one model's detail (the console's model view) and history, as the admin endpoints, the
CLI and the console call them. Each manual action names the principal that asked
(serving/auth.py), and the history records it.

A part of `Controller` (serving/controller.py), kept in a room of its own; every changing
action takes the actor's lock, so it never interleaves with a registry poll.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import ray

from serve_app.core.quality import below_evaluation
from serve_app.core.rollout import Rollout, guard_readings
from serve_app.core.stats import VersionWindow, psi
from serve_app.registry.mlflow_registry import CHAMPION
from serve_app.settings import APP_NAME

REPLICA_STALE_S = 10.0  # replicas report every SYNC_WAIT_S (2 s) at most


class OperatorActions:
    async def set_weight(self, name: str, weight: float, principal: str) -> tuple[int, str]:
        async with self._lock:
            rollout = self._rollouts.get(name)
            if refusal := self._pin_refusal(name):
                return 409, refusal
            if rollout is None:
                return 409, f"model '{name}' has no challenger in rollout"
            await self._save_rollout(rollout.manual(weight, time.time()))
            self._record(name, "manual_weight", f"{weight:g}%", rollout.candidate, principal)
            self._publish()
            return 200, f"challenger v{rollout.candidate} of '{name}' at {weight:g}%"

    async def promote(self, name: str, principal: str) -> tuple[int, str]:
        async with self._lock:
            rollout = self._rollouts.get(name)
            if refusal := self._pin_refusal(name):
                return 409, refusal
            if rollout is None:
                return 409, f"model '{name}' has no challenger to promote"
            self._record(name, "manual_promote", "", rollout.candidate, principal)
            await self._promote(name)
            self._publish()
            return 200, f"v{rollout.candidate} is the champion of '{name}'"

    async def rollback(self, name: str, principal: str) -> tuple[int, str]:
        """Abort a running rollout, or else move `champion` back to the standby version."""
        async with self._lock:
            if refusal := self._pin_refusal(name):
                return 409, refusal
            if name in self._rollouts:
                candidate = self._rollouts[name].candidate
                await self._roll_back(name, "manual rollback", "manual", principal)
                return 200, f"rolled back challenger v{candidate} of '{name}'"
            standby = self._standby.get(name)
            artifact = standby and await self._load_checked(name, standby[0])
            if not artifact:
                return 409, f"model '{name}' has no previous version within its grace period"
            await self._io(self._registry.set_alias, name, CHAMPION, artifact.version)
            self._aliases.setdefault(name, {})[CHAMPION] = artifact.version
            detail = f"champion back to v{artifact.version}"
            self._record(name, "manual_rollback", detail, artifact.version, principal)
            self._set_champion(artifact)
            self._publish()
            return 200, f"'{name}' champion is back to v{standby[0]}"

    async def status(self) -> dict[str, Any]:
        now = time.time()
        live = self._live_replicas(now)
        models = {
            name: self._model_status(name, now, live)
            for name in sorted(set(self._table.routes) | set(self._aliases))
        }
        return {
            "registry_uri": self._settings.registry.tracking_uri,
            "cluster": {"app": APP_NAME, "ray_address": ray.get_runtime_context().gcs_address},
            "controller_epoch": self._table.epoch,
            "table_revision": self._table.revision,
            "last_poll": self._last_poll,
            "pins": self._pins_summary(),
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

    async def model_detail(self, name: str) -> dict[str, Any] | None:
        """One model for the console's model view: its status, the policy its rollout
        follows, each guard's reading against its limit, score distributions, quality."""
        if name not in self._table.routes and name not in self._aliases:
            return None
        now = time.time()
        live = self._live_replicas(now)
        policy = self._policies.get(name, self._settings.rollout)
        rollout = self._rollouts.get(name)
        detail = {
            "model": name,
            **self._model_status(name, now, live),
            "policy": policy.model_dump(),
            "recent": self._recent.summary(name, now),
            "replicas": {r: live[r]["node"] for r in self._loaded_on(name, live)},
            "live_quality": {
                role: q.to_dict() for role, q in self._live_quality.get(name, {}).items()
            },
            "guards": None,
        }
        if rollout is not None:
            champion, challenger = self._rollout_windows(name, rollout)
            detail["guards"] = [
                {**asdict(g), "breached": g.breached}
                for g in guard_readings(policy, champion, challenger)
            ]
            detail["step"] = {
                "elapsed_s": now - rollout.step_started_at,
                "dwell_s": policy.step_dwell_s,
                "challenger_requests": challenger.requests,
                "min_requests": policy.step_min_requests,
            }
            detail["rollout_scores"] = {
                "champion": champion.scores,
                "challenger": challenger.scores,
            }
        return detail

    def _live_replicas(self, now: float) -> dict[str, dict[str, Any]]:
        return {r: i for r, i in self._replicas.items() if now - i["seen"] < REPLICA_STALE_S}

    @staticmethod
    def _loaded_on(name: str, live: dict[str, dict[str, Any]]) -> list[str]:
        return sorted(r for r, i in live.items() if name in i["loaded"])

    def _model_status(self, name: str, now: float, live: dict[str, dict[str, Any]]) -> dict:
        route = self._table.get(name)
        rollout = self._rollouts.get(name)
        policy = self._policies.get(name, self._settings.rollout)
        recent = self._recent.summary(name, now)
        for figures in recent["versions"].values():
            del figures["score_bins"]  # the model view has them; the fleet stays small
        last = self._last_event.get(name)
        return {
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
            else {
                **asdict(rollout),
                "steps": list(policy.steps),
                "window": self._window_summary(name, rollout),
            },
            "loaded_on": self._loaded_on(name, live),
            "failed_versions": {v: why for (n, v), why in self._broken.items() if n == name},
            "rejected_versions": {v: why for (n, v), why in self._rejected.items() if n == name},
            "control_error": self._control_errors.get(name) or self._placement_errors.get(name),
            "drift": self.drift_status(name)["status"],
            "retraining": name in self._retrain_jobs,
            "pin": self._pin_status(name),
            "recent": recent,
            "quality": self._quality_badge(name),
            "last_event": None
            if last is None
            else {"at": last.at, "kind": last.kind, "version": last.version},
        }

    def _quality_badge(self, name: str) -> dict[str, Any] | None:
        """The champion's live quality in short, and whether it fell below its evaluation
        (the retrain trigger's test); None before any of its rows has a label."""
        route, live = self._table.get(name), self._live_quality.get(name, {}).get("champion")
        if route is None or live is None or not live.labelled:
            return None
        figures = self._eval_figures.get((name, route.champion), {})
        return {
            "labelled": live.labelled,
            "frauds": live.frauds,
            "recall": live.recall,
            "false_positive_rate": live.false_positive_rate,
            "below_evaluation": below_evaluation(live, figures, self._settings.retrain),
        }

    async def drift_report(self, name: str) -> dict[str, Any] | None:
        if name not in self._table.routes:
            return None
        return {"model": name, **self.drift_status(name), "retrain": self.retrain_status(name)}

    def _rollout_windows(self, name: str, rollout: Rollout) -> tuple[VersionWindow, ...]:
        windows = self._windows.get(name, {})
        return (
            windows.get(rollout.champion, VersionWindow()),
            windows.get(rollout.candidate, VersionWindow()),
        )

    def _window_summary(self, name: str, rollout: Rollout) -> dict[str, Any]:
        champion, challenger = self._rollout_windows(name, rollout)
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
