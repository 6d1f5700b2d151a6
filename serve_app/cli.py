"""`serve-app`: run the service, look at it, and register models into it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from serve_app import cli_drift, cli_labels, cli_state, demo_drift
from serve_app.cli_http import admin, get_json, read_or_exit
from serve_app.proxy_env import LOCAL_SHUTDOWN_ENV, fast_ingress_env
from serve_app.settings import APP_NAME, AppSettings

DEFAULT_CONFIG = Path("configs/serve_config.yaml")
DEFAULT_URL = "http://127.0.0.1:8000"
READY_TIMEOUT_S = 180


def _load_config(path: Path | None) -> dict[str, Any]:
    path = path or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is None:
        return {"applications": [{"name": APP_NAME, "args": {}}]}
    return yaml.safe_load(path.read_text())


def _settings(args: argparse.Namespace) -> AppSettings:
    settings = AppSettings.from_serve_config(_load_config(args.config))
    if args.home:
        os.environ["SERVE_APP_HOME"] = str(args.home)
    return settings.resolved()


def _registry(settings: AppSettings):
    from serve_app.registry.mlflow_registry import Registry

    Path(settings.home).mkdir(parents=True, exist_ok=True)
    return Registry(settings.registry.tracking_uri or "", settings.artifacts_dir)


# -- up -------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    document = _load_config(args.config)
    http_options = {
        **(document.get("http_options") or {}),
        **({"port": args.port} if args.port else {}),
    }
    host, port = http_options.get("host", "127.0.0.1"), int(http_options.get("port", 8000))
    print(f"serve-app home: {settings.home}\nregistry: {settings.registry.tracking_uri}")
    registry = _registry(settings)
    if not args.no_seed and not registry.sweep(settings.registry.model_filter):
        from serve_app.registry.seed import DEMO_MODELS, seed_demo_models

        print(f"seeding {len(DEMO_MODELS)} demo fraud models (first run only) ...")
        started = time.perf_counter()
        seed_demo_models(registry)
        print(f"seeded in {time.perf_counter() - started:.1f} s")

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from serve_app.serving.app import build_app

    address = os.environ.get("RAY_ADDRESS") or "local"
    haproxy_dir = None
    if address == "local":  # a cluster of our own: Ctrl-C stops it in seconds
        for key, value in LOCAL_SHUTDOWN_ENV.items():
            os.environ.setdefault(key, value)
    if address == "local" and not args.default_ingress:
        haproxy_dir = tempfile.mkdtemp(prefix="sa-haproxy-")
        for key, value in fast_ingress_env(haproxy_dir).items():
            os.environ.setdefault(key, value)
    print(f"starting Ray ({'local cluster' if address == 'local' else address}) ...")
    ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Ctrl-C stops `up` even when started from a script's `&`, which ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        serve.start(http_options={"host": host, "port": port})
        print("deploying the Serve application ...")
        serve.run(build_app(settings.model_dump()), name=APP_NAME, route_prefix="/")
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        models = _wait_ready(url)
        print(f"\nserve-app is ready: {models} models at {url}")
        _print_examples(url, registry, settings)
        print(f"the operator console, in a browser: {url}/ui")
        print("\nCtrl-C to stop.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nshutting down ...", flush=True)
    finally:
        stopping = time.perf_counter()
        serve.shutdown()
        print(f"Serve stopped in {time.perf_counter() - stopping:.1f} s", flush=True)
        ray.shutdown()
        print(f"Ray stopped in {time.perf_counter() - stopping:.1f} s", flush=True)
        if haproxy_dir:
            shutil.rmtree(haproxy_dir, ignore_errors=True)
    # Everything `up` started is stopped: the interpreter's teardown of Ray's and MLflow's
    # modules would only add about 3 s to Ctrl-C (measured). An error above still raises.
    sys.stderr.flush()
    os._exit(0)


def _wait_ready(url: str) -> int:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            return int(get_json(f"{url}/v2/health/ready")["models"])
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            if time.monotonic() > deadline:
                raise SystemExit(f"not ready within {READY_TIMEOUT_S} s") from None
            time.sleep(0.5)


def _print_examples(url: str, registry, settings: AppSettings) -> None:
    from serve_app.registry.mlflow_registry import CHAMPION

    names = sorted(
        n
        for n, info in registry.sweep(settings.registry.model_filter).items()
        if CHAMPION in info.aliases
    )
    if not names:
        return
    name = next((n for n in names if n == "fraud-card-eu"), names[0])
    fetched = registry.fetch(name, registry.sweep(f"name = '{name}'")[name].aliases[CHAMPION])
    row = [round(float(x), 4) for x in fetched.input_example[0]]
    v2_body = {
        "inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]
    }
    records = {"dataframe_records": [dict(zip(fetched.artifact.features, row, strict=True))]}
    print("\nscore a transaction (Open Inference Protocol V2):")
    print(
        f"  curl -s {url}/v2/models/{name}/infer -H 'content-type: application/json' \\\n"
        f"    -d '{json.dumps(v2_body)}'"
    )
    print("or with MLflow's scoring format:")
    print(
        f"  curl -s {url}/models/{name}/invocations -H 'content-type: application/json' \\\n"
        f"    -d '{json.dumps(records)}'"
    )
    print(f"models, versions and what is loaded: curl -s {url}/admin/models")


# -- status ------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = get_json(f"{args.url}/admin/models")
    except (urllib.error.URLError, OSError) as error:
        settings = _settings(args)
        models = _registry(settings).sweep(settings.registry.model_filter)
        status = {
            "service": f"not reachable at {args.url} ({error})",
            "registry_uri": settings.registry.tracking_uri,
            "models": {n: {"aliases": info.aliases, "serving": None} for n, info in models.items()},
        }
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"registry: {status.get('registry_uri')}")
    if "service" in status:
        print(f"service: {status['service']}")
    else:
        print(
            f"replicas: {', '.join(status['replicas']) or 'none'}; last poll: {status['last_poll']}"
        )
    print(f"{'model':<24} {'aliases':<28} {'serving':<26} loaded on")
    for name, model in status["models"].items():
        aliases = " ".join(f"@{a}=v{v}" for a, v in sorted(model["aliases"].items()))
        serving = model.get("serving")
        served = (
            "-"
            if not serving
            else f"v{serving['champion']}"
            + (
                f" + v{serving['challenger']} at {serving['challenger_weight']:g}%"
                if serving.get("challenger")
                else ""
            )
        )
        loaded = len(model.get("loaded_on", []))
        pin, pinned = model.get("pin"), ""
        if pin:
            pinned = f"  pinned v{pin['version']}" + ("" if pin["agrees"] else " (disagrees)")
        print(f"{name:<24} {aliases:<28} {served:<26} {loaded} replica(s){pinned}")
    return 0


# -- register -----------------------------------------------------------------------------
def cmd_register(args: argparse.Namespace) -> int:
    from serve_app.registry.register import RegistrationError, register_file

    settings = _settings(args)
    try:
        version = register_file(
            _registry(settings),
            args.model_file,
            args.name,
            alias=args.alias,
            eval_set=args.eval_set,
            threshold=args.threshold,
        )
    except RegistrationError as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    alias = f" and set @{args.alias}" if args.alias else ""
    print(f"registered {args.name} version {version}{alias}")
    return 0


# -- rollouts (admin API) -------------------------------------------------------------------
def cmd_canary(args: argparse.Namespace) -> int:
    return admin(args, "canary", {"weight": args.weight})


def cmd_promote(args: argparse.Namespace) -> int:
    return admin(args, "promote")


def cmd_rollback(args: argparse.Namespace) -> int:
    return admin(args, "rollback")


def cmd_history(args: argparse.Namespace) -> int:
    query = f"?since={urllib.parse.quote(args.since)}" if args.since else ""
    events = read_or_exit(args.url, f"/admin/models/{args.name}/history{query}")["events"]
    if args.json:
        print(json.dumps(events, indent=2))
        return 0
    for event in events:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["at"]))
        version = f"v{event['version']}" if event["version"] is not None else ""
        who = f" (by {event['principal']})" if event.get("principal") else ""
        print(f"{stamp}  {event['kind']:<18} {version:<5} {event['detail']}{who}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from serve_app.registry.seed import DEMO_MODELS, seed_demo_models

    seeded = seed_demo_models(_registry(_settings(args)), count=args.count or len(DEMO_MODELS))
    print(f"seeded {len(seeded)} model(s)")
    return 0


def cmd_k8s(args: argparse.Namespace) -> int:
    from serve_app import k8s

    return k8s.main(["--check"] if args.check else [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve-app", description=__doc__)
    _global_options(parser, default=None)
    # The same options after the subcommand too, as people type them (`up --home DIR`);
    # there they default to "not given", so a value before the subcommand still counts.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="seed on first run, start Ray and serve until Ctrl-C", parents=[common]
    )
    up.add_argument("--port", type=int, help="HTTP port (default from the config file: 8000)")
    up.add_argument("--no-seed", action="store_true", help="never seed demo models")
    up.add_argument(
        "--default-ingress",
        action="store_true",
        help="keep Ray Serve's default proxy instead of the HAProxy ingress",
    )
    up.set_defaults(func=cmd_up)

    status = commands.add_parser(
        "status", help="models, versions, aliases, weights, loaded", parents=[common]
    )
    status.add_argument("--json", action="store_true")
    status.add_argument("--url", default=DEFAULT_URL)
    status.set_defaults(func=cmd_status)

    register = commands.add_parser(
        "register", help="register a LightGBM or ONNX model file", parents=[common]
    )
    register.add_argument("model_file", type=Path)
    register.add_argument("--name", required=True)
    register.add_argument("--alias", choices=["champion", "challenger"])
    register.add_argument("--eval-set", type=Path, help="CSV of features plus is_fraud")
    register.add_argument(
        "--threshold",
        type=float,
        help="the version's alert threshold (default: matched to the champion's alert rate "
        "on the evaluation set)",
    )
    register.set_defaults(func=cmd_register)

    for name, func, text in (
        ("canary", cmd_canary, "set the challenger's traffic weight by hand"),
        ("promote", cmd_promote, "make the challenger the champion now"),
        ("rollback", cmd_rollback, "abort the rollout, or move champion back to the previous"),
        ("history", cmd_history, "the model's rollout and serving events"),
    ):
        command = commands.add_parser(name, help=text, parents=[common])
        command.add_argument("name")
        command.add_argument("--url", default=DEFAULT_URL)
        command.set_defaults(func=func)
        if name == "canary":
            command.add_argument("--weight", type=float, required=True, help="percent, 0-100")
        if name == "history":
            command.add_argument("--json", action="store_true")
            command.add_argument(
                "--since", help="only events since a Unix time or an age: 30m, 2h, 7d"
            )

    cli_labels.add_commands(commands, common, _settings, DEFAULT_URL)
    cli_drift.add_commands(commands, common, DEFAULT_URL)
    cli_state.add_commands(commands, common, DEFAULT_URL)
    demo_drift.add_commands(commands, common)

    seed = commands.add_parser(
        "seed", help="register the demo models the registry lacks", parents=[common]
    )
    seed.add_argument("--count", type=int)
    seed.set_defaults(func=cmd_seed)

    k8s = commands.add_parser("k8s", help="Kubernetes manifests", parents=[common])
    k8s_commands = k8s.add_subparsers(dest="k8s_command", required=True)
    render = k8s_commands.add_parser(
        "render", help="render the RayService from the config", parents=[common]
    )
    render.add_argument("--check", action="store_true", help="fail if the committed file drifted")
    render.set_defaults(func=cmd_k8s)
    return parser


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        help=f"Serve config file (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--home", type=Path, default=default, help="state folder (default ./.serve-app)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SystemExit as done:  # a command that could not go on: its code, or its reason
        if isinstance(done.code, int):
            return done.code
        print(done.code, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
