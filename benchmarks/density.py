"""Density: hundreds of registered models from one 2-core machine, none of them failing.

    python -m benchmarks.density [--models 500] [--work DIR] [--out PATH] [--quick]

Why: the registry grows faster than the machines. This checks the claim that serve-app
serves far more models than fit in memory, with the busy ones resident and the rest
loaded on demand (Serve's per-replica LRU, `pool.max_models_per_replica`), without
failing a request, and says what a loaded model costs in memory.

What it does: seeds N registered models (`seed.demo_names`: the 54 demo models, then
numbered variants; reruns skip what is registered), starts `serve-app up` (2 pool
replicas, `preload_top_k` hot models, LRU of `max_models_per_replica`) on 127.0.0.1
ports 8400-8449, and drives the load generator (own process) with a Zipf-like mix over
all N models: the first `preload_top_k` names in sorted order (what replicas preload
before any traffic) take most requests and every model is asked at least once, so tail
models load on demand and evict each other. Every second or two it samples each pool
replica's RSS/PSS and loaded-model count (/admin/models); at the end it reads model
loads and evictions from Ray's Prometheus endpoint. Memory per loaded model is measured
two ways: the slope of pool RSS against models loaded while replicas fill up, and a
floor: K ONNX models opened with `OnnxModel` in a fresh process (RSS delta / K).
Writes OUT.md and OUT.json (default benchmarks/results/density); exit status 1 when a
request failed or a model never answered.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks import measure, models, peers, proctree
from benchmarks.peers import BENCH_DIR, Peer, Workspace
from benchmarks.run import Progress
from benchmarks.servers import running

PORTS = range(8400, 8450)
WORK_DIR = BENCH_DIR / ".work" / "density"
OUT = BENCH_DIR / "results" / "density"
ZIPF_S = 1.2  # request share of the model ranked k ~ 1 / k**s
COUNTERS = ("ray_serve_app_model_loads", "ray_serve_app_model_evictions")
LOG_PROBLEMS = ("ERROR", "Traceback", "WARNING", "WARN ")


DEFINITIONS = (
    "Hot: every request to the `preload_top_k` models the replicas open before any traffic. "
    "Cold: the first request to each other model (nothing had it loaded). Replica columns "
    "are sorted by replica id. RSS counts shared pages in every process, PSS splits them. "
    "Loaded counts are the controller's view (/admin/models, up to 2 s old); loads and "
    "evictions are serve-app's Prometheus counters, preloads included."
)


@dataclass(frozen=True)
class Setup:
    models: int
    lru: int  # pool.max_models_per_replica
    hot: int  # pool.preload_top_k: also the size of the hot set
    duration_s: float
    concurrency: int
    cycle: int  # length of the request sequence the load generator loops over
    floor_models: int  # K for the in-process ONNX floor
    sample_s: float


FULL = Setup(500, 128, 10, 75.0, 8, 3_000, 100, 1.0)
QUICK = Setup(8, 3, 2, 10.0, 4, 40, 8, 1.0)


# -- models and traffic --------------------------------------------------------------
def seed(ws: Workspace, progress: Callable[[str], None]) -> tuple[int, float]:
    """Register the workspace's models the registry lacks; returns how many, and seconds."""
    from serve_app.registry.mlflow_registry import Registry
    from serve_app.registry.seed import seed_model

    ws.registry.mkdir(parents=True, exist_ok=True)
    registry = Registry(ws.tracking_uri, ws.registry.resolve() / "artifacts")
    existing = registry.sweep()
    todo = [name for name in ws.models if name not in existing]
    progress(f"registry {ws.registry}: {len(ws.models) - len(todo)} there, {len(todo)} to seed")
    started = time.perf_counter()
    log = ws.log("seed")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as chatter, contextlib.redirect_stderr(chatter):  # MLflow's eprint
        for index, name in enumerate(todo, 1):
            seed_model(registry, name)
            spent = time.perf_counter() - started
            progress(f"  [{index}/{len(todo)}] {name} ({spent:.0f} s, {spent / index:.2f} s each)")
    return len(todo), round(time.perf_counter() - started, 1)


