"""`serve-app demo drift`: the loop closed on one model in a few minutes, on this machine.

It seeds one demo model into a fresh home folder, starts `serve-app up` on it with the demo
policy (`DEMO_ARGS`: the shipped defaults, shortened for minutes instead of days), and sends
steady traffic with labels that arrive `--label-delay` seconds late. Then a new fraud
pattern arrives: amounts triple and frauds follow another model's weights. It prints each
step as the platform takes it, with no person in the loop: drift detected, retraining
started (refused and retried while the new pattern's labels are too few), challenger
registered, gate passed, canary steps, promoted. It stops by itself (promoted, rolled back,
refused by the gate, or `--timeout`), stops serve-app and removes the home folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from serve_app.cli_http import get_json
from serve_app.proxy_env import free_port

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MODEL = "fraud-card-eu"
ROWS_PER_REQUEST = 10
DEMO_ARGS = {  # what the demo changes from configs/serve_config.yaml, and why
    "registry": {"poll_interval_s": 1.0},
    "router": {"min_replicas": 1, "max_replicas": 1},
    "prediction_log": {"flush_interval_s": 1.0, "file_max_age_s": 2.0},  # readable in 2 s
    "quality": {"interval_s": 5.0},
    "drift": {"window_rows": 1_000, "min_window_span_s": 3.0},  # windows of seconds
    "retrain": {
        "data_window_days": 90 / 86_400,  # the last 90 s of traffic
        # counted since the drift began: the holdout is the newest quarter of them, so the
        # gate judges ~200 frauds of the new pattern and the threshold is set on it alone
        "min_labelled_rows": 20_000,
        "min_frauds": 800,
        "retry_s": 5.0,
        "cooldown_s": 0.0,
    },
    "rollout": {
        "steps": [10, 50, 100],
        "step_dwell_s": 10.0,
        "step_min_requests": 50,
        # a version retrained on drifted traffic scores it differently from the stale
        # champion by design; the score-distribution guard would stop what it should ship
        "guard_max_psi": 5.0,
        "guard_quality_min_labels": 200,
    },
}
FINAL = {"promoted", "rolled_back", "gate_rejected"}
MILESTONES = ("drift_detected", "retrain_started", "retrain_registered", "gate_passed", "promoted")
SHOWN = (
    "drift_detected",
    "retrain_started",
    "retrain_refused",
    "retrain_registered",
    "retrain_failed",
    "gate_passed",
    "gate_rejected",
    "step_reached",
    "promoted",
    "rolled_back",
    "champion_serving",
)


def new_pattern(name: str, rows: int, salt: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A new fraud pattern (another model's weights) on traffic whose amounts tripled."""
    from serve_app.registry.seed import synthetic_transactions

    frame, labels = synthetic_transactions(f"{name}-new-pattern", rows, salt)
    return frame.assign(amount=frame["amount"] * 3.0), labels


class Traffic(threading.Thread):
    """Closed-loop scoring with ids; labels posted `delay_s` after each answer."""

    def __init__(self, url: str, name: str, delay_s: float) -> None:
        super().__init__(daemon=True, name="demo-traffic")
        from serve_app.registry.seed import synthetic_transactions

        self.url, self.name, self.delay_s = url, name, delay_s
        self.steady = synthetic_transactions(name, 200_000, "demo-steady")
        self.shifted = new_pattern(name, 200_000, "demo-shifted")
        self.shift_at: float | None = None
        self.requests = self.failures = self.rows = 0
        self.stop = threading.Event()
        self._labels: deque[tuple[float, list[dict]]] = deque()

    def run(self) -> None:
        index = 0
        while not self.stop.is_set():
            frame, labels = self.shifted if self.shift_at else self.steady
            start = index * ROWS_PER_REQUEST % (len(labels) - ROWS_PER_REQUEST)
            rows = frame.iloc[start : start + ROWS_PER_REQUEST].to_numpy().ravel().tolist()
            request_id = f"demo-{index:07d}"
            body = {
                "id": request_id,
                "inputs": [{"name": "input", "shape": [ROWS_PER_REQUEST, 12],
                            "datatype": "FP32", "data": rows}],
            }  # fmt: skip
            if _post(f"{self.url}/v2/models/{self.name}/infer", body) == 200:
                outcome = labels[start : start + ROWS_PER_REQUEST]
                items = [{"request_id": request_id, "row": r, "label": int(y)}
                         for r, y in enumerate(outcome)]  # fmt: skip
                self._labels.append((time.time() + self.delay_s, items))
            else:
                self.failures += 1
            self.requests += 1
            index += 1
            self._send_due_labels()

    def _send_due_labels(self) -> None:
        due: list[dict] = []
        while self._labels and self._labels[0][0] <= time.time() and len(due) < 5_000:
            due += self._labels.popleft()[1]
        if due:
            _post(f"{self.url}/v2/models/{self.name}/feedback", due)


def _post(url: str, body: object) -> int:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return 0


POLICIES = {"demo": DEMO_ARGS, "default": {}}  # default: configs/serve_config.yaml as shipped


