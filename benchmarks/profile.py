"""Where serve-app's CPU per request goes under load: by process, then inside a replica.

    python -m benchmarks.profile [--duration 20] [--concurrency 16]

Starts serve-app with the benchmark layout (peers.BEST_VARIANT) and drives it twice with
the load generator. The first run samples the CPU seconds of every process in the tree,
grouped by role (HAProxy, router replicas, Serve's controller, raylet, GCS, agents...). The
second records each router replica with py-spy (out of process, non-blocking) and sorts
the samples by layer: uvicorn/Starlette, Ray Serve's replica wrapper, Ray core, asyncio,
serve-app's own code, onnxruntime. Writes results/profile.{md,json} (--out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from benchmarks import proctree, report
from benchmarks.measure import Plan, load_point
from benchmarks.peers import Peer, serve_app
from benchmarks.run import RESULTS, WORK_DIR, Progress, prepare_registry, workspace
from benchmarks.servers import running

PY_SPY_RATE = 200
# Leaf frames (`function (path:line)`, path relative to site-packages) are sorted into
# the first layer with a matching function or path prefix.
LAYERS = (
    ("blocked in C (Ray worker main loop, thread waits)", ("Worker.main_loop ", "Thread.run ")),
    ("onnxruntime", ("(onnxruntime/",)),
    ("serve-app code", ("(serve_app/",)),
    ("orjson / numpy", ("(orjson", "(numpy/")),
    ("uvicorn / Starlette / h11", ("(uvicorn/", "(starlette/", "(h11/", "(httptools/")),
    ("Ray metrics (ray.util.metrics)", ("(ray/util/metrics.py",)),
    ("Ray Serve replica wrapper", ("(ray/serve/",)),
    ("Ray core (RPC, object refs)", ("(ray/",)),
    ("asyncio / selectors", ("(asyncio/", "(selectors.py", "(uvloop/")),
)
# Inclusive shares of these functions: how much of a replica's time is the request itself.
MARKERS = {
    "Dataplane.score (the request inside serve-app)": "score (serve_app/serving/dataplane.py",
    "decode V2 request": "decode_request (serve_app/",
    "OnnxModel.predict": "predict (serve_app/runtime/onnx.py",
    "encode V2 response": "encode_response (serve_app/",
    "metrics recording": "(ray/util/metrics.py",
}


def cpu_by_role(peer: Peer, seconds: float) -> dict[str, float]:
    """CPU seconds per role over `seconds` of the running load."""
    pids = peer.server.remember_tree()
    roles = {pid: proctree.role(pid) for pid in pids}
    before = proctree.cpu_snapshot(pids)
    time.sleep(seconds)
    after = proctree.cpu_snapshot(proctree.tree(peer.server.pid))
    spent: Counter[str] = Counter()
    for (pid, started), total in after.items():
        spent[roles.get(pid) or proctree.role(pid)] += total - before.get((pid, started), 0.0)
    return dict(spent)


Found = TypeVar("Found")


def with_load(
    peer: Peer, concurrency: int, plan: Plan, during: Callable[[], Found]
) -> tuple[dict, Found]:
    """Run a load point in the background and `during()` inside its measured window."""
    point: dict = {}
    thread = threading.Thread(
        target=lambda: point.update(load_point(peer, concurrency, plan)), daemon=True
    )
    thread.start()
    time.sleep(plan.warmup_s + 1.0)
    found = during()
    thread.join()
    return point, found


def record_replicas(peer: Peer, seconds: float, folder: Path) -> list[Path]:
    """py-spy raw (collapsed) stacks of each router replica, recorded at the same time."""
    tree = proctree.tree(peer.server.pid)
    replicas = [p for p in tree if proctree.role(p) == proctree.ROUTER_REPLICA]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    outputs = [folder / f"replica-{pid}.txt" for pid in replicas]
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    options = ["--duration", str(int(seconds)), "--rate", str(PY_SPY_RATE), "--nonblocking"]
    running_spies = [
        subprocess.Popen(
            [spy, "record", "--pid", str(pid), *options, "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, out in zip(replicas, outputs, strict=True)
    ]
    for spy_process in running_spies:
        spy_process.wait(timeout=seconds + 60)
    return [out for out in outputs if out.exists()]


def layer(frame: str) -> str:
    for name, needles in LAYERS:
        if any(frame.startswith(n) or f" {n}" in frame for n in needles):
            return name
    return "other (stdlib, interpreter)"


def stack_shares(files: list[Path]) -> dict:
    """Samples by the layer of their leaf frame, top leaf functions, and marker shares."""
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    markers: Counter[str] = Counter()
    total = 0
    for file in files:
        for line in file.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count, frames = int(count_text), stack.split(";")
            total += count
            layers[layer(frames[-1])] += count
            leaves[frames[-1]] += count
            for label, needle in MARKERS.items():
                if any(needle in f for f in frames):
                    markers[label] += count
    share = {k: round(100.0 * v / max(total, 1), 1) for k, v in layers.most_common()}
    return {
        "samples": total,
        "layers_pct": share,
        "markers_pct": {k: round(100.0 * markers[k] / max(total, 1), 1) for k in MARKERS},
        "top_leaves": [(f, round(100.0 * c / max(total, 1), 1)) for f, c in leaves.most_common(15)],
    }


def tables(point: dict, cpu: dict[str, float], seconds: float, stacks: dict) -> str:
    rps = point["requests_per_s"]
    cpu_rows = [
        {
            "role": name,
            "cores": spent / seconds,
            "ms_per_req": 1000.0 * spent / seconds / rps if rps else None,
        }
        for name, spent in sorted(cpu.items(), key=lambda item: -item[1])
        if spent > 0.005
    ]
    cpu_rows.append(
        {
            "role": "total",
            "cores": sum(cpu.values()) / seconds,
            "ms_per_req": 1000.0 * sum(cpu.values()) / seconds / rps if rps else None,
        }
    )
    cpu_columns = [("process role", "role"), ("cores busy", "cores"), ("CPU ms/req", "ms_per_req")]
    layer_rows = [{"layer": k, "pct": v} for k, v in stacks["layers_pct"].items()]
    marker_rows = [{"function": k, "pct": v} for k, v in stacks["markers_pct"].items()]
    leaf_rows = [{"frame": f, "pct": v} for f, v in stacks["top_leaves"]]
    return "\n\n".join(
        [
            f"c{point['concurrency']}: {rps} req/s, p50 {point['p50_ms']} ms, "
            f"p99 {point['p99_ms']} ms, {point['errors']} errors",
            "CPU by process role (first load run):\n" + report.markdown(cpu_rows, cpu_columns),
            f"Router replicas, py-spy ({stacks['samples']} samples, second load run), by the "
            "layer of the running (leaf) frame:\n"
            + report.markdown(layer_rows, [("layer", "layer"), ("% of samples", "pct")]),
            "Inclusive shares (samples with this function anywhere on the stack):\n"
            + report.markdown(marker_rows, [("function", "function"), ("% of samples", "pct")]),
            "Top leaf frames:\n"
            + report.markdown(leaf_rows, [("frame", "frame"), ("% of samples", "pct")]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--work", type=Path, default=WORK_DIR)
    parser.add_argument("--out", default="profile", help="results/OUT.{md,json}")
    args = parser.parse_args(argv)
    progress = Progress()
    ws = workspace(None, None, args.work.resolve())
    prepare_registry(ws, progress)
    peer = serve_app(ws)
    plan = Plan(duration_s=args.duration, warmup_s=3.0)
    window = max(args.duration - 3.0, 2.0)
    progress(f"starting serve-app ({peer.notes})")
    with running(peer.server):
        load_point(peer, args.concurrency, Plan(duration_s=3.0, warmup_s=1.0))  # open models
        progress(f"load run 1: CPU per process role over {window:g} s")
        point, cpu = with_load(peer, args.concurrency, plan, lambda: cpu_by_role(peer, window))
        progress(f"load run 1: {point['requests_per_s']} req/s")
        progress(f"load run 2: py-spy on each router replica for {window:g} s")
        files_folder = ws.root / "profile"
        _, files = with_load(
            peer, args.concurrency, plan, lambda: record_replicas(peer, window, files_folder)
        )
    stacks = stack_shares(files)
    text = tables(point, cpu, window, stacks)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / args.out
    stamp = time.strftime("%Y-%m-%d %H:%M")
    out.with_suffix(".md").write_text(
        f"# Where serve-app's CPU goes ({stamp})\n\n{peer.notes}\n\n{text}\n"
    )
    out.with_suffix(".json").write_text(
        json.dumps({"point": point, "cpu_s_by_role": cpu, "window_s": window, **stacks}, indent=2)
    )
    progress(f"wrote {out}.md and .json; raw stacks in {files_folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
