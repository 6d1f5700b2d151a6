"""Issue 4's levers for serve-app, each measured with the same load:

    python -m benchmarks.levers [--rounds 2] [--duration 10] [--only haproxy]

Ingress (Serve's proxy or HAProxy with the model-id header hash), RAY_SERVE_THROUGHPUT_
OPTIMIZED, the client sending `serve_multiplexed_model_id` or not, and 1 or 2 pool
replicas (a fixed count, so that autoscaling does not change it mid-run). Writes
results/levers.md and results/levers.json (--out); run.py uses the winner (peers.BEST_VARIANT).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from benchmarks import run
from benchmarks.measure import Plan, measure_peer
from benchmarks.peers import (
    BEST_VARIANT,
    HAPROXY,
    MULTIPLEX_HEADER,
    REPO_DIR,
    THROUGHPUT_OPTIMIZED,
    ServeAppVariant,
    Workspace,
    serve_app,
)

RESULTS = Path(__file__).resolve().parent / "results"


def replicas_config(ws: Workspace, replicas: int, cached: bool = False) -> Path:
    """configs/serve_config.yaml with a fixed router size (and the prediction cache on for all)."""
    source = (ws.src or REPO_DIR) / "configs" / "serve_config.yaml"
    document = yaml.safe_load(source.read_text())
    args = document["applications"][0]["args"]
    args["router"]["min_replicas"] = args["router"]["max_replicas"] = replicas
    args["pools"] = []  # the fast lane only: a pool's environment build would load the machine
    if cached:
        args["cache"] = {**args.get("cache", {}), "models": ["*"]}
    path = ws.root / "configs" / f"replicas-{replicas}{'-cached' if cached else ''}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def variants(ws: Workspace) -> list[ServeAppVariant]:
    one, two = replicas_config(ws, 1), replicas_config(ws, 2)
    fast = {**HAPROXY, **THROUGHPUT_OPTIMIZED}
    return [
        ServeAppVariant("proxy 1r", one, {}, header=False),
        ServeAppVariant("proxy 1r hdr", one, {}, header=True),
        ServeAppVariant("proxy 2r hdr", two, {}, header=True),
        ServeAppVariant("throughput-opt 1r hdr", one, THROUGHPUT_OPTIMIZED, header=True),
        ServeAppVariant("haproxy 1r hdr", one, HAPROXY, header=True),
        ServeAppVariant("haproxy 2r hdr", two, HAPROXY, header=True),
        ServeAppVariant("haproxy 2r", two, HAPROXY, header=False),
        ServeAppVariant("haproxy+tput 1r hdr", one, fast, header=True),
        ServeAppVariant("haproxy+tput 2r hdr", two, fast, header=True),
        ServeAppVariant("haproxy+tput 2r", two, fast, header=False),
        # The load generator repeats a fixed set of rows, so nearly every request hits.
        ServeAppVariant("haproxy+tput 2r hdr cache", replicas_config(ws, 2, True), fast, True),
    ]


DISCONNECT_DISABLED = (("x-request-disconnect-disabled", "?1"),)


def cpu_variants(ws: Workspace, compare: Path | None = None) -> list[ServeAppVariant]:
    """The serving layout's CPU levers: the shipped layout, then one lever changed each.

    A client that sends `x-request-disconnect-disabled: ?1` spares Serve's replica a
    receive proxy, a queue and two tasks per request (its fast path); the header hash is
    the balancing the shipped least-connections replaced; `compare` runs the same layout
    from another checkout's serve_app (an earlier commit, to measure a code change).
    """
    two = replicas_config(ws, 2)
    shipped = BEST_VARIANT.env
    hashed = {**shipped, "RAY_SERVE_HAPROXY_BALANCE_ALGORITHM": f"hdr({MULTIPLEX_HEADER})"}
    found = [
        ServeAppVariant("shipped 2r", two, shipped, header=False),
        ServeAppVariant("shipped 2r + no-disconnect", two, shipped, False, DISCONNECT_DISABLED),
        ServeAppVariant("header hash 2r", two, hashed, header=True),
    ]
    if compare is not None:
        found.insert(1, ServeAppVariant(f"{compare.name} 2r", two, shipped, False, src=compare))
    return found


def _median(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return round(statistics.median(found), 2) if found else None


def summarize(label: str, rounds: list[dict]) -> dict:
    def pick(point: str, key: str) -> float | None:
        return _median([r.get("points", {}).get(point, {}).get(key) for r in rounds])

    return {
        "variant": label,
        "c1_p50_ms": pick("c1", "p50_ms"),
        "c1_p99_ms": pick("c1", "p99_ms"),
        "c16_rps": pick("c16", "requests_per_s"),
        "c16_p50_ms": pick("c16", "p50_ms"),
        "c16_p99_ms": pick("c16", "p99_ms"),
        "cpu_ms_per_req": pick("c16", "server_cpu_ms_per_request"),
        "idle_cpu_pct": _median([r.get("idle_cpu_pct") for r in rounds]),
        "cold_start_ms": _median([r.get("cold_start", {}).get("cold_start_ms") for r in rounds]),
        "errors": sum(p.get("errors", 0) for r in rounds for p in r.get("points", {}).values()),
        "rounds": len(rounds),
        "failures": [r["error"] for r in rounds if "error" in r],
    }


def markdown(rows: list[dict], variants_by_label: dict[str, ServeAppVariant]) -> str:
    head = "| variant | c1 p50 ms | c1 p99 ms | c16 req/s | c16 p50 ms | c16 p99 ms "
    head += "| CPU ms/req | idle CPU % | cold start ms | errors |\n" + "|---" * 10 + "|\n"
    lines = [
        f"| {r['variant']} | {r['c1_p50_ms']} | {r['c1_p99_ms']} | {r['c16_rps']} | "
        f"{r['c16_p50_ms']} | {r['c16_p99_ms']} | {r['cpu_ms_per_req']} | "
        f"{r['idle_cpu_pct']} | {r['cold_start_ms']} | {r['errors']} |"
        for r in rows
    ]
    legend = "\n".join(f"- {k}: {v.description}" for k, v in variants_by_label.items())
    return head + "\n".join(lines) + f"\n\nMedians over rounds. Variants:\n{legend}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--only", help="run the variants whose label contains this")
    parser.add_argument(
        "--variant", action="append", default=[], help="run this variant (exact label; repeat)"
    )
    parser.add_argument(
        "--set", choices=("ingress", "cpu"), default="ingress", help="issue 4's or the layout's"
    )
    parser.add_argument("--src", type=Path, help="benchmark the serve_app package in SRC")
    parser.add_argument(
        "--compare-src", type=Path, help="--set cpu: also run the serve_app package in this tree"
    )
    parser.add_argument("--out", default="levers", help="results/OUT.{md,json}")
    args = parser.parse_args(argv)
    ws, progress = run.workspace(args.src, None), run.Progress()
    run.prepare_registry(ws, progress)
    compare = args.compare_src.resolve() if args.compare_src else None
    every = variants(ws) if args.set == "ingress" else cpu_variants(ws, compare)
    chosen = [v for v in every if not args.only or args.only in v.label]
    chosen = [v for v in chosen if not args.variant or v.label in args.variant]
    plan = Plan(duration_s=args.duration, warmup_s=args.warmup)
    raw: dict[str, list[dict]] = {v.label: [] for v in chosen}
    for round_index in range(args.rounds):
        # Every other round in reverse order: a slow drift of the machine favours no variant.
        for variant in chosen if round_index % 2 == 0 else chosen[::-1]:
            progress(f"round {round_index + 1}/{args.rounds}: {variant.label}")
            peer = serve_app(ws, variant)
            raw[variant.label].append(measure_peer(peer, plan, progress, with_batch=False))
    rows = [summarize(label, rounds) for label, rounds in raw.items()]
    table = markdown(rows, {v.label: v for v in chosen})
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(f"# serve-app levers\n\n{table}")
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"summary": rows, "raw": raw}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
