"""The README's flows as a user runs them: `serve-app up`, its printed curl, Ctrl-C;
then `ray start --head` + `serve deploy configs/serve_config.yaml`, and a settings change
deployed again under load."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import http_ready, wait_until
from tests.e2e.up import BIN, ROOT, serve_app_up, user_env
from tests.integration.helpers import Traffic, call, v2_payload

UP_PORT = 8124
DEPLOY_PORT = 8125
DASHBOARD_PORT = 8275


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    """A user's working folder: the default home `./.serve-app` lands here."""
    return tmp_path_factory.mktemp("user")


def test_serve_app_up_seeds_serves_and_stops_on_ctrl_c(project_dir):
    with serve_app_up(project_dir, UP_PORT, env=user_env()) as lines:
        output = "".join(lines)
        assert re.search(r"\[54/54\] fraud-\S+ v1 registered", output), output[-2000:]
        ready = re.search(r"serve-app is ready: (\d+) models", output)
        assert ready and int(ready.group(1)) >= 50
        curl = output.split("Open Inference Protocol V2):\n", 1)[1].split("\nor with", 1)[0]
        scored = subprocess.run(
            ["bash", "-c", curl.replace("\\\n", " ")], capture_output=True, text=True, timeout=30
        )
        assert '"model_name":"fraud-card-eu"' in scored.stdout, scored.stdout + scored.stderr
        assert re.search(r'"data":\[0\.\d+', scored.stdout)
        assert (project_dir / ".serve-app" / "mlflow.db").is_file()
        console = re.search(r"the operator console, in a browser: (\S+)\n", output)
        assert console and console.group(1) == f"http://127.0.0.1:{UP_PORT}/ui", output[-2000:]
        assert _answers(console.group(1))  # the page itself: tests/integration/test_console.py


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_serve_deploy_config_then_settings_change_under_load(project_dir):
    """Needs the home seeded by the test above (run in the same folder, as a user would)."""
    assert (project_dir / ".serve-app" / "mlflow.db").is_file()
    config = yaml.safe_load((ROOT / "configs/serve_config.yaml").read_text())
    config["http_options"]["port"] = DEPLOY_PORT
    config_file = project_dir / "serve_config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = user_env(RAY_AUTH_MODE="disabled")
    # `--block` keeps the head in this process group, so the test stops only its own cluster.
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            "6391",
            "--dashboard-port",
            str(DASHBOARD_PORT),
            "--include-dashboard",
            "true",
            "--num-cpus",
            "2",
            "--disable-usage-stats",
        ],
        cwd=project_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
    url = f"http://127.0.0.1:{DEPLOY_PORT}"
    try:
        wait_until(
            lambda: _answers(f"{dashboard}/api/serve/applications/"),
            timeout=180,
            interval=1,
            what="the Ray dashboard",
        )
        deploy = [str(BIN / "serve"), "deploy", str(config_file), "-a", dashboard]
        done = subprocess.run(
            deploy, cwd=project_dir, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until(
            lambda: http_ready(url), timeout=180, interval=1, what="serve deploy to be ready"
        )
        rows = [[1.0] * 12] * 50
        assert call(f"{url}/v2/models/fraud-card-eu/infer", v2_payload(rows))[0] == 200

        before = call(f"{url}/admin/models")[1]
        history = call(f"{url}/admin/models/fraud-card-eu/history")[1]["events"]
        assert history, "the control actor recorded nothing to keep"

        config["applications"][0]["args"]["limits"]["max_rows"] = 10
        config_file.write_text(yaml.safe_dump(config))
        with Traffic(url, "fraud-card-eu", workers=4) as traffic:
            done = subprocess.run(
                deploy, cwd=project_dir, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stdout + done.stderr
            wait_until(
                lambda: call(f"{url}/v2/models/fraud-card-eu/infer", v2_payload(rows))[0] == 422,
                timeout=120,
                what="the new row limit to take effect",
            )
        assert not traffic.failures, traffic.failures[:3]
        # What a settings-only deploy does on Ray 2.60: it rebuilds the application (Ray
        # hashes `args` into the code version), so the control actor and every replica are
        # new; the event history outlives them (settings.HistorySettings).
        after = call(f"{url}/admin/models")[1]
        assert after["controller_epoch"] != before["controller_epoch"]
        wait_until(  # the old replicas are gone (status forgets silent ones after 10 s)
            lambda: not set(call(f"{url}/admin/models")[1]["replicas"]) & set(before["replicas"]),
            timeout=60,
            what="the old replicas to be replaced",
        )
        kept = call(f"{url}/admin/models/fraud-card-eu/history")[1]["events"]
        assert kept[: len(history)] == history
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=120)