def hot_set(names: list[str], size: int) -> list[str]:
    """What replicas preload before any traffic (no traffic yet: by name)."""
    return sorted(names)[:size]


def traffic(names: list[str], length: int, s: float = ZIPF_S, seed: int = 7) -> list[str]:
    """A request sequence where the model ranked k (sorted names) gets ~1/k**s of it, every
    model at least once, each model's requests spread evenly through the sequence."""
    ranked = sorted(names)
    weights = 1.0 / np.arange(1, len(ranked) + 1) ** s
    counts = np.maximum(1, np.round(length * weights / weights.sum())).astype(int)
    rng = np.random.default_rng(seed)
    slots = [
        ((j + rng.random()) / count, name)
        for name, count in zip(ranked, counts, strict=True)
        for j in range(count)
    ]
    return [name for _, name in sorted(slots)]


def serve_config(ws: Workspace, setup: Setup) -> Path:
    """The benchmark config (2 fixed pool replicas) with this run's LRU size and hot set."""
    document = yaml.safe_load(peers.BEST_VARIANT.config.read_text())
    pool = document["applications"][0]["args"]["router"]
    pool.update(max_models_per_replica=setup.lru, preload_top_k=setup.hot)
    path = ws.root / "serve_config.density.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def server(ws: Workspace, setup: Setup) -> Peer:
    stats, metrics = peers.free_port(PORTS[-6], PORTS), peers.free_port(PORTS[-5], PORTS)
    env = {
        **peers.BEST_VARIANT.env,
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),  # else `up` picks any free port
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
        # replicas' own HTTP ports behind HAProxy (default 30000-31000, gRPC 40000-41000)
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(PORTS[10]),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(PORTS[24]),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(PORTS[25]),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(PORTS[39]),
        "RAY_metrics_report_interval_ms": "2000",  # counters reach Prometheus sooner
    }
    variant = peers.ServeAppVariant("serve-app-density", serve_config(ws, setup), env, True)
    peer = peers.serve_app(ws, variant, PORTS, canaries=())
    peer.server.stop_signal = signal.SIGTERM  # `up` stops cleanly on it; SIGINT may be ignored
    return peer


# -- the running server ------------------------------------------------------------------
def replica_id(pid: int) -> str:
    """The Serve replica id of a pool process, from its open replica log file."""
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd.path)
                if "replica_serve-app_Router_" in target:
                    return Path(target).stem.rsplit("_", 1)[-1]
    return f"pid {pid}"


def roles(tree: list[int]) -> dict[int, str]:
    """Pool replicas (by replica id) and serve-app's controller in a server's process tree."""
    found = {}
    for pid in tree:
        role = proctree.role(pid)
        if role == proctree.ROUTER_REPLICA:
            found[pid] = replica_id(pid)
        elif role == proctree.CONTROLLER_REPLICA:
            found[pid] = "controller"
    return found


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def memory(pids: dict[int, str]) -> dict[str, dict[str, float]]:
    """RSS and PSS of each process named in `pids` (PID → role)."""
    return {
        role: {
            "pid": pid,
            "rss_mb": round(proctree.rss_mb([pid]), 1),
            "pss_mb": round(proctree.pss_mb([pid]), 1),
        }
        for pid, role in pids.items()
    }


def sample(peer: Peer, pool: dict[int, str], started: float) -> dict[str, Any]:
    """Models loaded per replica (controller's view) and each pool replica's memory."""
    status = get_json(f"{peer.base_url}/admin/models")
    return {
        "t": round(time.perf_counter() - started, 2),
        "loaded": {r: info["loaded"] for r, info in status["replicas"].items()},
        "rss_mb": {role: round(proctree.rss_mb([pid]), 1) for pid, role in pool.items()},
    }


