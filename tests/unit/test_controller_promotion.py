"""The control actor's promotion when the candidate can no longer be loaded: a rollback
with its own reason, not an error-rate one. The registry is a stand-in (no Ray, no MLflow):
the decision under test is the actor's own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serve_app.core.rollout import Rollout
from serve_app.history import EventLog
from serve_app.registry.mlflow_registry import RegistryError
from serve_app.runtime.onnx import ModelArtifact
from serve_app.serving.controller import Controller
from serve_app.serving.rollout_steps import ROLLOUT_TAG
from serve_app.settings import AppSettings


class UnreadableStore:
    """A registry whose artifact store cannot be read; every write is remembered."""

    def __init__(self) -> None:
        self.writes: list[tuple] = []

    def fetch(self, name: str, version: int):
        raise RegistryError(f"{name} v{version}: the artifact store is unreadable")

    def __getattr__(self, method: str):
        return lambda *args: self.writes.append((method, *args))


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def inc(self, value: float = 1.0, tags: dict | None = None) -> None:
        self.calls.append(tags or {})


def test_an_unloadable_candidate_is_rolled_back_as_a_load_failure(tmp_path: Path):
    async def promote() -> tuple[Controller, UnreadableStore, Recorder]:
        controller = Controller.func_or_class()
        controller._settings = AppSettings()
        controller._registry = store = UnreadableStore()
        controller._history = EventLog(f"sqlite:///{tmp_path / 'history.db'}", 1.0)
        controller._metrics.rollbacks = rollbacks = Recorder()
        controller._metrics.load_failures = Recorder()
        rollout = Rollout.start("fraud-x", 3, 2, controller._settings.rollout, 0.0)
        controller._rollouts["fraud-x"] = rollout
        await controller._promote("fraud-x")
        return controller, store, rollbacks

    controller, store, rollbacks = asyncio.run(promote())
    assert rollbacks.calls == [{"model": "fraud-x", "reason": "load_failed"}]
    assert "fraud-x" not in controller._rollouts
    assert ("delete_alias", "fraud-x", "challenger") in store.writes
    assert not any(write[0] == "set_alias" for write in store.writes), "nothing was promoted"
    kinds = [e.kind for e in controller._history.read("fraud-x")]
    assert kinds == ["load_failed", "rolled_back"], kinds


class Away:
    """A registry that is not there: every call fails as MLflow's client does then."""

    def __getattr__(self, method: str):
        def fail(*args):
            raise ConnectionError("the registry is away")

        return fail


def _controller(tmp_path: Path, registry) -> Controller:
    controller = Controller.func_or_class()
    controller._settings = AppSettings()
    controller._registry = registry
    controller._history = EventLog(f"sqlite:///{tmp_path / 'history.db'}", 1.0)
    return controller


def test_a_step_the_registry_did_not_take_is_not_taken(tmp_path: Path):
    """MLflow away while a canary advances: the rollout holds its step (memory and the
    persisted tag agree), and no step is recorded that did not happen."""
    controller = _controller(tmp_path, Away())
    rollout = Rollout.start("fraud-x", 3, 2, controller._settings.rollout, 0.0)
    controller._rollouts["fraud-x"] = rollout
    advanced = rollout.at_step(1, controller._settings.rollout, 1.0)
    with pytest.raises(ConnectionError):
        asyncio.run(controller._save_rollout(advanced))
    assert controller._rollouts["fraud-x"] == rollout


def test_a_promotion_cut_short_is_finished_by_the_next_actor(tmp_path: Path):
    """Killed after `champion` moved, before `challenger` was removed: the next actor
    removes the alias and the rollout tag, and the history says the promotion ended."""
    store = UnreadableStore()
    controller = _controller(tmp_path, store)
    controller._champions["fraud-x"] = ModelArtifact("fraud-x", 3, b"", ("a",), 0.5)
    tag = Rollout.start("fraud-x", 3, 2, controller._settings.rollout, 0.0).to_json()
    asyncio.run(controller._follow_challenger("fraud-x", 3, {ROLLOUT_TAG: tag}))
    assert ("delete_alias", "fraud-x", "challenger") in store.writes
    assert ("delete_model_tag", "fraud-x", ROLLOUT_TAG) in store.writes
    (event,) = controller._history.read("fraud-x")
    assert (event.kind, event.version) == ("promoted", 3) and "cut short" in event.detail
    # killed after it removed `challenger` too: the tag alone tells, the history says so
    store.writes.clear()
    asyncio.run(controller._follow_challenger("fraud-x", None, {ROLLOUT_TAG: tag}))
    assert store.writes == [("delete_model_tag", "fraud-x", ROLLOUT_TAG)]
    assert [e.kind for e in controller._history.read("fraud-x")] == ["promoted", "promoted"]


def test_a_version_that_failed_its_check_is_checked_again_after_the_retry_delay(tmp_path):
    controller = _controller(tmp_path, UnreadableStore())
    controller._metrics.load_failures = failures = Recorder()
    for _ in range(2):  # the first check and a retry that fails the same way
        assert asyncio.run(controller._load_checked("fraud-x", 4)) is None
    assert len(failures.calls) == 2, "each failed check is counted"
    kinds = [e.kind for e in controller._history.read("fraud-x")]
    assert kinds == ["load_failed"], "the same reason is recorded once"
    assert controller._still_broken() == {("fraud-x", 4)}
    controller._broken_at[("fraud-x", 4)] -= controller._settings.registry.broken_retry_s + 1
    assert controller._still_broken() == set(), "due for another check"
