"""The control actor's pins room without Ray or MLflow: the file read on each poll, the
champions it hands the plan, what it records and refuses. The registry is a stand-in that
knows which versions exist; the decisions under test are the actor's own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serve_app.history import EventLog
from serve_app.registry.mlflow_registry import RegisteredModelInfo
from serve_app.runtime.onnx import ModelArtifact
from serve_app.serving.controller import Controller
from serve_app.settings import AppSettings


class Versions:
    """A registry that has the versions it is given, and nothing else."""

    def __init__(self, *versions: tuple[str, int]) -> None:
        self.versions = set(versions)

    def has_version(self, name: str, version: int) -> bool:
        return (name, version) in self.versions

    def delete_model_tag(self, name: str, key: str) -> None:
        pass


@pytest.fixture
def actor(tmp_path: Path):
    controller = Controller.func_or_class()
    pins = tmp_path / "pins.yaml"
    pins.write_text("pins: {}\n")
    controller._settings = AppSettings(registry={"pins_file": str(pins)})
    controller._registry = Versions(("a", 1), ("a", 2), ("a", 3), ("b", 1))
    controller._history = EventLog(f"sqlite:///{tmp_path / 'history.db'}", 1.0)
    controller.pins = pins
    return controller


MODELS = {
    "a": RegisteredModelInfo("a", {"champion": 2, "challenger": 3}),
    "b": RegisteredModelInfo("b", {"champion": 1}),
}


def poll(actor, pins: str | None = None) -> dict[str, int]:
    """One poll's pins work as reconcile does it; the plan's loads always succeed here."""
    if pins is not None:
        actor.pins.write_text(pins)

    async def run():
        actor._aliases = {name: info.aliases for name, info in MODELS.items()}
        champions = await actor._pinned_champions(MODELS)
        for name, version in champions.items():
            if actor._registry.has_version(name, version) and (name, version) not in actor._broken:
                actor._champions[name] = ModelArtifact(name, version, b"", ("x",))
        await actor._settle_pins()
        return champions

    return asyncio.run(run())


def kinds(actor, model: str) -> list[str]:
    return [e.kind for e in actor._history.read(model)]


def test_no_pins_leave_the_aliases_in_charge(actor):
    assert poll(actor) == {"a": 2, "b": 1}
    assert actor._challenger_of("a", MODELS["a"]) == 3
    assert actor._pin_refusal("a") is None and actor._pin_status("a") is None
    assert kinds(actor, "a") == []


def test_a_pin_outranks_the_alias_ignores_the_challenger_and_refuses_manual_changes(actor):
    assert poll(actor, "pins: {a: 1}\n") == {"a": 1, "b": 1}
    assert actor._challenger_of("a", MODELS["a"]) is None
    assert actor._challenger_of("a", MODELS["a"]) is None
    assert kinds(actor, "a") == ["pin_set", "pin_disagrees", "challenger_ignored"]
    events = {e.kind: e.detail for e in actor._history.read("a")}
    assert events["pin_disagrees"] == "pinned to v1; @champion is v2"
    assert "v3 gets no traffic" in events["challenger_ignored"]
    refusal = actor._pin_refusal("a")
    assert "pinned to v1" in refusal and str(actor.pins) in refusal
    assert kinds(actor, "b") == []
    poll(actor)  # the same file: nothing new recorded
    assert len(kinds(actor, "a")) == 3


def test_a_pin_that_agrees_is_quiet_and_one_that_comes_to_agree_says_so(actor):
    poll(actor, "pins: {b: 1}\n")
    assert kinds(actor, "b") == ["pin_set"]
    poll(actor, "pins: {a: 1}\n")
    MODELS["a"].aliases["champion"] = 1
    try:
        poll(actor)
    finally:
        MODELS["a"].aliases["champion"] = 2
    assert kinds(actor, "a")[-1] == "pin_agrees"
    assert kinds(actor, "b") == ["pin_set", "pin_removed"]


def test_removing_a_pin_returns_to_the_alias(actor):
    poll(actor, "pins: {a: 1}\n")
    assert poll(actor, "pins: {}\n")["a"] == 2
    assert actor._challenger_of("a", MODELS["a"]) == 3
    assert kinds(actor, "a")[-1] == "pin_removed"
    assert actor._pin_refusal("a") is None


def test_a_malformed_or_missing_file_keeps_the_last_good_pins_and_says_why(actor):
    poll(actor, "pins: {a: 1}\n")
    assert poll(actor, "pins: {a: one}\n")["a"] == 1
    summary = actor._pins_summary()
    assert "must be a registry version number" in summary["error"]
    assert summary["pinned"] == {"a": 1}
    poll(actor)
    assert kinds(actor, "a").count("pins_file_error") == 1, "recorded once, not every poll"
    actor.pins.unlink()
    assert poll(actor)["a"] == 1
    assert "cannot read" in actor._pins_summary()["error"]
    assert poll(actor, "pins: {a: 1}\n")["a"] == 1
    assert actor._pins_summary()["error"] is None


def test_a_pin_to_a_missing_version_keeps_the_last_good_one_until_it_exists(actor):
    poll(actor)
    assert poll(actor, "pins: {a: 9}\n")["a"] == 9  # tried once
    status = actor._pin_status("a")
    assert "v9 does not exist in the registry; v2 serves" in status["problem"]
    assert kinds(actor, "a")[-1] == "pin_unservable"
    assert poll(actor)["a"] == 2, "the last good version, not tried again every poll"
    actor._registry.versions.add(("a", 9))
    assert poll(actor)["a"] == 9, "registered since: the pin serves"
    assert actor._pin_status("a")["problem"] is None


def test_a_pinned_version_that_failed_its_check_is_reported(actor):
    poll(actor)
    actor._broken[("a", 3)] = "ModelLoadError: bad graph"
    assert poll(actor, "pins: {a: 3}\n")["a"] == 2
    assert "v3 failed to load (ModelLoadError: bad graph)" in actor._pin_status("a")["problem"]


def test_a_pin_of_a_model_the_registry_lacks_is_reported_not_served(actor):
    assert "zz" not in poll(actor, "pins: {zz: 1}\n")
    assert actor._pins_summary()["unknown_models"] == ["zz"]
    assert kinds(actor, "zz") == ["pin_set", "pin_disagrees"]
