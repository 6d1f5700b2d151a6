"""Measurements against one running peer: load points, cold start, batch scoring, ORT floor."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import proctree
from benchmarks.payloads import FEATURES, body, transactions
from benchmarks.peers import REPO_DIR, Peer
from benchmarks.servers import running

BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Plan:
    """How long each load point runs."""

    duration_s: float = 15.0
    warmup_s: float = 3.0
    idle_s: float = 3.0
    concurrencies: tuple[int, ...] = (1, 16)
    max_requests: int = 200_000


def load_point(peer: Peer, concurrency: int, plan: Plan, extra: tuple[str, ...] = ()) -> dict:
    """One loadgen run in its own process against `peer`, with its CPU and memory;
    `extra`: more loadgen arguments (such as `--trace FILE`)."""
    command = [sys.executable, "-m", "benchmarks.loadgen", "--url", peer.url]
    command += ["--kind", peer.kind, "--models", ",".join(peer.models)]
    command += ["--concurrency", str(concurrency), "--duration", str(plan.duration_s)]
    command += ["--warmup", str(plan.warmup_s), "--requests", str(plan.max_requests)]
    command += ["--server-pid", str(peer.server.pid)]
    if peer.model_header:
        command += ["--model-header", peer.model_header]
    for name, value in peer.headers:
        command += ["--header", f"{name}: {value}"]
    command += extra
    limit = plan.duration_s + plan.warmup_s + 90.0
    done = subprocess.run(
        command, cwd=REPO_DIR, capture_output=True, text=True, timeout=limit, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr[-2000:]}")
    peer.server.remember_tree()
    return json.loads(done.stdout.strip().splitlines()[-1])


def idle_cpu(peer: Peer, seconds: float) -> float:
    """The server tree's CPU use with no traffic, in % of one core."""
    before = proctree.cpu_snapshot(peer.server.remember_tree())
    time.sleep(seconds)
    after = proctree.cpu_snapshot(peer.server.remember_tree())
    return round(proctree.cpu_delta(before, after) / seconds * 100.0, 1)


def _post(url: str, payload: bytes, headers: dict[str, str], timeout: float = 120.0) -> float:
    """Seconds for one POST answered 200 (raises otherwise)."""
    request = urllib.request.Request(url, data=payload, method="POST")
    for key, value in {"content-type": "application/json", **headers}.items():
        request.add_header(key, value)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()
    return time.perf_counter() - started


