"""The rollout state machine: gate → canary steps (or shadow) → promote, or roll back.

Pure: the control actor feeds it evaluation results and traffic windows and carries out
what it decides (weights, registry aliases, events). State is a small frozen record that
the control actor persists as a registered-model tag, so a restart resumes the step it
was on instead of starting traffic over.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace

from serve_app.core.decisions import Advance, Decision, Hold, Promote, RollBack
from serve_app.core.quality import Quality, quality_breach
from serve_app.core.stats import VersionWindow, psi
from serve_app.settings import RolloutPolicy

__all__ = ["Advance", "Decision", "Hold", "Promote", "RollBack"]  # what a step can decide
CANARY, SHADOW, MANUAL = "canary", "shadow", "manual"
PHASES = ("idle", CANARY, SHADOW, MANUAL)  # values of the rollout-state gauge


@dataclass(frozen=True)
class EvalResult:
    """A version scored on the model's registered evaluation set."""

    auc: float
    recall: float  # at the champion's alert rate
    p99_ms: float  # single-row scoring latency
    problem: str | None = None  # why the evaluation set cannot judge the version

    @classmethod
    def unusable(cls, problem: str) -> EvalResult:
        """No numbers, only the reason: the gate refuses on it."""
        nan = float("nan")
        return cls(nan, nan, nan, problem)


def gate(policy: RolloutPolicy, champion: EvalResult, candidate: EvalResult) -> str | None:
    """The reason to reject a candidate before it sees traffic, or None to admit it."""
    unjudged = _unjudged(champion) or _unjudged(candidate)
    if unjudged is not None:
        return unjudged
    if candidate.auc < champion.auc - policy.gate_auc_margin:
        return (
            f"AUC {candidate.auc:.4f} is below the champion's {champion.auc:.4f} "
            f"by more than {policy.gate_auc_margin}"
        )
    if candidate.recall < champion.recall - policy.gate_recall_margin:
        return (
            f"recall at the champion's alert rate {candidate.recall:.4f} is below the "
            f"champion's {champion.recall:.4f} by more than {policy.gate_recall_margin}"
        )
    if candidate.p99_ms > policy.gate_latency_budget_ms:
        return (
            f"single-row p99 {candidate.p99_ms:.2f} ms exceeds the budget of "
            f"{policy.gate_latency_budget_ms} ms"
        )
    return None


def _unjudged(result: EvalResult) -> str | None:
    """Why `result` cannot be compared, or None.

    Every comparison with NaN is False, so without this a set with one class (AUC and
    recall NaN) would let any candidate through the margins.
    """
    if result.problem is not None:
        return result.problem
    if not math.isfinite(result.auc):
        return "the evaluation set gives no AUC (it needs both classes)"
    if not math.isfinite(result.recall):
        return "the evaluation set gives no recall at the alert rate (it needs frauds)"
    if not math.isfinite(result.p99_ms):
        return "the evaluation set gives no single-row latency (it has no rows)"
    return None


@dataclass(frozen=True)
class Rollout:
    model: str
    candidate: int
    champion: int
    phase: str  # canary | shadow | manual
    step: int  # index into policy.steps (canary)
    weight: float  # percent of traffic (canary, manual) or copied (shadow)
    step_started_at: float
    started_at: float = 0.0  # the rollout's start: quality compares rows logged since (0: old tag)

    @classmethod
    def start(cls, model: str, candidate: int, champion: int, policy: RolloutPolicy, now: float):
        if policy.mode == SHADOW:
            weight = policy.shadow_sample_percent
            return cls(model, candidate, champion, SHADOW, 0, weight, now, now)
        return cls(model, candidate, champion, CANARY, 0, policy.steps[0], now, now)

    def at_step(self, step: int, policy: RolloutPolicy, now: float) -> Rollout:
        return replace(self, step=step, weight=policy.steps[step], step_started_at=now)

    def manual(self, weight: float, now: float) -> Rollout:
        return replace(self, phase=MANUAL, weight=weight, step_started_at=now)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Rollout:
        return cls(**json.loads(text))


