"""Build the Serve application from settings: what `serve deploy`, `serve run` and `up` call.

`configs/serve_config.yaml` names `serve_app.serving.app:build_app` as its import path
and passes the settings as `args`. The application is three kinds of deployment: the
control actor, the router (the ingress, with the fast lane), and one deployment per
model pool declared in the settings, each in its own runtime environment.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve_app.serving.auth import load_access
from serve_app.serving.controller import Controller
from serve_app.serving.pools import ModelPool, pool_deployment_name
from serve_app.serving.router import Router
from serve_app.settings import AppSettings, ModelPoolSettings, Scaling

ROUTER_POLICY = "serve_app.core.autoscaling:BusyTarget"


def build_app(args: dict[str, Any] | None = None) -> Application:
    settings = AppSettings.model_validate(args or {}).resolved()
    load_access(settings.admin)  # a bad tokens file fails here, before any replica starts
    config = settings.model_dump(mode="json")
    controller = Controller.options(user_config=config).bind()
    pools = {pool.name: _pool(pool, config, controller) for pool in settings.pools}
    router = settings.router
    policy = {"policy_function": ROUTER_POLICY, "policy_kwargs": {"target": router.target_busy}}
    return Router.options(
        user_config=config,
        max_ongoing_requests=router.max_ongoing_requests,
        ray_actor_options={"num_cpus": router.num_cpus},
        autoscaling_config={**router.autoscaling_config(), "policy": policy},
        **router.shedding(),
        **_placement(router),
    ).bind(controller, pools)


def _placement(scaling: Scaling) -> dict[str, Any]:
    """Serve's per-node bound, only when set (Serve's default is unbounded)."""
    per_node = scaling.max_replicas_per_node
    return {} if per_node is None else {"max_replicas_per_node": per_node}


def _pool(pool: ModelPoolSettings, config: dict[str, Any], controller) -> Application:
    actor_options: dict[str, Any] = {"num_cpus": pool.num_cpus}
    if pool.runtime_env:
        actor_options["runtime_env"] = pool.runtime_env
    if pool.resources:
        actor_options["resources"] = pool.resources
    return ModelPool.options(
        name=pool_deployment_name(pool.name),
        user_config=config,
        max_ongoing_requests=pool.max_ongoing_requests,
        ray_actor_options=actor_options,
        autoscaling_config=pool.autoscaling_config(),
        **pool.shedding(),
        **_placement(pool),
    ).bind(controller, pool.name)
