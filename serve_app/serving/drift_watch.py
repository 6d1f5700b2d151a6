"""The control actor's drift monitor: windows of each model's logged traffic, judged
against its serving version's reference profile.

A part of `Controller` (serving/controller.py), kept in a room of its own. Router replicas
bin their logged champion rows (predictions/drift_sink.py) and hand the counts over with
every table sync; here they are merged per model into windows. A window is judged once it
has `drift.window_rows` rows spanning `drift.min_window_span_s`; a `DriftTracker` per
serving version turns the readings into one alarm per episode, which starts a retrain
(serving/retrain_watch.py) until the retrained version takes over. A new champion starts a
new window and tracker: its own reference.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from serve_app.core.drift import (
    SCORE,
    Drifted,
    DriftTracker,
    ReferenceProfile,
    Steady,
    WindowCounts,
    WindowReading,
    breaches,
    judge_counts,
    not_judgeable,
)

logger = logging.getLogger("ray.serve")

STATUS_LEVEL = {"steady": 0, "suspect": 1, "drifted": 2}
SCORE_LABEL = "score"  # SCORE as the gauges' `feature` label


class DriftWatch:
    def _init_drift(self) -> None:
        self._profile_texts: dict[tuple[str, int], str | None] = {}  # as the registry has them
        self._drift_references: dict[tuple[str, int], ReferenceProfile] = {}
        self._drift_open: dict[str, tuple[int, WindowCounts]] = {}  # model → filling window
        self._drift_trackers: dict[str, tuple[int, DriftTracker]] = {}  # model → its version's
        self._drift_readings: dict[str, WindowReading] = {}  # model → last judged window
        self._drift_judged: Counter[str] = Counter()  # model → windows judged, all versions
        self._drift_judged_at: dict[str, float] = {}  # model → when its last window was

    def _take_drift_counts(self, counts: dict[tuple[str, int], WindowCounts]) -> None:
        for (name, version), window in counts.items():
            champion = self._champions.get(name)
            if champion is None or champion.version != version:
                continue  # a version that stopped serving while its rows were on the way
            found = self._drift_open.get(name)
            if found is not None and found[0] == version:
                window = found[1].merge(window)
            self._drift_open[name] = (version, window)
            self._judge_when_ready(name, version, window)

    def _judge_when_ready(self, name: str, version: int, window: WindowCounts) -> None:
        profile = self._drift_reference(name, version)
        if profile is None:
            return
        policy = self._settings.drift
        reading = judge_counts(profile, window)
        if not_judgeable(reading, policy):
            return
        del self._drift_open[name]
        tracker = self._drift_trackers.get(name)
        if tracker is None or tracker[0] != version:
            tracker = self._drift_trackers[name] = (version, DriftTracker(policy))
        before = tracker[1].alarm
        status = tracker[1].feed(reading)
        self._drift_readings[name] = reading
        self._drift_judged[name] += 1
        self._drift_judged_at[name] = time.time()
        result = "breach" if breaches(reading, policy) else "clean"
        self._metrics.drift_windows.inc(tags={"model": name, "result": result})
        if isinstance(status, Drifted) and before is None:
            self._metrics.drift_alarms.inc(tags={"model": name})
            self._record(name, "drift_detected", describe(status), version)

    def _drift_reference(self, name: str, version: int) -> ReferenceProfile | None:
        key = (name, version)
        if key not in self._drift_references:
            text = self._profile_texts.get(key)  # fetched when a replica asked for it
            if text is None:
                return None
            self._drift_references[key] = ReferenceProfile.from_json(text)
        return self._drift_references[key]

    def _restart_drift(self, name: str) -> None:
        """A new champion: its own reference, a new window and tracker (its gauges are set
        again from its first judged window)."""
        for state in (self._drift_open, self._drift_trackers, self._drift_readings):
            state.pop(name, None)

    def _forget_drift(self, name: str) -> None:
        for state in (
            self._drift_open,
            self._drift_trackers,
            self._drift_readings,
            self._drift_judged,
        ):
            state.pop(name, None)

    def drift_status(self, name: str) -> dict[str, Any]:
        """The model's drift state for /admin/models and `serve-app drift`."""
        tracker = self._drift_trackers.get(name)
        reading = self._drift_readings.get(name)
        pending = self._drift_open.get(name)
        status = tracker[1].status if tracker else Steady()
        return {
            "version": tracker[0] if tracker else None,
            "status": status_name(status),
            "signals": list(getattr(status, "signals", ())),
            "windows_in_a_row": getattr(status, "windows", None),
            "windows_judged": self._drift_judged[name],
            "judged_at": self._drift_judged_at.get(name),
            "last_window": None if reading is None else reading_view(reading),
            "filling": None
            if pending is None
            else {"version": pending[0], "rows": pending[1].rows},
            "policy": self._settings.drift.model_dump(),
        }

    def _export_drift(self, name: str) -> None:
        """The gauges of the model's last judged window, set on every poll."""
        tracker, reading = self._drift_trackers.get(name), self._drift_readings.get(name)
        if tracker is None or reading is None:
            return
        level = STATUS_LEVEL[status_name(tracker[1].status)]
        self._metrics.drift_status.set(level, tags={"model": name})
        for feature, psi in reading.psi.items():
            if psi is not None:
                label = SCORE_LABEL if feature == SCORE else feature
                self._metrics.drift_psi.set(psi, tags={"model": name, "feature": label})
        expected = reading.expected_alert_rate
        if expected > 0:
            ratio = reading.alert_rate / expected
            self._metrics.drift_alert_rate_ratio.set(ratio, tags={"model": name})


def status_name(status: object) -> str:
    return {"Steady": "steady", "Suspect": "suspect", "Drifted": "drifted"}[type(status).__name__]


def reading_view(reading: WindowReading) -> dict[str, Any]:
    return {
        "rows": reading.rows,
        "start": reading.start,
        "end": reading.end,
        "psi": {SCORE_LABEL if k == SCORE else k: v for k, v in reading.psi.items()},
        "alert_rate": reading.alert_rate,
        "expected_alert_rate": reading.expected_alert_rate,
        "alert_p_value": reading.alert_p_value,
        "missing_rate": {k: v for k, v in reading.missing_rate.items() if v},
    }


def describe(alarm: Drifted) -> str:
    """The alarm in one line: its signals and their last readings."""
    last = alarm.readings[-1]
    parts = []
    for signal in alarm.signals:
        kind, _, feature = signal.partition(":")
        if kind == "psi":
            parts.append(f"PSI {feature} {last.psi[feature]:.3f}")
        elif kind == "missing":
            parts.append(f"missing {feature} {last.missing_rate[feature]:.1%}")
        else:
            parts.append(
                f"alert rate {last.alert_rate:.2%} (expected {last.expected_alert_rate:.2%})"
            )
    return f"{len(alarm.readings)} windows in a row: " + ", ".join(parts)
