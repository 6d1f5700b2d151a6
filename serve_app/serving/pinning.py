"""The control actor's pins: the reviewed pins file, read on every poll and held against
the registry's aliases.

A part of `Controller` (serving/controller.py), kept in a room of its own; the rules are
`core.pins`'. Each poll re-reads the file when its text changed (a malformed or unreadable
file keeps the last good pins and says why), merges the pins with the `champion` aliases
for the plan, ends a pinned model's rollout and keeps its `challenger` out of traffic, and
reports what does not agree: history events (once per change), the gauges
`serve_app_pin_disagrees{model}` and `serve_app_pins_file_error`, and `/admin/models`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from serve_app.core.pins import (
    PinCheck,
    PinsError,
    check_pins,
    desired_champions,
    parse_pins,
    pin_changes,
)
from serve_app.registry.mlflow_registry import CHALLENGER, CHAMPION, RegisteredModelInfo
from serve_app.runtime.onnx import ModelArtifact

logger = logging.getLogger("ray.serve")


class PinWatch:
    def _init_pins(self) -> None:
        self._pins: dict[str, int] = {}  # the last good file's
        self._pins_text: str | None = None  # the text last parsed, good or not
        self._pins_read: dict[str, Any] = {"read_at": None, "error": None}
        self._pin_checks: dict[str, PinCheck] = {}
        self._pin_missing: set[tuple[str, int]] = set()  # pinned versions the registry lacks
        self._pin_problems: dict[str, str] = {}  # model → why its pinned version is not serving
        self._pin_notes: dict[tuple[str, str], str] = {}  # (model, topic) → detail recorded

    # -- each poll ------------------------------------------------------------------------
    async def _pinned_champions(self, models: dict[str, RegisteredModelInfo]) -> dict[str, int]:
        """The champions the plan should serve: the pins merged with the `champion` aliases."""
        self._read_pins()
        self._pin_checks = check_pins(self._pins, self._aliases)
        for key in sorted(self._pin_missing):
            if await self._io(self._registry.has_version, *key):
                self._pin_missing.discard(key)  # registered since: try it
        for name, version in self._pins.items():
            if name in self._rollouts and name in models:
                self._end_rollout(name, "rollout_cancelled", f"pinned to v{version}")
        champions = {n: a[CHAMPION] for n, a in self._aliases.items() if CHAMPION in a}
        serving = {name: artifact.version for name, artifact in self._champions.items()}
        unservable = set(self._broken) | self._pin_missing
        return desired_champions(champions, self._pins, set(models), serving, unservable)

    def _challenger_of(self, name: str, info: RegisteredModelInfo) -> int | None:
        """The challenger to follow: the alias's, or none for a pinned model."""
        check = self._pin_checks.get(name)
        if check is None:
            return info.aliases.get(CHALLENGER)
        ignored = check.ignored_challenger
        detail = ignored and f"@challenger v{ignored} gets no traffic: pinned to v{check.version}"
        self._note(name, "challenger", "challenger_ignored", detail, ignored)
        return None

    async def _settle_pins(self) -> None:
        """After the champions were adopted: each pin's agreement and serving state."""
        problems = {}
        for name, check in self._pin_checks.items():
            agreed = ("pin_agrees", f"@champion agrees with the pin: v{check.version}")
            disagreement = check.disagreement
            self._note(name, "agreement", "pin_disagrees", disagreement, check.version, agreed)
            serving = self._champions.get(name)
            if check.registered and (serving is None or serving.version != check.version):
                problems[name] = await self._pin_problem(name, check.version, serving)
            self._note(name, "serving", "pin_unservable", problems.get(name), check.version)
        self._pin_problems = problems

    async def _pin_problem(self, name: str, version: int, serving: ModelArtifact | None) -> str:
        key = (name, version)
        if key in self._broken:
            why = f"pinned v{version} failed to load ({self._broken[key]})"
        elif key in self._pin_missing or not await self._io(self._registry.has_version, *key):
            self._pin_missing.add(key)
            why = f"pinned v{version} does not exist in the registry"
        else:
            why = f"pinned v{version} is not loaded yet (the registry may be unreachable)"
        meanwhile = f"v{serving.version} serves" if serving else "@champion serves, if it can"
        return f"{why}; {meanwhile} until the pin is fixed"

    def _read_pins(self) -> None:
        """Parse the pins file when its text changed; on an error keep the last good pins."""
        path = self._settings.registry.pins_file
        try:
            text = "" if path is None else Path(path).read_text()
        except OSError as error:
            self._pins_text = None  # parse it again once it is back
            self._pins_failed(f"cannot read {path}: {error.strerror or error}")
            return
        if text == self._pins_text:
            return
        self._pins_text = text
        try:
            pins = parse_pins(text)
        except PinsError as error:
            self._pins_failed(f"{path}: {error}")
            return
        self._pins_read.update(read_at=time.time(), error=None)
        for name, version in pin_changes(self._pins, pins).items():
            self._pin_notes = {key: v for key, v in self._pin_notes.items() if key[0] != name}
            if version is None:
                self._record(name, "pin_removed", f"unpinned in {path}: @champion decides again")
            else:
                self._record(name, "pin_set", f"pinned to v{version} by {path}", version)
        self._pins = pins
        self._pin_missing = {key for key in self._pin_missing if pins.get(key[0]) == key[1]}

    def _pins_failed(self, reason: str) -> None:
        if self._pins_read["error"] == reason:
            return
        self._pins_read["error"] = reason
        logger.warning("pins file unusable, keeping the last good pins: %s", reason)
        for name, version in self._pins.items():
            self._record(name, "pins_file_error", f"{reason}; v{version} stays pinned", version)

    def _note(
        self,
        name: str,
        topic: str,
        kind: str,
        detail: str | None,
        version: int | None = None,
        resolved: tuple[str, str] | None = None,
    ) -> None:
        """Record `kind` when a pin's `topic` takes a new detail, `resolved` when it clears."""
        key = (name, topic)
        previous = self._pin_notes.get(key)
        if detail == previous:
            return
        if detail is None:
            del self._pin_notes[key]
            if resolved is not None:
                self._record(name, *resolved, version)
            return
        self._pin_notes[key] = detail
        self._record(name, kind, detail, version)

    # -- what the operator sees and may do ------------------------------------------------
    def _pin_refusal(self, name: str) -> str | None:
        """Why a manual promote, canary or rollback is refused: the model is pinned."""
        version = self._pins.get(name)
        if version is None:
            return None
        return (
            f"model '{name}' is pinned to v{version} by the pins file "
            f"({self._settings.registry.pins_file}): change the pin there, in a reviewed commit"
        )

    def _pin_status(self, name: str) -> dict[str, Any] | None:
        check = self._pin_checks.get(name)
        if check is None:
            return None
        route = self._table.get(name)
        return {
            "version": check.version,
            "agrees": check.agrees,
            "disagreement": check.disagreement,
            "serving": route is not None and route.champion == check.version,
            "problem": self._pin_problems.get(name),
            "challenger_ignored": check.ignored_challenger,
        }

    def _pins_summary(self) -> dict[str, Any]:
        return {
            "file": self._settings.registry.pins_file,
            **self._pins_read,
            "pinned": dict(self._pins),
            "unknown_models": sorted(n for n, c in self._pin_checks.items() if not c.registered),
        }

    def _export_pins(self) -> None:
        """Refreshed on every poll with the other gauges (Ray evicts a stale gauge)."""
        for name in self._table.routes:
            check = self._pin_checks.get(name)
            disagrees = check is not None and not check.agrees
            self._metrics.pin_disagrees.set(float(disagrees), tags={"model": name})
        self._metrics.pins_file_error.set(float(self._pins_read["error"] is not None))
