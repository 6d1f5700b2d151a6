"""Model pools: deployments with a Python environment of their own, behind the router.

A model that needs other libraries than the router's (another onnxruntime, say) is
served by a pool declared in the settings with its own `runtime_env`. The router keeps
the version choice (canary, pinning) and calls the pool through a handle with the
chosen version as Serve's multiplexed model id; Serve routes the call to a pool replica
that has that version open and each replica keeps an LRU of versions: the pattern Ray
supports for multiplexing (on a deployment behind the ingress, not on the ingress).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serve_app.metrics import ScoringMetrics
from serve_app.protocol.errors import (
    Conflict,
    NotFound,
    NotReady,
    Overloaded,
    ServeAppError,
    for_status,
)
from serve_app.runtime.onnx import OnnxModel
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

METRICS_FLUSH_S = 1.0


def pool_deployment_name(pool: str) -> str:
    return f"ModelPool-{pool}"


def model_id(name: str, version: int) -> str:
    """The multiplexed id of one version: Serve's routing key for the pool call."""
    return f"{name}@{version}"


def parse_model_id(value: str) -> tuple[str, int]:
    name, _, version = value.rpartition("@")
    return name, int(version)


@dataclass(frozen=True)
class PoolAnswer:
    """A pool's answer: scores and the runtime that made them, or the error to report.

    Errors travel as values, not exceptions, so the router maps them to the same
    statuses as fast-lane errors without depending on how Ray wraps remote exceptions.
    """

    scores: np.ndarray | None = None
    threshold: float = 0.5  # the scoring version's alert threshold
    runtime: str = ""
    status: int = 200
    error: str = ""


# No access log: writing a line per request costs more than scoring the row.
@serve.deployment(
    logging_config={"enable_access_log": False, "log_level": "WARNING"},
    graceful_shutdown_wait_loop_s=0.5,  # checks for requests in flight when stopping
)
class ModelPool:
    def __init__(self, controller: DeploymentHandle, pool: str) -> None:
        self._controller = controller
        self._pool = pool
        self._metrics = ScoringMetrics()
        self._open_version = None
        self._flusher: asyncio.Task | None = None

    async def reconfigure(self, config: dict[str, Any]) -> None:
        if self._open_version is not None:  # the LRU bound is fixed for a replica's life
            return
        settings = AppSettings.model_validate(config)
        pool = next(p for p in settings.pools if p.name == self._pool)

        async def open_version(value: str) -> OnnxModel:  # Serve keeps its LRU on it
            return await self._open(value)

        self._open_version = serve.multiplexed(
            max_num_models_per_replica=pool.max_models_per_replica
        )(open_version)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def score(self, batch: np.ndarray) -> PoolAnswer:
        try:
            model = await self._open_version(serve.get_multiplexed_model_id())
            return PoolAnswer(model.predict(batch), model.threshold, model.runtime)
        except ServeAppError as error:
            return PoolAnswer(status=error.status, error=error.message)
        except Exception as error:  # a broken environment must not kill the replica
            logger.exception("pool %s failed to score", self._pool)
            return PoolAnswer(status=500, error=f"pool {self._pool} failed: {type(error).__name__}")

    async def _open(self, value: str) -> OnnxModel:
        name, version = parse_model_id(value)
        started = time.perf_counter()
        found = await self._controller.artifact.remote(name, version)
        if found is None:
            raise NotFound(f"model '{name}' has no version {version}")
        if isinstance(found, str):
            raise Conflict(f"version {version} of model '{name}' failed its load check")
        model = await asyncio.to_thread(OnnxModel, found)
        self._metrics.model_loads.inc(tags={"model": name})
        self._metrics.model_load_seconds.observe(
            time.perf_counter() - started, tags={"model": name}
        )
        return model

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self._metrics.flush()


class PoolLane:
    """The router's side: score one version on the pool that serves its model."""

    def __init__(self, handles: dict[str, DeploymentHandle]) -> None:
        self._handles = handles

    async def score(self, pool: str, name: str, version: int, batch: np.ndarray) -> PoolAnswer:
        handle = self._handles.get(pool)
        if handle is None:
            raise NotReady(f"pool '{pool}' is not deployed")
        options = handle.options(multiplexed_model_id=model_id(name, version))
        try:
            answer: PoolAnswer = await options.score.remote(batch)
        except BackPressureError as error:  # the pool's queue is full: shed, not queued
            raise Overloaded(
                f"pool '{pool}' is overloaded; retry later", error.status_code, error.retry_after_s
            ) from None
        if answer.status != 200:
            raise for_status(answer.status, answer.error)
        return answer
