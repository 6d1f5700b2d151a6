"""The router autoscales 1 → more → 1 under load on the layout `serve-app up` ships
(HAProxy, least connections), with no failed request, each new replica opening each
model at most once, and a hot model answered by every replica.

Behaviour, not speed: the delays are short and the bounds generous;
benchmarks/router_scaling.py measures the timings side by side with the header hash."""

from __future__ import annotations

import yaml

from serve_app.registry.seed import DEMO_MODELS
from tests.conftest import wait_until
from tests.e2e.up import ROOT, serve_app_up, user_env
from tests.integration.helpers import Traffic, call

PORT = 8128
SCALING = {
    "min_replicas": 1,
    "max_replicas": 3,
    "upscale_delay_s": 2,
    "downscale_delay_s": 5,
    "num_cpus": 0.5,
}


def replicas(url: str) -> dict[str, dict]:
    return call(f"{url}/admin/models")[1]["replicas"]


def test_the_router_scales_out_and_back_in_under_load(tmp_path, seeded_home):
    config = yaml.safe_load((ROOT / "configs/serve_config.yaml").read_text())
    args = config["applications"][0]["args"]
    args["router"] = {**args["router"], **SCALING}
    args["pools"] = []  # the router is what scales here
    config_file = tmp_path / "serve_config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    options = ("--config", str(config_file), "--home", str(seeded_home), "--no-seed")
    with serve_app_up(tmp_path, PORT, *options, env=user_env(RAY_AUTH_MODE="disabled")):
        url = f"http://127.0.0.1:{PORT}"
        assert len(replicas(url)) == 1
        seen: dict[str, dict] = {}  # every replica's latest report, gone ones too

        def observed() -> dict[str, dict]:
            now = replicas(url)
            seen.update(now)
            return now

        def scaled_out() -> bool:
            return len(observed()) >= 2

        with Traffic(url, DEMO_MODELS[0], workers=16) as heavy:
            wait_until(scaled_out, timeout=150, interval=1, what="the router to scale out")
            wait_until(  # every replica answers the one hot model of this load
                lambda: len([r for r in observed().values() if r["requests"] > 0]) >= 2,
                timeout=30,
                interval=1,
                what="the new replica to take requests",
            )
        assert not heavy.failures, heavy.failures[:3]
        with Traffic(url, DEMO_MODELS[0], workers=1, pause_s=0.02) as light:
            wait_until(
                lambda: len(observed()) == 1,
                timeout=150,
                interval=1,
                what="the router to scale back in",
            )
        assert not light.failures, light.failures[:3]
        # The LRU holds every model, so a replica opens each model once at most: more opens
        # than models would be the thrash a remapping balancer causes.
        models = len(call(f"{url}/admin/models")[1]["models"])
        assert all(0 < info["model_opens"] <= models for info in seen.values()), seen
