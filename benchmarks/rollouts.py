"""How long a rollout takes, end to end: `register --alias challenger` → 100% traffic, and a
guard breach → rollback. Runs `serve-app up` on its own home and drives bounded load.

    python -m benchmarks.rollouts [--policy default|fast|both]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import lightgbm as lgb

from serve_app.registry.mlflow_registry import Registry
from serve_app.registry.seed import synthetic_transactions, train_booster
from serve_app.serving.controller import POLICY_TAG

BIN = Path(sys.executable).parent
PORT = 8310
URL = f"http://127.0.0.1:{PORT}"
FAST = {"steps": [10, 50, 100], "step_dwell_s": 1.5, "step_min_requests": 15}
LOAD_RPS = 60
MAX_WAIT_S = 900


def _get(path: str) -> dict:
    with urllib.request.urlopen(f"{URL}{path}", timeout=10) as answer:
        return json.loads(answer.read())


def _load(model: str, rows: list[list[float]], stop: threading.Event) -> None:
    """About LOAD_RPS single-row requests a second with routing keys, until stopped."""
    n = 0
    while not stop.is_set():
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 12],
                        "datatype": "FP32",
                        "data": rows[n % len(rows)],
                    }
                ]
            }
        ).encode()
        request = urllib.request.Request(
            f"{URL}/v2/models/{model}/infer", data=body, headers={"x-routing-key": f"k{n}"}
        )
        try:
            urllib.request.urlopen(request, timeout=10).read()
        except OSError as error:
            print(f"  request failed: {error}")
        n += 1
        time.sleep(1.0 / LOAD_RPS)


def _events(model: str) -> list[dict]:
    return _get(f"/admin/models/{model}/history")["events"]


def _wait_for(model: str, version: int, kinds: set[str]) -> dict:
    deadline = time.monotonic() + MAX_WAIT_S
    while time.monotonic() < deadline:
        for event in _events(model):
            if event["version"] == version and event["kind"] in kinds:
                return event
        time.sleep(0.5)
    raise TimeoutError(f"{model} v{version}: none of {kinds} within {MAX_WAIT_S} s")


def _register(home: Path, model_file: Path, name: str) -> tuple[int, float]:
    started = time.time()
    done = subprocess.run(
        [
            str(BIN / "serve-app"),
            "--home",
            str(home),
            "register",
            str(model_file),
            "--name",
            name,
            "--alias",
            "challenger",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split(" version ")[1].split()[0]), started


def _candidate(folder: Path, name: str, **params) -> Path:
    frame, labels = synthetic_transactions(name, 6_000, "retrain")
    booster = (
        train_booster(frame, labels)
        if not params
        else lgb.train(
            {"objective": "binary", "num_leaves": 15, "verbose": -1, **params},
            lgb.Dataset(frame, labels),
            60,
        )
    )
    path = folder / f"{name}-{len(params)}.txt"
    booster.save_model(path)
    return path


def measure(home: Path, registry: Registry, name: str, policy: dict | None, shifted: bool) -> dict:
    registry.set_model_tag(name, POLICY_TAG, json.dumps(policy or {}))
    rows = registry.eval_set(name)[0][:500].tolist()
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(name, rows, stop), daemon=True)
    loader.start()
    try:
        params = {"scale_pos_weight": 400} if shifted else {}
        version, started = _register(home, _candidate(home, name, **params), name)
        gate = _wait_for(name, version, {"gate_passed", "gate_rejected"})
        end = _wait_for(name, version, {"promoted", "rolled_back"})
    finally:
        stop.set()
        loader.join(timeout=30)
    steps = [e for e in _events(name) if e["version"] == version and e["kind"] == "step_reached"]
    return {
        "model": name,
        "policy": "fast" if policy else "default",
        "candidate": "shifted scores" if shifted else "retrained",
        "gate_s": gate["at"] - started,
        "steps": len(steps),
        "outcome": end["kind"],
        "register_to_end_s": end["at"] - started,
        "gate_to_end_s": end["at"] - gate["at"],
        "detail": end["detail"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", choices=["default", "fast", "both"], default="both")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="serve-app-rollouts-"))
    env = {**os.environ, "SERVE_APP_HOME": str(home)}
    print(f"starting serve-app up on :{PORT} (home {home}) ...")
    server = subprocess.Popen(
        [str(BIN / "serve-app"), "up", "--port", str(PORT)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    results = []
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                _get("/v2/health/ready")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("serve-app did not start") from None
                time.sleep(1)
        registry = Registry(f"sqlite:///{home / 'mlflow.db'}", home / "artifacts")
        plans = [("fraud-card-eu", FAST, False), ("fraud-card-us", FAST, True)]
        if args.policy in ("default", "both"):
            plans.append(("fraud-card-uk", None, False))
        if args.policy == "default":
            plans = plans[2:]
        for name, policy, shifted in plans:
            print(
                f"rollout of {name} ({'fast' if policy else 'default'} policy, "
                f"{'shifted' if shifted else 'retrained'} candidate) ..."
            )
            results.append(measure(home, registry, name, policy, shifted))
            print(f"  {results[-1]['outcome']} after {results[-1]['register_to_end_s']:.1f} s")
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=120)
    header = "| policy | candidate | gate s | steps | outcome | register → end s | gate → end s |"
    print(f"\n{header}\n|---|---|---:|---:|---|---:|---:|")
    for r in results:
        cells = (
            r["policy"],
            r["candidate"],
            f"{r['gate_s']:.1f}",
            r["steps"],
            r["outcome"],
            f"{r['register_to_end_s']:.1f}",
            f"{r['gate_to_end_s']:.1f}",
        )
        print("| " + " | ".join(map(str, cells)) + " |")
    out = Path(__file__).parent / "results" / "rollouts.json"
    out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