def serve_config(home: Path, overrides: dict) -> Path:
    shipped = Path(__file__).resolve().parents[1] / "configs" / "serve_config.yaml"
    document = yaml.safe_load(shipped.read_text())
    args = document["applications"][0]["args"]
    for section, values in overrides.items():
        args[section] = {**(args.get(section) or {}), **values}
    args["home"] = str(home)
    path = home / "demo_serve_config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class Result:
    policy: str
    outcome: str  # the final event's kind, or "timeout"
    timeline: list[tuple[float, str, str]]  # (seconds after the shift, kind, detail)
    requests: int
    failures: int
    lags_s: list[float]  # per judged window: judged at, minus its newest row's time


def demonstrate(
    policy: str, steady_s: float, label_delay_s: float, timeout_s: float, keep: bool, say
) -> Result:
    """One run of the loop on a fresh home; serve-app stopped and the home removed after."""
    home = Path(tempfile.mkdtemp(prefix="serve-app-demo-"))
    from serve_app.registry.mlflow_registry import Registry
    from serve_app.registry.seed import seed_demo_models

    say(f"home {home}; seeding {MODEL}")
    seed_demo_models(Registry(f"sqlite:///{home / 'mlflow.db'}", home / "artifacts"), 1, say)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("serve-app")), "--config"]
    command += [str(serve_config(home, POLICIES[policy])), "--home", str(home)]
    command += ["up", "--port", str(port), "--no-seed"]
    say(f"starting serve-app up with the {policy} policy ...")
    server = subprocess.Popen(command, stdout=(home / "up.log").open("w"), stderr=subprocess.STDOUT)
    traffic = Traffic(url, MODEL, label_delay_s)
    outcome, timeline, lags = "not started", [], []
    try:
        _wait_ready(url, server)
        say(f"serving at {url}; steady traffic for {steady_s:g} s, labels late by "
            f"{label_delay_s:g} s")  # fmt: skip
        traffic.start()
        time.sleep(steady_s)
        traffic.shift_at = time.time()
        say("NEW FRAUD PATTERN: amounts x3, frauds follow other weights")
        outcome, timeline, lags = _follow(url, traffic, timeout_s)
    finally:
        traffic.stop.set()
        if traffic.is_alive():
            traffic.join(timeout=30)
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    say(f"{traffic.requests:,} requests, {traffic.failures} failed; outcome: {outcome}")
    return Result(policy, outcome, timeline, traffic.requests, traffic.failures, lags)


def run(args: argparse.Namespace) -> int:
    started = time.time()

    def say(line: str) -> None:
        print(f"[{time.time() - started:6.1f} s] {line}", flush=True)

    result = demonstrate(args.policy, args.steady, args.label_delay, args.timeout, args.keep, say)
    return 0 if result.outcome == "promoted" and result.failures == 0 else 1


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("serve-app up exited; see its up.log (kept with --keep)")
        try:
            if get_json(f"{url}/v2/health/ready").get("models"):
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1.0)
    raise SystemExit("serve-app was not ready within 300 s")


def _follow(url: str, traffic: Traffic, timeout_s: float):
    """Print the model's events as they happen, timed from the shift: (final kind, timeline,
    the monitor's lag behind the log per judged window)."""
    shift = traffic.shift_at or time.time()
    seen, judged = 0, None
    timeline: list[tuple[float, str, str]] = []
    lags: list[float] = []
    while time.time() - shift < timeout_s:
        time.sleep(1.0)
        drift = get_json(f"{url}/admin/models/{MODEL}/drift", timeout=30)
        if drift["judged_at"] != judged and drift["last_window"]:
            judged = drift["judged_at"]
            lags.append(round(judged - drift["last_window"]["end"], 2))
        events = get_json(f"{url}/admin/models/{MODEL}/history", timeout=30)["events"]
        for event in events[seen:]:
            if event["kind"] in SHOWN and event["at"] >= shift:
                at = event["at"] - shift
                timeline.append((at, event["kind"], event["detail"]))
                version = f" v{event['version']}" if event.get("version") else ""
                print(
                    f"  +{at:6.1f} s  {event['kind']:<20}{version}  {event['detail']}", flush=True
                )
                if event["kind"] in FINAL:
                    _summary(timeline)
                    return event["kind"], timeline, lags
        seen = len(events)
    return "timeout", timeline, lags


def _summary(timeline: list[tuple[float, str, str]]) -> None:
    print("\ntimeline from the new pattern's first request:")
    for kind, at in first_times(timeline).items():
        print(f"  {kind:<20} +{at:.1f} s")


def first_times(timeline: list[tuple[float, str, str]]) -> dict[str, float]:
    """When each milestone first happened, in the loop's order."""
    firsts: dict[str, float] = {}
    for at, kind, _ in timeline:
        firsts.setdefault(kind, at)
    return {k: firsts[k] for k in MILESTONES if k in firsts}


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    demo = commands.add_parser("demo", help="demonstrations on a fresh home", parents=[common])
    kinds = demo.add_subparsers(dest="demo_command", required=True)
    drift = kinds.add_parser("drift", help=__doc__.split("\n")[0], parents=[common])
    drift.add_argument("--steady", type=float, default=30.0, help="seconds before the shift")
    drift.add_argument("--label-delay", type=float, default=10.0, help="seconds labels lag")
    drift.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    drift.add_argument("--keep", action="store_true", help="keep the home folder")
    drift.add_argument("--policy", choices=sorted(POLICIES), default="demo",
                       help="demo: DEMO_ARGS (minutes); default: the shipped config")  # fmt: skip
    drift.set_defaults(func=run)
