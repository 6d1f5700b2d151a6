"""The control actor's quality watch: live quality gauges, the figures the quality guard
judges a rollout on, a retrain wanted when a champion falls below its evaluation, and the
counts of labels the Kafka label consumer stored.

A part of `Controller` (serving/controller.py), kept in a room of its own. Labels come
days late and the join is a database query, so it runs every `quality.interval_s`, not on
every registry poll; the guard uses the latest figures.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from serve_app.core.quality import Quality, below_evaluation
from serve_app.labels.report import model_quality, rollout_quality
from serve_app.labels.store import StoreUnavailable
from serve_app.metrics import UNKNOWN_MODEL
from serve_app.predictions.records import SECONDS_PER_DAY
from serve_app.serving.retrain_watch import QUALITY, Wanted

PRUNE_EVERY_S = 3_600.0
GAUGE_ROLES = ("champion", "challenger")
SHADOW_GAUGE = {"shadow": "challenger"}

logger = logging.getLogger("ray.serve")


class QualityWatch:
    async def _watch_quality(self) -> None:
        now = time.time()
        if self._store is None or now < self._quality_due:
            return
        self._quality_due = now + self._settings.quality.interval_s
        window = now - self._settings.quality.window_days * SECONDS_PER_DAY
        rollouts = {
            name: (r.champion, r.candidate, r.started_at or r.step_started_at)
            for name, r in self._rollouts.items()
        }
        roles = {name: route.roles() for name, route in self._table.routes.items()}
        try:  # the label store away: the last figures stand, the registry work goes on
            self._live_quality, self._rollout_quality = await self._io(
                self._measure, window, roles, rollouts
            )
            self._quality_triggers()
            if now >= self._prune_due:
                await self._io(self._store.prune)
                self._prune_due = now + PRUNE_EVERY_S
        except StoreUnavailable as error:
            logger.warning("live quality not measured: %s", error)

    def _quality_triggers(self) -> None:
        """A champion whose live quality fell below its evaluation's wants a retrain (the
        same margins as the alerts ServeAppLiveRecall/FalsePositiveRate...; significant)."""
        policy, now = self._settings.retrain, time.time()
        if not policy.on_quality:
            return
        for name, by_role in self._live_quality.items():
            route, live = self._table.get(name), by_role.get("champion")
            busy = name in self._retrain_wanted or name in self._rollouts
            recent = now - self._retrained_at.get(name, -policy.cooldown_s) < policy.cooldown_s
            if route is None or live is None or busy or recent:
                continue
            figures = self._eval_figures.get((name, route.champion), {})
            reason = below_evaluation(live, figures, policy)
            if reason is not None:
                self._record(name, "quality_breach", reason, route.champion)
                self._retrain_wanted[name] = Wanted(QUALITY, reason)

    def _measure(self, window: float, roles: dict, rollouts: dict):
        """(live quality by model and role, rollout comparisons): blocking, off the loop."""
        live: dict[str, dict[str, Quality]] = {}
        for name, versions in roles.items():
            found = model_quality(self._store, name, window, versions)
            # a shadow is the challenger of its rollout: the gauges' role label stays bounded
            by_role = {SHADOW_GAUGE.get(v.role, v.role): v.total for v in found}
            live[name] = {role: q for role, q in by_role.items() if role in GAUGE_ROLES}
        compared = {
            (name, candidate): rollout_quality(self._store, name, champion, candidate, since)
            for name, (champion, candidate, since) in rollouts.items()
        }
        return live, compared

    def _export_quality(self, name: str) -> None:
        """Set each figure that has labels behind it, on every poll; the others stay absent
        (Ray drops a gauge that is not refreshed), so no alert fires on a figure of no
        labels."""
        by_role = self._live_quality.get(name, {})
        route = self._table.get(name)
        versions = {"champion": route.champion, "challenger": route.challenger} if route else {}
        m = self._metrics
        for role in GAUGE_ROLES:
            tags = {"model": name, "role": role}
            quality = by_role.get(role)
            figures = self._eval_figures.get((name, versions.get(role)), {})
            if "recall" in figures:
                m.quality_eval_recall.set(figures["recall"], tags=tags)
            if "false_positive_rate" in figures:
                m.quality_eval_false_positive_rate.set(figures["false_positive_rate"], tags=tags)
            if quality is None:
                continue
            m.quality_labelled_rows.set(quality.labelled, tags=tags)
            m.quality_labelled_frauds.set(quality.frauds, tags=tags)
            for gauge, value in (
                (m.quality_label_maturity, quality.maturity),
                (m.quality_alert_rate, quality.alert_rate),
                (m.quality_recall, quality.recall),
                (m.quality_precision, quality.precision),
                (m.quality_false_positive_rate, quality.false_positive_rate),
                (m.quality_pr_auc, quality.pr_auc),
            ):
                if value is not None:
                    gauge.set(value, tags=tags)

    def _count_labels(self, counts: Counter[tuple[str, str]]) -> None:
        with self._label_counts_lock:
            self._label_counts.update(counts)

    def _export_label_counts(self) -> None:
        """Labels the Kafka consumer stored, by outcome; a model outside the table is
        counted as `_unknown` (a topic's model names are not bounded)."""
        with self._label_counts_lock:
            counts, self._label_counts = self._label_counts, Counter()
        for (model, status), count in counts.items():
            model = model if model in self._table.routes else UNKNOWN_MODEL
            self._metrics.labels_received.inc(count, tags={"model": model, "status": status})
