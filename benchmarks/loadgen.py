"""A bounded closed-loop HTTP load generator (aiohttp), run as its own process.

    python -m benchmarks.loadgen --url 'http://127.0.0.1:8300/v2/models/{model}/infer' \\
        --kind v2 --models fraud-card-eu,fraud-card-us --concurrency 16 --duration 15

`concurrency` workers each send one single-row request at a time; request i goes to
model i mod len(models) (round-robin). Requests started during `--warmup` are not
counted. The run stops after `--duration` seconds or `--requests` counted requests,
whichever comes first. Prints one JSON object: p50/p99 latency (ms), requests/s,
errors and, with `--server-pid`, the server tree's CPU seconds per request and memory.
`--trace FILE` also writes every request (warm-up included) as CSV: start (unix s),
model, latency (ms), error ("" when answered 200 with scores), for time-resolved
reports (benchmarks/autoscaling.py, benchmarks/density.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import aiohttp
import numpy as np

from benchmarks import proctree
from benchmarks.payloads import KINDS, Kind, single_row_bodies

MAX_DURATION_S = 600.0
SCORES = (b'"outputs"', b'"predictions"')  # V2 and MLflow answers carry one of these


@dataclass(frozen=True)
class LoadSpec:
    url: str  # may contain {model}
    kind: Kind
    models: tuple[str, ...]
    concurrency: int = 1
    duration_s: float = 10.0
    max_requests: int | None = None
    warmup_s: float = 2.0
    model_header: str | None = None  # send "<model_header>: <model name>" on every request
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    server_pid: int | None = None
    trace: str | None = None  # CSV file: one line per request
    pause_s: float = 0.0  # each worker waits this long between requests (a lighter load)


@dataclass
class _State:
    measure_start: float = float("inf")
    measure_end: float = float("inf")
    stop: bool = False
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_requests: int = 0
    warmup_errors: int = 0
    trace: list[tuple[float, str, float, str | None]] | None = None


async def _worker(
    session: aiohttp.ClientSession,
    spec: LoadSpec,
    targets: list[tuple[str, dict[str, str]]],
    bodies: list[bytes],
    counter: itertools.count,
    state: _State,
    enough: asyncio.Event,
) -> None:
    while not state.stop:
        index = next(counter)
        url, headers = targets[index % len(targets)]
        started = time.perf_counter()
        error = None
        try:
            async with session.post(url, data=bodies[index % len(bodies)], headers=headers) as r:
                answer = await r.read()
                if r.status != 200:
                    error = f"HTTP {r.status}"
                elif not any(key in answer for key in SCORES):
                    error = "200 without scores"
        except (aiohttp.ClientError, TimeoutError, OSError) as failure:
            error = type(failure).__name__
            await asyncio.sleep(0.01)  # a refused connection must not become a busy loop
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        if state.trace is not None:
            state.trace.append((started, spec.models[index % len(targets)], elapsed_ms, error))
        if started < state.measure_start:
            state.warmup_requests += 1
            state.warmup_errors += error is not None
        elif started < state.measure_end:
            state.latencies.append(elapsed_ms)
            if error is not None:
                state.errors[error] += 1
            if spec.max_requests and len(state.latencies) >= spec.max_requests:
                enough.set()
        if spec.pause_s:
            await asyncio.sleep(spec.pause_s)


async def run(spec: LoadSpec) -> dict:
    """Drive the load described by `spec`; return the measurements."""
    headers = {"content-type": "application/json", **spec.headers}
    targets = [
        (
            spec.url.replace("{model}", model),
            {**headers, **({spec.model_header: model} if spec.model_header else {})},
        )
        for model in spec.models
    ]
    bodies = single_row_bodies(spec.kind)
    state, enough, counter = _State(), asyncio.Event(), itertools.count()
    state.trace = [] if spec.trace else None
    origin = time.time() - time.perf_counter()  # perf_counter → unix time, for traces
    connector = aiohttp.TCPConnector(limit=spec.concurrency, limit_per_host=spec.concurrency)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    tree: list[int] = []
    server_cpu: float | None = None
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        workers = [
            asyncio.create_task(_worker(session, spec, targets, bodies, counter, state, enough))
            for _ in range(spec.concurrency)
        ]
        await asyncio.sleep(spec.warmup_s)
        pid = spec.server_pid
        cpu_before = proctree.cpu_snapshot(proctree.tree(pid)) if pid else {}
        state.measure_start = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), min(spec.duration_s, MAX_DURATION_S))
        state.measure_end = time.perf_counter()
        if pid:
            tree = proctree.tree(pid)
            server_cpu = proctree.cpu_delta(cpu_before, proctree.cpu_snapshot(tree))
        state.stop = True
        await asyncio.wait(workers, timeout=spec.timeout_s)
    if spec.trace and state.trace is not None:
        _write_trace(spec.trace, origin, state.trace)
    return {**_summary(spec, state, tree, server_cpu), "requests_started": next(counter)}


def _write_trace(path: str, origin: float, trace: list) -> None:
    with open(path, "w", newline="") as out:
        rows = csv.writer(out)
        rows.writerow(("started_unix", "model", "latency_ms", "error"))
        for started, model, elapsed_ms, error in trace:
            rows.writerow((f"{started + origin:.4f}", model, f"{elapsed_ms:.3f}", error or ""))


def _summary(spec: LoadSpec, state: _State, tree: list[int], server_cpu: float | None) -> dict:
    elapsed = state.measure_end - state.measure_start
    latencies = np.asarray(state.latencies)
    count, errors = len(latencies), sum(state.errors.values())
    percentile = (lambda q: round(float(np.percentile(latencies, q)), 3)) if count else None
    result = {
        "url": spec.url,
        "kind": spec.kind,
        "models": len(spec.models),
        "concurrency": spec.concurrency,
        "model_header": spec.model_header,
        "duration_s": round(elapsed, 3),
        "requests": count,
        "errors": errors,
        "error_kinds": dict(state.errors.most_common(5)),
        "warmup_requests": state.warmup_requests,
        "warmup_errors": state.warmup_errors,
        "requests_per_s": round(count / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": percentile(50) if percentile else None,
        "p90_ms": percentile(90) if percentile else None,
        "p99_ms": percentile(99) if percentile else None,
        "mean_ms": round(float(latencies.mean()), 3) if count else None,
        "max_ms": round(float(latencies.max()), 3) if count else None,
    }
    if server_cpu is not None:
        result |= {
            "server_processes": len(tree),
            "server_cpu_s": round(server_cpu, 3),
            "server_cpu_ms_per_request": round(server_cpu * 1000.0 / count, 4) if count else None,
            "server_rss_mb": round(proctree.rss_mb(tree), 1),
            "server_pss_mb": round(proctree.pss_mb(tree), 1),
        }
    return result


def parse_args(argv: list[str] | None = None) -> LoadSpec:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="URL template; {model} is replaced")
    parser.add_argument("--kind", choices=KINDS, default="v2", help="payload format")
    parser.add_argument("--models", required=True, help="comma-separated model names")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (max)")
    parser.add_argument("--requests", type=int, help="stop after this many measured requests")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--model-header", help="header carrying the model name, if any")
    parser.add_argument("--header", action="append", default=[], help="extra 'Name: value'")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument("--server-pid", type=int, help="measure this process tree's CPU/memory")
    parser.add_argument("--trace", help="write every request to this CSV file")
    parser.add_argument("--pause-ms", type=float, default=0.0, help="per worker, between requests")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 1024 or not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"need 1 <= concurrency <= 1024 and 0 < duration <= {MAX_DURATION_S:g}")
    headers = dict(h.split(":", 1) for h in args.header)
    return LoadSpec(
        url=args.url,
        kind=args.kind,
        models=tuple(m for m in args.models.split(",") if m),
        concurrency=args.concurrency,
        duration_s=args.duration,
        max_requests=args.requests,
        warmup_s=args.warmup,
        model_header=args.model_header,
        headers={k.strip(): v.strip() for k, v in headers.items()},
        timeout_s=args.timeout,
        server_pid=args.server_pid,
        trace=args.trace,
        pause_s=args.pause_ms / 1000.0,
    )


def main(argv: list[str] | None = None) -> int:
    spec = parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run(spec))
    print(json.dumps({**result, "spec": {**asdict(spec), "models": list(spec.models)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
