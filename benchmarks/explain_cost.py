"""What an explanation costs next to a score: p50/p99 and server CPU per request.

    python -m benchmarks.explain_cost                  # 6 models, 300 requests a point (~3 min)
    python -m benchmarks.explain_cost --requests 100   # quicker

serve-app starts as run.py's serve-app row (`peers.BEST_VARIANT`: the benchmark Serve config,
HAProxy ingress, RAY_SERVE_THROUGHPUT_OPTIMIZED=1), without canaries and with the
explanations' budget raised out of the way (`explain.rows_per_s` 1e6), on a registry of its
own under `.work/explain/` (seeded on the first run: the shared `.work/` registry may hold
versions from before text models were logged, which answer 409). Each model is scored and
explained once first, so the explainers are open (that first explanation, which fetches
and opens the LightGBM text model, is reported apart as `first explain ms`). Then, per batch
size, the same bodies go one at a time (concurrency 1, models round-robin) to `/infer` and
to `/explain` (top_k 5): p50/p99 are client latencies, CPU ms/req the server tree's CPU time
during the point over its requests (`proctree`, as run.py measures). Writes
results/explain-cost.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from benchmarks import models, proctree, report, run
from benchmarks.measure import _post
from benchmarks.payloads import body, transactions
from benchmarks.peers import BEST_VARIANT, Peer, ServeAppVariant, Workspace, serve_app
from benchmarks.servers import running

WORK = run.WORK_DIR / "explain"
OUT = "explain-cost"
COLUMNS = (
    ("endpoint", "endpoint"),
    ("rows/request", "rows"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("CPU ms/req", "cpu_ms_per_req"),
    ("x score CPU", "cpu_ratio"),
    ("errors", "errors"),
)


def variant(ws: Workspace) -> ServeAppVariant:
    """BEST_VARIANT's config with a budget no measured point reaches."""
    document = yaml.safe_load(BEST_VARIANT.config.read_text())
    document["applications"][0]["args"]["explain"] = {"rows_per_s": 1e6, "burst_rows": 1000}
    path = ws.root / "configs" / "explain-cost.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return ServeAppVariant("serve-app", path, BEST_VARIANT.env, BEST_VARIANT.header)


def endpoint_url(peer: Peer, name: str, endpoint: str) -> str:
    return peer.url.replace("{model}", name).removesuffix("/infer") + f"/{endpoint}"


def explain_body(batch) -> bytes:
    document = json.loads(body("v2", batch))
    document["parameters"] = {"top_k": 5}
    return json.dumps(document, separators=(",", ":")).encode()


def point(peer: Peer, endpoint: str, rows: int, requests: int) -> dict:
    """`requests` one at a time to `endpoint`, round-robin over the models."""
    batches = [transactions(rows, seed=n) for n in range(16)]
    bodies = [explain_body(b) if endpoint == "explain" else body("v2", b) for b in batches]
    latencies, errors = [], 0
    before = proctree.cpu_snapshot(peer.server.remember_tree())
    for n in range(requests):
        url = endpoint_url(peer, peer.models[n % len(peer.models)], endpoint)
        try:
            latencies.append(_post(url, bodies[n % len(bodies)], {}) * 1000.0)
        except OSError:
            errors += 1
    after = proctree.cpu_snapshot(peer.server.remember_tree())
    cpu_ms = proctree.cpu_delta(before, after) * 1000.0
    answered = max(1, len(latencies))
    return {
        "endpoint": endpoint,
        "rows": rows,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98], 2)
        if len(latencies) >= 2
        else None,
        "cpu_ms_per_req": round(cpu_ms / answered, 3),
        "errors": errors,
    }


def warm(peer: Peer) -> list[float]:
    """Score, then explain, each model once; the first explanations' latencies (ms)."""
    first = []
    for name in peer.models:
        _post(endpoint_url(peer, name, "infer"), body("v2", transactions(1)), {}, timeout=300.0)
        waited = _post(endpoint_url(peer, name, "explain"), explain_body(transactions(1)), {})
        first.append(waited * 1000.0)
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=6, help="the first N demo models")
    parser.add_argument("--requests", type=int, default=300, help="requests per point")
    parser.add_argument("--rows", default="1,20", help="batch sizes, comma-separated")
    parser.add_argument("--out", default=OUT, help=f"results/OUT.{{md,json}} (default {OUT})")
    args = parser.parse_args(argv)
    progress = run.Progress()
    ws = run.workspace(None, args.models, WORK)
    progress(f"registry: {ws.registry} ({len(ws.models)} models)")
    models.seed(ws.registry, len(ws.models), progress)
    peer = serve_app(ws, variant(ws), canaries=())
    table: list[dict] = []
    with running(peer.server) as startup_s:
        progress(f"ready in {startup_s:.1f} s")
        first = warm(peer)
        progress(f"first explanations: median {statistics.median(first):.1f} ms")
        for rows in (int(r) for r in args.rows.split(",")):
            score = point(peer, "infer", rows, args.requests)
            explained = point(peer, "explain", rows, args.requests)
            if score["cpu_ms_per_req"]:
                ratio = explained["cpu_ms_per_req"] / score["cpu_ms_per_req"]
                explained["cpu_ratio"] = f"{ratio:.1f}x"
            table += [score, explained]
            progress(f"{rows} row(s): score {score}, explain {explained}")
    title = (
        f"explain vs score, {len(ws.models)} models, {args.requests} requests a point at "
        f"concurrency 1; first explanation of a version (fetch + open): median "
        f"{statistics.median(first):.1f} ms"
    )
    print("\n" + title + "\n" + report.text(table, COLUMNS))
    out = Path(run.RESULTS) / args.out
    run.RESULTS.mkdir(exist_ok=True)
    out.with_suffix(".md").write_text(f"# {title}\n\n{report.markdown(table, COLUMNS)}\n")
    out.with_suffix(".json").write_text(
        json.dumps({"title": title, "first_explain_ms": first, "points": table}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
