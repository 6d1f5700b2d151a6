"""Run `serve-app up` as a user does: a foreground process, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from tests.conftest import http_ready, wait_until

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]
CLI = [str(BIN / "serve-app"), "--config", str(ROOT / "configs/serve_config.yaml")]
STOP_BUDGET_S = 10.0  # from Ctrl-C to exit


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no serve-app or MLflow variables unless given."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("SERVE_APP_HOME", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, **extra}


@contextmanager
def serve_app_up(cwd: Path, port: int, *options: str, env: dict[str, str]) -> Iterator[list[str]]:
    """Yields the output lines once it is ready; on exit sends SIGINT and checks a clean stop:
    exit code 0 within `STOP_BUDGET_S` of Ctrl-C, and none of the processes it started (Ray's
    GCS, raylet, workers, HAProxy) left running."""
    process = subprocess.Popen(
        [*CLI, "up", "--port", str(port), *options],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    try:
        wait_until(
            lambda: any("Ctrl-C to stop" in line for line in lines),
            timeout=300,
            interval=1,
            what="serve-app up to become ready",
        )
        yield lines
    finally:
        started = psutil.Process(process.pid).children(recursive=True)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=90)
        took = time.monotonic() - interrupted
    assert code == 0, "".join(lines[-40:])
    assert "shutting down" in "".join(lines)
    assert took <= STOP_BUDGET_S, f"Ctrl-C took {took:.1f} s to stop:\n{''.join(lines[-20:])}"
    _, alive = psutil.wait_procs(started, timeout=5)
    assert not alive, f"left running after Ctrl-C: {[p.pid for p in alive]}"
    assert not http_ready(f"http://127.0.0.1:{port}")