# Below this many requests a window's "p99" is its slowest request, and one hiccup
# (a collection, a busy event loop) would roll a healthy canary back.
P99_MIN_REQUESTS = 100


@dataclass(frozen=True)
class GuardReading:
    """One guard's reading against its limit over the step's window (the console shows
    them; `guard_breach` acts on them)."""

    kind: str  # error_rate | latency | drift: the rollback reason it would give
    reading: float
    limit: float
    judged: bool  # the window has enough traffic for this guard to fail the step

    @property
    def breached(self) -> bool:
        return self.judged and self.reading > self.limit


def guard_readings(
    policy: RolloutPolicy, champion: VersionWindow, challenger: VersionWindow
) -> tuple[GuardReading, GuardReading, GuardReading]:
    """Error rate, p99 and score PSI of the challenger against the champion's, with limits."""
    sampled = challenger.requests >= policy.guard_min_requests
    p99_judged = sampled and champion.requests > 0 and challenger.requests >= P99_MIN_REQUESTS
    scored = min(sum(champion.scores), sum(challenger.scores)) >= policy.guard_min_scores
    return (
        GuardReading(
            "error_rate",
            challenger.error_rate,
            champion.error_rate + policy.guard_max_error_rate_delta,
            sampled,
        ),
        GuardReading(
            "latency",
            challenger.p99_ms(),
            champion.p99_ms() * policy.guard_max_p99_ratio + policy.guard_p99_slack_ms,
            p99_judged,
        ),
        GuardReading(
            "drift",
            psi(champion.scores, challenger.scores),
            policy.guard_max_psi,
            sampled and scored,
        ),
    )


def guard_breach(
    policy: RolloutPolicy, champion: VersionWindow, challenger: VersionWindow
) -> RollBack | None:
    """Challenger against champion over the same window, once the challenger has samples."""
    errors, latency, drift = guard_readings(policy, champion, challenger)
    if errors.breached:
        return RollBack(
            f"error rate {challenger.error_rate:.2%} vs the champion's {champion.error_rate:.2%}",
            "error_rate",
        )
    if latency.breached:
        return RollBack(
            f"p99 {challenger.p99_ms():g} ms vs the champion's {champion.p99_ms():g} ms "
            f"(limit {latency.limit:g} ms)",
            "latency",
        )
    if drift.breached:
        return RollBack(
            f"score distribution drifted from the champion's: PSI {drift.reading:.3f} "
            f"> {policy.guard_max_psi}",
            "drift",
        )
    return None


def _guards_could_judge(
    policy: RolloutPolicy, rollout: Rollout, champion: VersionWindow, challenger: VersionWindow
) -> bool:
    """A step may only pass once its guards had enough traffic to fail it.

    At 100% the champion sees no traffic, so only the challenger's own numbers count.
    """
    if challenger.requests < policy.guard_min_requests:
        return False
    if rollout.weight >= 100.0:
        return True
    return min(sum(champion.scores), sum(challenger.scores)) >= policy.guard_min_scores


def evaluate(
    rollout: Rollout,
    policy: RolloutPolicy,
    now: float,
    champion: VersionWindow,
    challenger: VersionWindow,
    quality: tuple[Quality, Quality] | None = None,
) -> Decision:
    """What to do with a running rollout given the current step's traffic and, once labels
    have come back, both versions' live quality on the same cohorts (champion, challenger)."""
    breach = guard_breach(policy, champion, challenger)
    if breach is None and quality is not None:
        breach = quality_breach(policy, *quality)
    if breach is not None:
        return breach
    if rollout.phase != CANARY:
        return Hold()  # shadow and manual rollouts move only on an operator's word
    if now - rollout.step_started_at < policy.step_dwell_s:
        return Hold()
    if challenger.requests < policy.step_min_requests or not _guards_could_judge(
        policy, rollout, champion, challenger
    ):
        return Hold()
    if rollout.step + 1 < len(policy.steps):
        return Advance(rollout.step + 1)
    return Promote()