def _served_models(peer: Peer) -> dict[str, dict]:
    """serve-app's /admin/models view of each model ({} if it cannot be read)."""
    try:
        with urllib.request.urlopen(f"{peer.base_url}/admin/models", timeout=10.0) as answer:
            return json.loads(answer.read())["models"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return {}


def unloaded_model(peer: Peer) -> str | None:
    """A fast-lane serve-app model no router replica has open yet (pool models are opened
    by their pool, whose replicas `loaded_on` does not list)."""
    models = _served_models(peer)
    cold = [
        n
        for n in peer.models
        if n in models
        and not models[n].get("loaded_on")
        and not (models[n].get("serving") or {}).get("pool")
    ]
    return cold[-1] if cold else None


def canaries_splitting(peer: Peer) -> int:
    """How many of the peer's canary models split traffic with a challenger right now."""
    models = _served_models(peer)
    return sum(
        1
        for name in peer.canaries
        if ((models.get(name) or {}).get("serving") or {}).get("challenger_weight", 0) > 0
    )


def wait_for_canaries(peer: Peer, timeout_s: float = 120.0) -> int:
    """Measure only once every canary is on (gated and given its weight), or the timeout."""
    deadline = time.monotonic() + timeout_s
    while (splitting := canaries_splitting(peer)) < len(peer.canaries):
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    return splitting


def cold_start(peer: Peer) -> dict:
    """End-to-end time of the first request to a model that is not loaded, then a warm one."""
    name = unloaded_model(peer)
    if name is None:
        return {"cold_start_ms": None, "note": "no unloaded model found"}
    url = peer.url.replace("{model}", name)
    headers = {peer.model_header: name} if peer.model_header else {}
    payload = body(peer.kind, transactions(1))
    first = _post(url, payload, headers)
    warm = min(_post(url, payload, headers) for _ in range(5))
    return {
        "model": name,
        "cold_start_ms": round(first * 1000, 1),
        "warm_ms": round(warm * 1000, 2),
    }


def batch(peer: Peer, repeats: int = 3) -> dict:
    """Rows/s scoring one 10,000-row request (best of `repeats`)."""
    name = peer.models[0]
    url = peer.url.replace("{model}", name)
    headers = {peer.model_header: name} if peer.model_header else {}
    payload = body(peer.kind, transactions(BATCH_ROWS, seed=3))
    try:
        seconds = [_post(url, payload, headers) for _ in range(repeats)]
    except (urllib.error.URLError, OSError) as error:
        return {"batch_rows_per_s": None, "error": str(error)[:200]}
    return {
        "batch_rows": BATCH_ROWS,
        "batch_body_mb": round(len(payload) / 2**20, 2),
        "batch_ms": [round(s * 1000, 1) for s in seconds],
        "batch_rows_per_s": round(BATCH_ROWS / min(seconds)),
    }


def onnxruntime_floor(onnx_file: Path, single: int = 3000) -> dict:
    """serve-app's own onnxruntime call, in process: µs per single row, rows/s for 10k rows."""
    from serve_app.runtime.onnx import ModelArtifact, OnnxModel

    name, _, version = onnx_file.stem.rpartition(".v")
    model = OnnxModel(ModelArtifact(name, int(version), onnx_file.read_bytes(), FEATURES))
    rows = transactions(256)
    for row in rows[:100]:
        model.predict(row[None, :])
    timings = []
    for index in range(single):
        row = rows[index % len(rows)][None, :]
        started = time.perf_counter()
        model.predict(row)
        timings.append(time.perf_counter() - started)
    big = transactions(BATCH_ROWS, seed=3)
    batch_s = []
    for _ in range(5):
        started = time.perf_counter()
        model.predict(big)
        batch_s.append(time.perf_counter() - started)
    return {
        "model": name,
        "single_row_us_p50": round(statistics.median(timings) * 1e6, 1),
        "single_row_us_p99": round(float(np.percentile(timings, 99)) * 1e6, 1),
        "batch_rows_per_s": round(BATCH_ROWS / min(batch_s)),
    }


def measure_peer(
    peer: Peer,
    plan: Plan,
    progress: Callable[[str], None],
    with_batch: bool = True,
    inspect: Callable[[Peer], dict] | None = None,
) -> dict:
    """Start `peer`, measure cold start (if it loads lazily), each load point and a batch,
    and stop it (always). `inspect`, when given, reads more from the running peer last
    (its answer is `result["inspect"]`). Returns everything measured, or the error that
    stopped it."""
    result: dict = {"label": peer.label, "notes": peer.notes, "points": {}}
    progress(f"{peer.label}: starting ({peer.notes})")
    try:
        with running(peer.server) as startup_s:
            result["startup_s"] = round(startup_s, 1)
            result["restarts"] = peer.server.restarts
            again = f" (after {peer.server.restarts} failed start)" if peer.server.restarts else ""
            progress(f"{peer.label}: ready in {result['startup_s']} s{again}")
            for name in peer.warm:  # Ray builds a pool's environment on its first start
                url = peer.url.replace("{model}", name)
                waited = _post(url, body(peer.kind, transactions(1)), {}, timeout=900.0)
                progress(f"{peer.label}: {name} answered after {waited:.1f} s")
            if peer.canaries:
                splitting = wait_for_canaries(peer)
                result["canaries"] = {"models": len(peer.canaries), "splitting_at_start": splitting}
                progress(f"{peer.label}: {splitting}/{len(peer.canaries)} canaries splitting")
            if peer.cold_start:
                result["cold_start"] = cold_start(peer)
                progress(f"{peer.label}: cold start {result['cold_start']}")
            result["idle_cpu_pct"] = idle_cpu(peer, plan.idle_s)
            progress(f"{peer.label}: idle CPU {result['idle_cpu_pct']}% of a core")
            for concurrency in plan.concurrencies:
                point = load_point(peer, concurrency, plan)
                result["points"][f"c{concurrency}"] = point
                progress(
                    f"{peer.label}: c{concurrency}: p50 {point['p50_ms']} ms, "
                    f"p99 {point['p99_ms']} ms, {point['requests_per_s']} req/s, "
                    f"{point['errors']} errors, {point['server_cpu_ms_per_request']} ms CPU/req"
                )
            if with_batch:
                result["batch"] = batch(peer)
                progress(
                    f"{peer.label}: 10k-row batch {result['batch'].get('batch_rows_per_s')} rows/s"
                )
            if peer.canaries:
                result["canaries"]["splitting_at_end"] = canaries_splitting(peer)
            result["rss_mb"] = max(p["server_rss_mb"] for p in result["points"].values())
            result["pss_mb"] = max(p["server_pss_mb"] for p in result["points"].values())
            if peer.cold_start:  # a Ray tree: say which processes the memory is in
                result["pss_by_role_mb"] = proctree.pss_by_role(peer.server.remember_tree())
            if inspect is not None:
                result["inspect"] = inspect(peer)
    except Exception as error:  # one peer failing must not lose the others' numbers
        result["error"] = f"{type(error).__name__}: {error}"
        progress(f"{peer.label}: FAILED: {result['error']} (log: {peer.server.log})")
    return result
