"""The servers compared: how to install, start and address each one.

Ports 8300-8399 only (clear of Serve's 8000, the dashboard, Redis and Ray's worker range;
density.py passes its own range, 8400-8449); each server gets its preferred port, or the
next free one when another run holds it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.models import CANARY_EVERY, CANARY_WEIGHT
from benchmarks.payloads import Kind
from benchmarks.servers import Server, port_is_free
from serve_app.proxy_env import FAST_INGRESS_ENV, LOCAL_SHUTDOWN_ENV
from serve_app.registry.seed import POOLED_DEMO_MODELS

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
MLSERVER_REQUIREMENTS = ("mlserver==1.7.1", "mlserver-lightgbm==1.7.1", "uvloop<0.22")
MULTIPLEX_HEADER = "serve_multiplexed_model_id"

PORTS = {"serve-app": 8300, "fastapi": 8340, "mlserver": 8320, "mlflow": 8330}
PORT_RANGE = range(8300, 8400)
_handed_out: set[int] = set()


def free_port(preferred: int, ports: range = PORT_RANGE) -> int:
    """`preferred`, or the next port in `ports` that is free and not handed out yet."""
    start = ports.index(preferred)
    for port in [*ports[start:], *ports[:start]]:
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {ports}")


def ray_side_ports(ports: range = PORT_RANGE) -> dict[str, str]:
    """Ray Serve's fixed fallback-proxy ports, moved into our range (`serve-app up`
    already gives HAProxy's stats and metrics ports free ones)."""
    return {
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port(ports[-8], ports)),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port(ports[-7], ports)),
    }


# `serve-app up` turns the fast ingress on unless told otherwise: a variant without it
# must say so explicitly (the CLI only fills in variables that are not set).
FAST_INGRESS_OFF = {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
# Start/stop housekeeping only (no effect on steady-state numbers): no traffic is left to
# drain when a benchmark stops serve-app (30 s defaults), and a proxy that takes over 5 s
# to start on a busy 2-core machine must not be killed (that fails `serve.start`).
HOUSEKEEPING = {**LOCAL_SHUTDOWN_ENV, "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30"}
HAPROXY = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_BALANCE_ALGORITHM": f"hdr({MULTIPLEX_HEADER})",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    "RAY_SERVE_HAPROXY_NBTHREAD": "1",
}
THROUGHPUT_OPTIMIZED = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


@dataclass(frozen=True)
class Workspace:
    """The benchmark's work folder and what every peer is built from."""

    root: Path
    models: tuple[str, ...]
    src: Path | None = None  # benchmark the serve_app package found here instead

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.registry.resolve()}/mlflow.db"

    def log(self, name: str) -> Path:
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
        return self.root / "logs" / f"{slug}.log"

    def env(self) -> dict[str, str]:
        if self.src is None:
            return {}
        path = os.pathsep.join(p for p in (str(self.src), os.environ.get("PYTHONPATH")) if p)
        return {"PYTHONPATH": path}


@dataclass(frozen=True)
class Peer:
    """One server to benchmark and how the load generator talks to it."""

    label: str
    server: Server
    url: str  # loadgen URL template ({model})
    kind: Kind
    models: tuple[str, ...]
    model_header: str | None = None
    notes: str = ""
    cold_start: bool = False  # models load on first use: measure it
    canaries: tuple[str, ...] = ()  # models measured while a challenger takes a share
    warm: tuple[str, ...] = ()  # models scored once before measuring (a pool's first start)
    headers: tuple[tuple[str, str], ...] = ()  # sent on every load-generator request

    @property
    def base_url(self) -> str:
        return "/".join(self.url.split("/")[:3])


@dataclass(frozen=True)
class ServeAppVariant:
    """A serve-app configuration: Serve config file, Ray environment, client header."""

    label: str
    config: Path
    env: dict[str, str]
    header: bool
    client_headers: tuple[tuple[str, str], ...] = ()  # more headers on every request
    src: Path | None = None  # run the serve_app package found here (another commit's)

    @property
    def description(self) -> str:
        flags = [k.removeprefix("RAY_SERVE_") + "=" + v for k, v in self.env.items()]
        sent = "".join(f"; client sends {k}: {v}" for k, v in self.client_headers)
        return (
            f"{self.config.name}; {' '.join(flags) or 'Serve defaults'}"
            + (f"; header {MULTIPLEX_HEADER}" if self.header else "; no header")
            + sent
            + (f"; serve_app from {self.src}" if self.src else "")
        )


BEST_VARIANT = ServeAppVariant(  # what `serve-app up` ships (serve_app/proxy_env.py)
    "serve-app",
    BENCH_DIR / "serve_config.bench.yaml",
    {k: v for k, v in FAST_INGRESS_ENV.items() if k.startswith("RAY_SERVE_HAPROXY_")}
    | {"RAY_SERVE_ENABLE_HA_PROXY": "1", **THROUGHPUT_OPTIMIZED},
    header=False,
)


