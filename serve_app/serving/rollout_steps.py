"""The control actor's rollout steps: gate a challenger, walk it through the policy's
steps, promote it or roll it back.

A part of `Controller` (serving/controller.py), kept in a room of its own: the decisions
are `core.rollout`'s; these methods carry them out against the registry and the routing
table, with the actor's state.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from serve_app.core import rollout as machine
from serve_app.core.rollout import Rollout
from serve_app.core.stats import VersionWindow
from serve_app.registry.mlflow_registry import CHALLENGER, CHAMPION, RegistryError
from serve_app.runtime.evaluation import alert_rate, evaluate_on_set
from serve_app.runtime.onnx import ModelArtifact, OnnxModel
from serve_app.settings import RolloutPolicy

logger = logging.getLogger("ray.serve")
ROLLOUT_TAG = "serve_app.rollout"
POLICY_TAG = "serve_app.rollout_policy"  # JSON, any subset of RolloutPolicy's fields


class RolloutSteps:
    def _policy(self, tags: dict[str, str]) -> RolloutPolicy:
        """The settings' rollout policy with the model's `POLICY_TAG` override, if valid."""
        override = tags.get(POLICY_TAG)
        if not override:
            return self._settings.rollout
        try:
            merged = {**self._settings.rollout.model_dump(), **_json_object(override)}
            return RolloutPolicy.model_validate(merged)
        except ValueError as error:
            logger.warning("ignoring invalid %s tag: %s", POLICY_TAG, error)
            return self._settings.rollout

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
        persisted = _rollout_from_tag(tags.get(ROLLOUT_TAG))
        if rollout is None and champion and persisted and persisted.candidate == champion.version:
            await self._finish_promotion(name, champion.version, candidate)
            return
        if candidate is None or champion is None or rollout is not None:
            return
        key = (name, candidate)
        if candidate == champion.version or key in self._rejected or key in self._broken:
            return
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
        quality = self._rollout_quality.get((name, rollout.candidate))
        decision = machine.evaluate(rollout, policy, time.time(), champion, challenger, quality)
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
        """Persist first: a step the registry did not take (MLflow away) is not taken, so
        the rollout holds where it was and the step is tried again at the next poll."""
        await self._io(self._registry.set_model_tag, rollout.model, ROLLOUT_TAG, rollout.to_json())
        self._rollouts[rollout.model] = rollout
        self._windows[rollout.model] = {}

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

    async def _finish_promotion(self, name: str, version: int, challenger: int | None) -> None:
        """The persisted rollout names the champion as its candidate: a promotion was cut
        short after it moved `champion` (the actor killed before it removed `challenger`
        or recorded the promotion). Finish it, and say so in the history."""
        if challenger == version:
            await self._io(self._registry.delete_alias, name, CHALLENGER)
            self._aliases.get(name, {}).pop(CHALLENGER, None)
        await self._io(self._registry.delete_model_tag, name, ROLLOUT_TAG)
        detail = f"v{version} is champion (a promotion cut short, finished after a restart)"
        self._record(name, "promoted", detail, version)

    async def _roll_back(
        self, name: str, reason: str, kind: str, principal: str | None = None
    ) -> None:
        rollout = self._rollouts[name]
        self._rejected[(name, rollout.candidate)] = reason
        self._end_rollout(name, "rolled_back", reason, principal)
        self._metrics.rollbacks.inc(tags={"model": name, "reason": kind})
        self._publish()  # weight to 0 at once, before the registry round trips
        await self._io(self._registry.delete_alias, name, CHALLENGER)
        await self._io(
            self._registry.tag_version, name, rollout.candidate, "serve_app.rollback_reason", reason
        )

    def _end_rollout(self, name: str, kind: str, detail: str, principal: str | None = None) -> None:
        rollout = self._rollouts.pop(name)
        self._windows.pop(name, None)
        self._record(name, kind, detail, rollout.candidate, principal)
        self._registry.delete_model_tag(name, ROLLOUT_TAG)


def _rollout_from_tag(text: str | None) -> Rollout | None:
    if not text:
        return None
    try:
        return Rollout.from_json(text)
    except (ValueError, TypeError):
        return None


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value
