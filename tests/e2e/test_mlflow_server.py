"""serve-app against a real `mlflow server` over HTTP, backed by PostgreSQL: seed through
the server, then `up`. The test starts its own PostgreSQL cluster from the server binaries;
without them it skips, or fails under `CI=true` (`tests/needs.py`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.up import BIN, CLI, serve_app_up, user_env
from tests.integration.helpers import call, v2_payload
from tests.needs import missing, tool

MLFLOW_PORT = 8177
POSTGRES_PORT = 8178
UP_PORT = 8126
POSTGRES_TOOLS = ("initdb", "pg_ctl", "createdb")
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")  # <version>/bin, not on PATH by default


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _version(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in folder.name.split(".") if part.isdigit())


def postgres_tools() -> dict[str, str]:
    """initdb, pg_ctl and createdb: all on PATH, else all from Debian's newest version."""
    versions = sorted(DEBIAN_POSTGRES.glob("*/bin"), key=lambda b: _version(b.parent))
    for path in (None, *map(str, reversed(versions))):
        found = {name: shutil.which(name, path=path) for name in POSTGRES_TOOLS}
        if all(found.values()):
            return found
    missing(
        "PostgreSQL server binaries (initdb, pg_ctl, createdb)",
        f"`apt-get install postgresql` (.ci/run does); looked on PATH and in {DEBIAN_POSTGRES}",
    )


@pytest.fixture(scope="module")
def backend_store() -> Iterator[str]:
    """A PostgreSQL cluster of the test's own, on its own port, as the mlflow backend store.

    PostgreSQL refuses to run as root, so the cluster belongs to the `postgres` user.
    """
    tools = postgres_tools()
    as_postgres = (tool("runuser", "`apt-get install util-linux`"), "-u", "postgres", "--")
    folder = Path(tempfile.mkdtemp(prefix="serve-app-pg-"))
    folder.chmod(0o755)
    shutil.chown(folder, "postgres")
    _run(*as_postgres, tools["initdb"], "-D", f"{folder}/db", "-U", "postgres", "-A", "trust")
    options = f"-p {POSTGRES_PORT} -k {folder} -c listen_addresses=127.0.0.1"
    _run(
        *as_postgres,
        tools["pg_ctl"],
        "-D",
        f"{folder}/db",
        "-o",
        options,
        "-l",
        f"{folder}/log",
        "-w",
        "start",
    )
    try:
        host = ("-h", "127.0.0.1", "-p", str(POSTGRES_PORT))
        _run(*as_postgres, tools["createdb"], *host, "mlflow")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{POSTGRES_PORT}/mlflow"
    finally:
        _run(*as_postgres, tools["pg_ctl"], "-D", f"{folder}/db", "-m", "fast", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(backend_store, tmp_path_factory):
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    log = artifacts.parent / "mlflow-server.log"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    process = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            backend_store,
            "--serve-artifacts",
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(MLFLOW_PORT),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{MLFLOW_PORT}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    try:
        wait_until(lambda: healthy() or process.poll() is not None, 120, 1, "mlflow server")
        assert healthy(), f"mlflow server did not start:\n{log.read_text()[-3000:]}"
        yield url, artifacts
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_seed_and_serve_from_a_tracking_server(mlflow_server, tmp_path):
    url, server_artifacts = mlflow_server
    env = user_env(MLFLOW_TRACKING_URI=url)
    seeded = subprocess.run(
        [*CLI, "seed", "--count", "3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert seeded.returncode == 0, seeded.stderr
    assert "seeded 3 model(s)" in seeded.stdout
    assert list(server_artifacts.rglob("model.onnx")), "artifacts must live in the server's store"
    assert not (tmp_path / ".serve-app" / "artifacts").exists() or not list(
        (tmp_path / ".serve-app" / "artifacts").rglob("model.onnx")
    )

    service = f"http://127.0.0.1:{UP_PORT}"
    with serve_app_up(tmp_path, UP_PORT, "--no-seed", env=env) as lines:
        assert f"registry: {url}" in "".join(lines)
        status, answer, headers = call(f"{service}/v2/models/fraud-card-eu/infer", v2_payload())
        assert status == 200 and headers["x-model-version"] == "1", answer
        assert call(f"{service}/admin/models")[1]["registry_uri"] == url
