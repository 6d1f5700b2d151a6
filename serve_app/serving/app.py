"""Build the Serve application from settings: what `serve deploy`, `serve run` and `up` call.

`configs/serve_config.yaml` names `serve_app.serving.app:build_app` as its import path
and passes the settings as `args`.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve_app.serving.controller import Controller
from serve_app.serving.pool import ScoringPool
from serve_app.settings import AppSettings


def build_app(args: dict[str, Any] | None = None) -> Application:
    settings = AppSettings.model_validate(args or {}).resolved()
    pool = settings.pool
    config = settings.model_dump(mode="json")
    controller = Controller.options(user_config=config).bind()
    return ScoringPool.options(
        user_config=config,
        max_ongoing_requests=pool.max_ongoing_requests,
        ray_actor_options={"num_cpus": pool.num_cpus},
        autoscaling_config={
            "min_replicas": pool.min_replicas,
            "initial_replicas": pool.min_replicas,
            "max_replicas": pool.max_replicas,
            "target_ongoing_requests": pool.target_ongoing_requests,
            "upscale_delay_s": pool.upscale_delay_s,
            "downscale_delay_s": pool.downscale_delay_s,
        },
    ).bind(controller)
