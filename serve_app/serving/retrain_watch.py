"""The control actor's retraining: from a drift alarm (or an operator) to a job on the
cluster, and from the job's outcome to the history.

A part of `Controller` (serving/controller.py), kept in a room of its own. A model whose
drift alarm is up (or whose champion's live quality fell below its evaluation's) wants a
retrain; one is started when the guards allow (one per model,
`retrain.max_concurrent` in all, none in a rollout or within the cooldown of the model's
last retrained version). The job (retraining/job.py) runs as a Ray task: the control
loop only polls it. A refused or failed job is retried after `retrain.retry_s` while the
alarm stays up; a registered one's `challenger` alias is picked up by the next registry
poll like any other: gate, canary, promotion (the new champion's tracker starts afresh) or
rollback (the alarm, still up, wants another once the cooldown allows).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import ray

from serve_app.core.retrain_guards import Refusal, may_start
from serve_app.registry.mlflow_registry import CHALLENGER
from serve_app.retraining.job import Outcome, retrain

MANUAL = "manual"
DRIFT = "drift"
QUALITY = "quality"


@dataclass(frozen=True)
class Wanted:
    trigger: str
    detail: str
    onset: float | None = None  # when the drift began


@dataclass
class RetrainJob:
    ref: Any  # the Ray task's ObjectRef
    wanted: Wanted
    started_at: float


@ray.remote(max_retries=0)
def _retrain_task(settings_json: str, name: str, wanted: Wanted) -> dict:
    from serve_app.settings import AppSettings

    settings = AppSettings.model_validate_json(settings_json)
    return retrain(settings, name, wanted.trigger, wanted.detail, wanted.onset).to_dict()


class RetrainWatch:
    def _init_retraining(self) -> None:
        self._retrain_jobs: dict[str, RetrainJob] = {}
        self._retrain_wanted: dict[str, Wanted] = {}
        self._retrain_retry_at: dict[str, float] = {}
        self._retrain_last: dict[str, dict[str, Any]] = {}
        self._retrained_at: dict[str, float] = {}

    def _want_retrains_for_drift(self) -> None:
        """A drift alarm up wants a retrain, until a retrained version takes over (its new
        tracker has no alarm): a challenger the gate or the canary turned down, with the
        alarm still up, wants another once the cooldown allows."""
        if not self._settings.retrain.on_drift:
            return
        for name, (version, tracker) in self._drift_trackers.items():
            alarm, champion = tracker.alarm, self._champions.get(name)
            if alarm is None or champion is None or champion.version != version:
                continue  # no alarm, or the alarm of a version no longer serving
            if name in self._retrain_wanted or name in self._retrain_jobs:
                continue
            pending = self._aliases.get(name, {}).get(CHALLENGER)
            if name in self._rollouts or (pending and (name, pending) not in self._rejected):
                continue  # a challenger is on its way: let the gate and canary decide
            from serve_app.serving.drift_watch import describe

            self._retrain_wanted[name] = Wanted(DRIFT, describe(alarm), alarm.readings[0].start)

    async def start_retrain(self, name: str, principal: str) -> dict[str, Any]:
        """An operator's retrain (`serve-app retrain NAME`): no cooldown, the other guards."""
        refusal = self._launch(name, Wanted(MANUAL, "asked for by an operator"), principal)
        if refusal is not None:
            return {"started": False, "reason": refusal.reason, "detail": refusal.detail}
        return {"started": True, "model": name}

    def _tend_retrains(self) -> None:
        """On every poll: collect finished jobs, start the ones alarms want."""
        for name, job in list(self._retrain_jobs.items()):
            done, _ = ray.wait([job.ref], timeout=0)
            if done:
                del self._retrain_jobs[name]
                self._finish(name, job)
        self._want_retrains_for_drift()
        now = time.time()
        for name, wanted in list(self._retrain_wanted.items()):
            if name in self._retrain_jobs or now < self._retrain_retry_at.get(name, 0.0):
                continue
            refusal = self._launch(name, wanted)
            if refusal is not None:
                self._retrain_retry_at[name] = now + self._settings.retrain.retry_s

    def _launch(self, name: str, wanted: Wanted, principal: str | None = None) -> Refusal | None:
        """Start a retrain job; `principal` names the operator of a manual one (no cooldown)."""
        if name not in self._champions:
            return Refusal("no_data", f"{name} is not served")
        policy = self._settings.retrain
        refusal = may_start(
            policy,
            time.time(),
            None if principal is not None else self._retrained_at.get(name),
            len(self._retrain_jobs),
            name in self._retrain_jobs,
        )
        if refusal is None and name in self._rollouts:
            refusal = Refusal("concurrency", "a rollout of this model is in progress")
        if refusal is not None:
            self._refused(name, refusal, principal)
            return refusal
        ref = _retrain_task.options(num_cpus=policy.num_cpus).remote(
            self._settings.model_dump_json(), name, wanted
        )
        self._retrain_jobs[name] = RetrainJob(ref, wanted, time.time())
        self._metrics.retrains.inc(tags={"model": name, "outcome": "started"})
        detail = f"{wanted.trigger}: {wanted.detail}"
        self._record(name, "retrain_started", detail, principal=principal)
        return None

    def _finish(self, name: str, job: RetrainJob) -> None:
        try:
            outcome = Outcome(**ray.get(job.ref))
        except Exception as error:  # the task raised or its worker died
            outcome = Outcome("failed", name, f"{type(error).__name__}: {str(error)[-500:]}")
        took = time.time() - job.started_at
        if outcome.outcome != "refused":  # `_refused` counts those
            self._metrics.retrains.inc(tags={"model": name, "outcome": outcome.outcome})
        self._retrain_last[name] = {
            **outcome.to_dict(),
            "trigger": job.wanted.trigger,
            "took_s": took,
        }
        if outcome.outcome == "registered":
            self._retrained_at[name] = time.time()
            self._retrain_wanted.pop(name, None)
            self._aliases.setdefault(name, {})[CHALLENGER] = outcome.version  # before the sweep
            figures = ", ".join(f"{k} {v}" for k, v in outcome.figures.items())
            self._record(
                name, "retrain_registered", f"{outcome.detail} ({figures})", outcome.version
            )
            return
        self._retrain_retry_at[name] = time.time() + self._settings.retrain.retry_s
        if outcome.outcome == "refused":
            self._refused(name, Refusal(outcome.reason or "no_data", outcome.detail))
        else:
            self._record(name, "retrain_failed", outcome.detail)

    def _refused(self, name: str, refusal: Refusal, principal: str | None = None) -> None:
        self._metrics.retrain_refusals.inc(tags={"model": name, "reason": refusal.reason})
        self._metrics.retrains.inc(tags={"model": name, "outcome": "refused"})
        detail = f"{refusal.reason}: {refusal.detail}"
        self._record(name, "retrain_refused", detail, principal=principal)

    def retrain_status(self, name: str) -> dict[str, Any]:
        job = self._retrain_jobs.get(name)
        wanted = self._retrain_wanted.get(name)
        return {
            "running": None
            if job is None
            else {"trigger": job.wanted.trigger, "since": job.started_at},
            "wanted": None if wanted is None else asdict(wanted),
            "retry_at": self._retrain_retry_at.get(name),
            "last": self._retrain_last.get(name),
            "last_registered_at": self._retrained_at.get(name),
        }
