"""The control actor's promotion when the candidate can no longer be loaded: a rollback
with its own reason, not an error-rate one. The registry is a stand-in (no Ray, no MLflow):
the decision under test is the actor's own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from serve_app.core.rollout import Rollout
from serve_app.history import EventLog
from serve_app.registry.mlflow_registry import RegistryError
from serve_app.serving.controller import Controller
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