class Sampler(threading.Thread):
    def __init__(self, take: Callable[[], dict[str, Any]], every_s: float) -> None:
        super().__init__(daemon=True)
        self.take, self.every_s, self.samples = take, every_s, [take()]
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.samples.append(self.take())


def metrics_port(tree: list[int]) -> int | None:
    """Ray's Prometheus port, from the session folder named on the GCS's command line."""
    for pid in tree:
        for word in proctree.cmdline(pid).split():
            if word.startswith("--log_dir=") and "/session_" in word:
                session = Path(word.split("=", 1)[1]).parent
                for found in session.glob("metrics_export_port_*"):
                    return int(found.read_text().strip())
    return None


def metric_samples(port: int, names: tuple[str, ...]) -> list[tuple[str, dict[str, str], float]]:
    """(name without `_total`, labels, value) of every sample of `names` in Ray's
    Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return [
        (name, point.labels, point.value)
        for family in text_string_to_metric_families(text)
        for point in family.samples
        if (name := point.name.removesuffix("_total")) in names
    ]


def counters(port: int | None) -> dict[str, dict[str, float]]:
    """Model loads and evictions per replica, from Ray's Prometheus text."""
    found: dict[str, dict[str, float]] = {name: {} for name in COUNTERS}
    if port is None:
        return found
    for name, labels, value in metric_samples(port, COUNTERS):
        replica = labels.get("replica", "?").rsplit("#", 1)[-1]
        found[name][replica] = found[name].get(replica, 0.0) + value
    return found


def settled_counters(port: int | None, timeout_s: float = 30.0) -> dict[str, dict[str, float]]:
    """Counters once two reads agree (replicas report them every 2 s: see `server`)."""
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        time.sleep(2.5)
        current = counters(port)
        if current == last or time.monotonic() > deadline:
            return current
        last = current


def log_problems(log: Path, keep: int = 8) -> dict[str, Any]:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()]
    bad = [ln for ln in lines if any(word in ln for word in LOG_PROBLEMS)]
    return {"lines": len(bad), "first": list(dict.fromkeys(ln[:300] for ln in bad))[:keep]}


# -- memory floor ----------------------------------------------------------------------------
def onnx_floor_here(folder: Path) -> dict[str, Any]:
    """RSS per `OnnxModel` opened in this (fresh) process, after one to warm onnxruntime up."""
    from serve_app.registry.features import FEATURES
    from serve_app.runtime.onnx import ModelArtifact, OnnxModel

    files = sorted(folder.glob("*.onnx"))

    def open_model(path: Path) -> OnnxModel:
        name, _, version = path.stem.rpartition(".v")
        return OnnxModel(ModelArtifact(name, int(version), path.read_bytes(), FEATURES))

    opened = [open_model(files[0])]
    before = proctree.rss_mb([os.getpid()])
    opened += [open_model(path) for path in files[1:]]
    after = proctree.rss_mb([os.getpid()])
    count = len(opened) - 1
    return {
        "models": count,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "mb_per_model": round((after - before) / count, 3),
        "onnx_kb_mean": round(sum(f.stat().st_size for f in files[1:]) / count / 1024, 1),
    }