def serve_app(
    ws: Workspace,
    variant: ServeAppVariant = BEST_VARIANT,
    ports: range = PORT_RANGE,
    canaries: tuple[str, ...] | None = None,
) -> Peer:
    """serve-app under `variant`; `canaries` default: the models models.start_canaries picks."""
    canaries = ws.models[::CANARY_EVERY] if canaries is None else canaries
    forget_traffic(ws)
    port = free_port(PORTS["serve-app"] if ports == PORT_RANGE else ports[0], ports)
    command = [str(VENV_BIN / "serve-app"), "--config", str(variant.config)]
    command += ["--home", str(ws.registry.resolve()), "up", "--port", str(port), "--no-seed"]
    server = Server(
        variant.label,
        command,
        f"http://127.0.0.1:{port}/v2/health/ready",
        ws.log(variant.label),
        env={
            **(replace(ws, src=variant.src).env() if variant.src else ws.env()),
            **ray_side_ports(ports),
            **HOUSEKEEPING,
            **FAST_INGRESS_OFF,
            **variant.env,
            "RAY_AUTH_MODE": "disabled",
        },
        cwd=ws.root,
    )
    return Peer(
        variant.label,
        server,
        f"http://127.0.0.1:{port}/v2/models/{{model}}/infer",
        "v2",
        ws.models,
        model_header=MULTIPLEX_HEADER if variant.header else None,
        notes=variant.description
        + (f"; canary {CANARY_WEIGHT:g}% on {len(canaries)} models" if canaries else ""),
        cold_start=True,
        canaries=canaries,
        warm=tuple(name for name in POOLED_DEMO_MODELS if name in ws.models),
        headers=variant.client_headers,
    )


def forget_traffic(ws: Workspace) -> None:
    """Start each serve-app run with an empty prediction log and label store.

    The registry stays; what earlier runs logged goes. The quality and drift work in the
    background grows with what those hold (about 10 more points of idle CPU after 150,000
    rows on SQLite), which would favour whichever variant ran first.
    """
    shutil.rmtree(ws.registry / "predictions", ignore_errors=True)
    for path in ws.registry.glob("labels.db*"):
        path.unlink()


def serve_app_pool(ws: Workspace) -> Peer:
    """serve-app measured on its pooled demo models only: router → model pool, one more hop
    and another environment (onnxruntime 1.20.1), beside the fast-lane row."""
    peer = serve_app(ws, canaries=())
    return replace(
        peer,
        label="serve-app (pool model)",
        models=POOLED_DEMO_MODELS,
        notes=f"{peer.notes}; only {', '.join(POOLED_DEMO_MODELS)}, scored on its model pool",
        cold_start=False,
    )


def fastapi(ws: Workspace, onnx_dir: Path) -> Peer:
    port = free_port(PORTS["fastapi"])
    command = [sys.executable, "-m", "benchmarks.fastapi_baseline"]
    command += ["--models-dir", str(onnx_dir.resolve()), "--port", str(port)]
    server = Server(
        "fastapi-ort",
        command,
        f"http://127.0.0.1:{port}/v2/health/ready",
        ws.log("fastapi-ort"),
        cwd=REPO_DIR,  # `-m benchmarks...`; the baseline imports nothing from serve_app
        stop_grace_s=10.0,
    )
    url = f"http://127.0.0.1:{port}/v2/models/{{model}}/infer"
    notes = "one uvicorn process, all models in memory, intra_op_num_threads=1"
    return Peer("fastapi+ort", server, url, "v2", ws.models, notes=notes)


def install_mlserver(ws: Workspace, progress: Callable[[str], None]) -> Path:
    """MLServer in its own virtual environment (its pins clash with Ray's); cached."""
    venv = ws.root / "mlserver-venv"
    marker = venv / "installed.txt"
    wanted = "\n".join(MLSERVER_REQUIREMENTS)
    if marker.is_file() and marker.read_text() == wanted:
        return venv
    progress(f"installing {', '.join(MLSERVER_REQUIREMENTS)} into {venv} (about a minute)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    log = ws.log("mlserver-install")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", *MLSERVER_REQUIREMENTS],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    marker.write_text(wanted)
    return venv


def mlserver(ws: Workspace, venv: Path, repository: Path) -> Peer:
    port = free_port(PORTS["mlserver"])
    home = repository.parent
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(port + 1),
        "metrics_port": free_port(port + 2),
        "parallel_workers": 0,
        "load_models_at_startup": True,
        "model_repository_root": str(repository.resolve()),
    }
    (home / "settings.json").write_text(json.dumps(settings, indent=2))
    server = Server(
        "mlserver",
        [str(venv / "bin" / "mlserver"), "start", str(home.resolve())],
        f"http://127.0.0.1:{port}/v2/health/ready",
        ws.log("mlserver"),
        env={"OMP_NUM_THREADS": "1", "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"},
        cwd=home,
        stop_grace_s=15.0,
    )
    url = f"http://127.0.0.1:{port}/v2/models/{{model}}/infer"
    notes = "MLServer 1.7.1 + mlserver-lightgbm, parallel_workers 0, OMP_NUM_THREADS=1"
    return Peer("mlserver-lightgbm", server, url, "mlserver-v2", ws.models, notes=notes)


def mlflow_serve(ws: Workspace, model: str = "fraud-card-eu", version: int = 1) -> Peer:
    port = free_port(PORTS["mlflow"])
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{model}/{version}"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    server = Server(
        "mlflow-serve",
        command,
        f"http://127.0.0.1:{port}/ping",
        ws.log("mlflow-serve"),
        env={
            **ws.env(),
            "MLFLOW_TRACKING_URI": ws.tracking_uri,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        },
        cwd=ws.root,
        stop_grace_s=15.0,
    )
    url = f"http://127.0.0.1:{port}/invocations"
    notes = f"mlflow models serve, ONE model ({model}), MLflow dataframe_split"
    return Peer("mlflow-serve (1 model)", server, url, "mlflow", (model,), notes=notes)
