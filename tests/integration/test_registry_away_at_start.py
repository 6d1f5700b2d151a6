"""A router replica that cannot get its first routing table never counts as started: with
MLflow away, the application stays DEPLOYING (so KubeRay's upgrade keeps the old cluster
serving) instead of going RUNNING and answering 503 to everything, and it goes RUNNING once
a real `mlflow server` comes up on the address it was given."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ray import serve
from ray._private.state import actors  # the debugging API: no dashboard needed

from serve_app.proxy_env import free_port
from serve_app.serving.app import build_app
from tests.conftest import wait_until
from tests.mlflow_server import MlflowServer

APP = "registry-away"
HELD_BACK_S = 70.0


def router_actors_alive() -> bool:
    """A router replica's actor is running (its constructor and reconfigure), not waiting
    for resources. From the GCS's actor table: this session runs no dashboard."""
    alive = actors(actor_state_name="ALIVE").values()
    return any(a["ActorClassName"] == f"ServeReplica:{APP}:Router" for a in alive)


def router_logs() -> str:
    """The tail of this app's router replica logs, for a failure message."""
    import ray

    context = ray.get_runtime_context()
    folder = Path(context.get_temp_dir()) / context.get_session_name() / "logs" / "serve"
    paths = [*folder.glob(f"replica_{APP}_Router_*"), *folder.glob("controller_*")]
    return "\n".join(path.read_text()[-6000:] for path in paths)


def app_status() -> str | None:
    found = serve.status().applications.get(APP)
    return None if found is None else getattr(found.status, "value", found.status)


def test_the_app_waits_for_the_registry_and_serves_once_it_answers(service, tmp_path):
    port = free_port()
    args = {
        "home": str(tmp_path / "home"),
        "registry": {"tracking_uri": f"http://127.0.0.1:{port}", "poll_interval_s": 0.5},
        "router": {"min_replicas": 1, "max_replicas": 1, "num_cpus": 0.1, "preload_top_k": 0},
        "pools": [],
    }
    deploy = threading.Thread(
        target=serve.run,
        args=(build_app(args),),
        kwargs={"name": APP, "route_prefix": f"/{APP}"},
        daemon=True,
    )
    deploy.start()
    mlflow = None
    try:
        wait_until(router_actors_alive, timeout=60, what="the router replica to be running")
        # The replica runs, the registry does not answer: still not started after longer than
        # the 60 s after which a replica used to give up waiting and take traffic unready.
        time.sleep(HELD_BACK_S)
        assert deploy.is_alive(), f"serve.run returned before a table:\n{router_logs()}"
        assert app_status() == "DEPLOYING"

        stores = (f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
        mlflow = MlflowServer(port, *stores, tmp_path / "mlflow.log")
        mlflow.start()
        deploy.join(timeout=120)
        assert not deploy.is_alive(), "the app never went RUNNING once MLflow answered"
        assert app_status() == "RUNNING"
    finally:
        serve.delete(APP)
        if mlflow is not None:
            mlflow.stop()