def onnx_floor(ws: Workspace, names: list[str], count: int) -> dict[str, Any]:
    folder = ws.root / f"onnx-floor-{count}"
    models.export_onnx(ws.registry, names[: count + 1], folder)
    command = [sys.executable, "-m", "benchmarks.density", "--onnx-floor", str(folder)]
    done = subprocess.run(
        command, cwd=peers.REPO_DIR, capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- analysis --------------------------------------------------------------------------------
def requests(trace: Path, hot: list[str]) -> dict[str, Any]:
    """Failures and latency from the load generator's per-request trace."""
    with trace.open() as source:
        rows = [
            (float(r["started_unix"]), r["model"], float(r["latency_ms"]), r["error"])
            for r in csv.DictReader(source)
        ]
    first: dict[str, tuple[float, float]] = {}
    for started, model, latency, _ in sorted(rows):
        first.setdefault(model, (started, latency))
    hot_ms = [latency for _, model, latency, _ in rows if model in hot]
    cold_ms = [latency for model, (_, latency) in first.items() if model not in hot]
    failed = collections.Counter(error for *_, error in rows if error)
    span = max(s + ms / 1000 for s, _, ms, _ in rows) - min(s for s, *_ in rows)
    return {
        "requests": len(rows),
        "failed": sum(failed.values()),
        "failures": dict(failed.most_common(5)),
        "models_answered": len({model for _, model, _, error in rows if not error}),
        "requests_per_s": round(len(rows) / span, 1),
        "hot_share": round(len(hot_ms) / len(rows), 3),
        "all": _percentiles([latency for _, _, latency, _ in rows]),
        "hot": _percentiles(hot_ms),
        "cold": _percentiles(cold_ms),
    }


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {"count": len(values), "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


def per_model_memory(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool RSS against models loaded (both replicas summed) while the replicas fill up:
    the least-squares slope, and the step from the hot set alone to the fullest point."""
    points = [(sum(s["loaded"].values()), sum(s["rss_mb"].values())) for s in samples]
    peak = max(range(len(points)), key=lambda i: points[i][0])
    ramp = np.array(points[: peak + 1], dtype=float)
    result: dict[str, Any] = {"samples": len(ramp), "loaded": [int(ramp[0, 0]), int(ramp[-1, 0])]}
    end = sum(samples[-1]["rss_mb"].values())
    result["rss_mb"] = [round(ramp[0, 1], 1), round(ramp[-1, 1], 1), round(end, 1)]
    (first_loaded, first_rss), (last_loaded, last_rss) = ramp[0], ramp[-1]
    if last_loaded > first_loaded:
        result["step_mb_per_model"] = round(
            (last_rss - first_rss) / (last_loaded - first_loaded), 3
        )
    if len(np.unique(ramp[:, 0])) >= 3:
        slope, intercept = np.polyfit(ramp[:, 0], ramp[:, 1], 1)
        fitted = slope * ramp[:, 0] + intercept
        total = float(((ramp[:, 1] - ramp[:, 1].mean()) ** 2).sum()) or 1.0
        result["slope_mb_per_model"] = round(float(slope), 3)
        result["r2"] = round(1 - float(((ramp[:, 1] - fitted) ** 2).sum()) / total, 3)
    return result


# -- the run ----------------------------------------------------------------------------------
def drive(ws: Workspace, peer: Peer, setup: Setup, names: list[str], progress) -> dict[str, Any]:
    """Load the running server; returns everything measured while it runs."""
    tree = peer.server.remember_tree()
    pool = {pid: role for pid, role in roles(tree).items() if role != "controller"}
    started = time.perf_counter()
    sampler = Sampler(lambda: sample(peer, pool, started), setup.sample_s)
    progress(f"hot set only: {sampler.samples[0]}")
    sequence = traffic(names, setup.cycle)
    trace = ws.root / "trace.csv"
    plan = measure.Plan(duration_s=setup.duration_s, warmup_s=0.0, max_requests=10_000_000)
    progress(
        f"traffic: {setup.duration_s:g} s at concurrency {setup.concurrency}, a {len(sequence)}"
        f"-request Zipf cycle (s={ZIPF_S}) over {len(names)} models"
    )
    sampler.start()
    try:
        loadgen = measure.load_point(
            dataclasses.replace(peer, models=tuple(sequence)),
            setup.concurrency,
            plan,
            ("--trace", str(trace)),
        )
    finally:
        sampler.done.set()
        sampler.join()
    progress(f"traffic done: {loadgen['requests_started']} requests")
    tree = peer.server.remember_tree()
    status = get_json(f"{peer.base_url}/admin/models")
    return {
        "loadgen": {k: v for k, v in loadgen.items() if k != "spec"},
        "requests": requests(trace, hot_set(names, setup.hot)),
        "samples": sampler.samples,
        "loaded_end": {r: info["loaded"] for r, info in status["replicas"].items()},
        "counters": settled_counters(metrics_port(tree)),
        "processes": memory(roles(tree)),
        "tree": {
            "processes": len(tree),
            "rss_mb": round(proctree.rss_mb(tree), 1),
            "pss_mb": round(proctree.pss_mb(tree), 1),
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from serve_app.registry.seed import demo_names

    setup = QUICK if args.quick else FULL
    setup = dataclasses.replace(setup, models=args.models or setup.models)
    ws = Workspace(args.work.resolve(), tuple(demo_names(setup.models)))
    ws.root.mkdir(parents=True, exist_ok=True)
    progress = Progress()
    names = list(ws.models)
    result: dict[str, Any] = {"setup": dataclasses.asdict(setup), "zipf_s": ZIPF_S}
    result["seeded"], result["seed_s"] = seed(ws, progress)
    result["registered"] = len(models._registry(ws.registry).sweep())
    floor_count = min(setup.floor_models, len(names) - 1)
    result["floor"] = onnx_floor(ws, names, floor_count)
    progress(f"onnxruntime floor: {result['floor']}")
    peer = server(ws, setup)
    progress(f"starting serve-app on {peer.base_url} (log: {peer.server.log})")
    with running(peer.server) as startup_s:
        result["startup_s"] = round(startup_s, 1)
        progress(f"ready in {startup_s:.1f} s")
        result |= drive(ws, peer, setup, names, progress)
        progress("stopping serve-app")
    progress("stopped")
    result["memory_per_model"] = per_model_memory(result["samples"])
    result["log"] = log_problems(peer.server.log)
    result["total_s"] = round(time.perf_counter() - progress.started, 1)
    return result


# -- the report --------------------------------------------------------------------------------
def table(result: dict[str, Any]) -> list[tuple[str, str]]:
    setup, traffic_, floor = result["setup"], result["requests"], result["floor"]
    memory_, loads = result["memory_per_model"], result["counters"]
    hot, cold, cpu = traffic_["hot"], traffic_["cold"], result["loadgen"]
    replicas = {k: v for k, v in result["processes"].items() if k != "controller"}
    rows = [
        ("models registered", f"{result['registered']}"),
        ("pool", f"2 replicas, LRU {setup['lru']} models each, {setup['hot']} preloaded"),
        ("requests", f"{traffic_['requests']:,} ({traffic_['requests_per_s']} req/s)"),
        (
            "failed requests (any non-200)",
            f"{traffic_['failed']} {traffic_['failures'] or ''}".strip(),
        ),
        ("models answered", f"{traffic_['models_answered']} of {setup['models']}"),
        (
            f"hot set ({setup['hot']} models) p50 / p99",
            f"{hot['p50_ms']} / {hot['p99_ms']} ms "
            f"({hot['count']:,} requests, {traffic_['hot_share']:.0%} of traffic)",
        ),
        (
            "cold (first request to a model) p50 / p99",
            f"{cold['p50_ms']} / {cold['p99_ms']} ms ({cold['count']} models)",
        ),
        ("all requests p50 / p99", f"{traffic_['all']['p50_ms']} / {traffic_['all']['p99_ms']} ms"),
        ("model loads / evictions", f"{_sum(loads[COUNTERS[0]])} / {_sum(loads[COUNTERS[1]])}"),
        ("models loaded per replica (end)", _per(result["loaded_end"])),
        (
            "server CPU (whole tree)",
            f"{cpu['server_cpu_s']:.1f} s in {cpu['duration_s']:.1f} s "
            f"({cpu['server_cpu_ms_per_request']:.2f} ms per request)",
        ),
    ]
    for replica, mem in sorted(replicas.items()):
        rows.append((f"pool replica {replica[:8]} RSS / PSS", _mem(mem)))
    if "controller" in result["processes"]:
        rows.append(
            ("controller (holds every champion) RSS / PSS", _mem(result["processes"]["controller"]))
        )
    tree = result["tree"]
    rows += [
        (f"Ray process tree ({tree['processes']} processes) RSS / PSS", _mem(tree)),
        (
            "per loaded model: pool RSS slope while filling",
            f"{memory_.get('slope_mb_per_model')} MB (r² {memory_.get('r2')}, "
            f"{memory_['samples']} samples, {memory_['loaded'][0]}→{memory_['loaded'][1]} loaded)",
        ),
        (
            "per loaded model: step hot set → fullest",
            f"{memory_.get('step_mb_per_model')} MB "
            "({:,} → {:,} MB pool RSS; {:,} MB at the end)".format(*memory_["rss_mb"]),
        ),
        (
            "per loaded model: floor (OnnxModel in a bare process)",
            f"{floor['mb_per_model']} MB ({floor['models']} models, "
            f"{floor['onnx_kb_mean']} KB ONNX each)",
        ),
        ("per replica: RSS with hot set only", _per(result["samples"][0]["rss_mb"], " MB")),
        (
            "seeding (this run) / server start / whole run",
            f"{result['seeded']} models in {result['seed_s']} s / {result['startup_s']} s / "
            f"{result['total_s']} s",
        ),
    ]
    return rows


def _sum(values: dict[str, float]) -> str:
    return f"{int(sum(values.values())):,} ({_per({k: int(v) for k, v in values.items()})})"


def _per(values: dict[str, Any], unit: str = "") -> str:
    return ", ".join(f"{v}{unit}" for _, v in sorted(values.items())) or "-"


def _mem(mem: dict[str, Any]) -> str:
    return f"{mem['rss_mb']:,} / {mem['pss_mb']:,} MB"


def write(result: dict[str, Any], out: Path) -> str:
    rows = table(result)
    width = max(len(key) for key, _ in rows)
    text = "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    markdown = "\n".join(f"| {key} | {value} |" for key, value in rows)
    problems = result["log"]
    notes = "\n".join(f"    {line}" for line in problems["first"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(
        f"# Density {stamp}\n\n`python -m benchmarks.density` on {os.cpu_count()} cores: "
        f"{result['setup']['duration_s']:g} s of Zipf-like traffic (s={result['zipf_s']}) "
        f"at concurrency {result['setup']['concurrency']} over every registered model.\n\n"
        f"| measure | value |\n|---|---|\n{markdown}\n\n{DEFINITIONS}\n\n"
        f"Server log: {problems['lines']} warning/error lines.\n\n{notes}\n"
    )
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, help="registered models (default 500; quick 8)")
    parser.add_argument("--work", type=Path, help=f"work folder (default {WORK_DIR})")
    parser.add_argument("--out", type=Path, help=f"OUT.md and OUT.json (default {OUT})")
    parser.add_argument("--quick", action="store_true", help="8 models, LRU 3, 10 s of traffic")
    parser.add_argument("--onnx-floor", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.onnx_floor:
        print(json.dumps(onnx_floor_here(args.onnx_floor)))
        return 0
    suffix = "-quick" if args.quick else ""
    args.work = args.work or WORK_DIR.with_name(WORK_DIR.name + suffix)
    out = args.out or OUT.with_name(OUT.name + suffix)
    result = run(args)
    print("\n" + write(result, out))
    print(f"\nwrote {out}.md and {out}.json")
    answered = result["requests"]["models_answered"] == result["setup"]["models"]
    return 0 if answered and not result["requests"]["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
