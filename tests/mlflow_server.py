"""A real `mlflow server` of a test's own: started on a port, stopped by its PID, and
started again on the same port with the same stores (the fault drills stop it mid-rollout).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import wait_until

BIN = Path(sys.executable).parent  # `mlflow server` runs uvicorn from the venv's bin


class MlflowServer:
    """`mlflow server` over a backend store and an artifact location, on 127.0.0.1:`port`.

    `serve_artifacts` proxies artifacts through the server (`--artifacts-destination`);
    without it the clients read and write `artifacts` themselves (a file artifact store).
    """

    def __init__(
        self,
        port: int,
        backend_store_uri: str,
        artifacts: Path,
        log: Path,
        serve_artifacts: bool = False,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        stores = ["--backend-store-uri", backend_store_uri]
        if serve_artifacts:
            stores += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
        else:
            stores += ["--default-artifact-root", str(artifacts)]
        self._command = [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
            *("--port", str(port), "--workers", "1", *stores),
        ]
        self._process: subprocess.Popen | None = None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 120) -> None:
        """Start it (its own process group: it forks its web server) and wait until healthy."""
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        self._process = subprocess.Popen(
            self._command,
            env=env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = self._process
        wait_until(lambda: self.healthy() or process.poll() is not None, timeout, 0.5, "mlflow")
        assert self.healthy(), f"mlflow server did not start:\n{self.log.read_text()[-3000:]}"

    def stop(self) -> None:
        """SIGTERM to the process group this object started, by its PID; wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        wait_until(lambda: not self.healthy(), 30, 0.2, "the mlflow server's port to close")


@contextmanager
def mlflow_server(
    port: int, backend_store_uri: str, artifacts: Path, log: Path, **options
) -> Iterator[MlflowServer]:
    """A started `MlflowServer`, stopped on exit."""
    server = MlflowServer(port, backend_store_uri, artifacts, log, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
