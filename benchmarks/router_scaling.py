"""What scaling the router costs under each HAProxy balance algorithm, side by side:

    python -m benchmarks.router_scaling            # both variants, ~3 min each
    python -m benchmarks.router_scaling --quick    # shorter phases

For each variant it starts `serve-app up` (HAProxy ingress, router autoscaling 1..3)
and drives three phases from a separate load generator: low (1 replica), high (the
router scales out to 3), low again (it scales back in). One model is hot (half the
requests); the rest round-robin over the 54 demo models. Sampled every second from
/admin/models: live router replicas, models each has open (every open is a cold load:
the LRU holds all 54), requests each answered. Reports per variant: scale-out and
scale-in times, cold loads per new replica, failed requests, and how the requests of
the high phase spread over the replicas. Writes benchmarks/results/router-scaling.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from benchmarks import measure, peers
from benchmarks.run import RESULTS, Progress, prepare_registry, workspace
from benchmarks.servers import running

LOW_PAUSE_MS = 10.0  # low phases: one worker, ~90 req/s, a load one replica handles
HOT_SHARE = 54  # the hot model appears this many times in the 108-entry round-robin list
VARIANTS = {
    "leastconn": ("leastconn", False),
    "header hash": (f"hdr({peers.MULTIPLEX_HEADER})", True),
}
ROUTER = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_ongoing_requests": 2,
    "upscale_delay_s": 2,
    "downscale_delay_s": 10,
    "num_cpus": 0.5,
}


@dataclass
class Sampler:
    """Samples the router replicas once a second in a thread, until stopped."""

    url: str
    samples: list[tuple[float, dict]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                with urllib.request.urlopen(f"{self.url}/admin/models", timeout=5) as answer:
                    self.samples.append((time.monotonic(), json.loads(answer.read())["replicas"]))
            except OSError:
                continue


def config_file(root: Path) -> Path:
    document = yaml.safe_load((peers.BENCH_DIR / "serve_config.bench.yaml").read_text())
    args = document["applications"][0]["args"]
    args["router"] = {**args["router"], **ROUTER}
    args["pools"] = []  # the fast lane only: the router is what scales here
    out = root / "serve_config.router-scaling.yaml"
    out.write_text(yaml.safe_dump(document, sort_keys=False))
    return out


def run_variant(ws, label: str, phases: list[tuple[str, int, float]], progress) -> dict:
    balance, header = VARIANTS[label]
    variant = peers.ServeAppVariant(
        f"serve-app {label}",
        config_file(ws.root),
        {
            **peers.HAPROXY,
            **peers.THROUGHPUT_OPTIMIZED,
            "RAY_SERVE_HAPROXY_BALANCE_ALGORITHM": balance,
        },
        header=header,
    )
    hot = ws.models[0]
    peer = replace(
        peers.serve_app(ws, variant, canaries=()),
        models=(*([hot] * HOT_SHARE), *ws.models),
        cold_start=False,
    )
    result: dict = {"label": label, "balance": balance, "phases": []}
    with running(peer.server):
        progress(f"{label}: ready")
        with Sampler(peer.base_url) as sampler:
            for name, concurrency, seconds in phases:
                started = time.monotonic()
                plan = measure.Plan(duration_s=seconds, warmup_s=0.0, max_requests=10_000_000)
                light = () if concurrency > 1 else ("--pause-ms", str(LOW_PAUSE_MS))
                point = measure.load_point(peer, concurrency, plan, light)
                result["phases"].append(
                    {"phase": name, "concurrency": concurrency, "started": started, **point}
                )
                progress(
                    f"{label}: {name} c{concurrency}: {point['requests_per_s']} req/s, "
                    f"{point['errors']} errors, p99 {point['p99_ms']} ms"
                )
        result.update(summarise(sampler.samples, result["phases"]))
    progress(f"{label}: {result['summary']}")
    return result


def summarise(samples: list[tuple[float, dict]], phases: list[dict]) -> dict:
    """Replica counts over time, cold loads per replica, and the high phase's spread."""
    origin = phases[0]["started"]
    counts = [(round(t - origin, 1), len(r)) for t, r in samples]
    high, low = phases[1]["started"], phases[2]["started"]
    peak = max((n for _, n in counts), default=0)
    out_at = next((t for t, n in counts if t + origin >= high and n == peak), None)
    back_at = next((t for t, n in counts if t + origin >= low and n == 1), None)
    opened: dict[str, int] = {}
    for _, replicas in samples:
        for replica, info in replicas.items():
            opened[replica] = max(opened.get(replica, 0), info["loaded"])
    # The spread once every replica is up: from the first sample at the peak to the phase end.
    at_peak = [r for t, r in samples if high <= t < low and len(r) == peak]
    spread = {}
    if len(at_peak) >= 2:
        start, end = at_peak[0], at_peak[-1]
        spread = {r: end[r]["requests"] - start.get(r, {}).get("requests", 0) for r in end}
    total = sum(spread.values()) or 1
    summary = {
        "peak_replicas": peak,
        "scale_out_s": None if out_at is None else round(out_at - (high - origin), 1),
        "scale_in_s": None if back_at is None else round(back_at - (low - origin), 1),
        "replicas_seen": len(opened),
        "cold_loads_per_replica": sorted(opened.values()),
        "share_per_replica_at_peak": sorted(
            (round(v / total, 3) for v in spread.values()), reverse=True
        ),
        "failed_requests": sum(p["errors"] for p in phases),
    }
    return {"summary": summary, "replica_counts": counts}


def markdown(results: list[dict], models: int, phases) -> str:
    lines = [
        "# Router scaling under load: HAProxy balance algorithms side by side",
        "",
        f"{models} demo models (the LRU holds them all), one hot model taking half the "
        "requests; phases "
        + ", ".join(f"{n} c{c} {s:g} s" for n, c, s in phases)
        + f"; router autoscaling {json.dumps(ROUTER)}.",
        "",
        "| balance | peak replicas | scale-out s | scale-in s | cold loads per replica "
        "| share of requests per replica at the peak | failed requests |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for r in results:
        s = r["summary"]
        lines.append(
            f"| {r['balance']} | {s['peak_replicas']} | {s['scale_out_s']} | {s['scale_in_s']} "
            f"| {s['cold_loads_per_replica']} | {s['share_per_replica_at_peak']} "
            f"| {s['failed_requests']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases")
    parser.add_argument("--only", choices=sorted(VARIANTS), help="one variant")
    args = parser.parse_args(argv)
    progress = Progress()
    ws = workspace(None, None)
    prepare_registry(ws, progress)
    scale = 0.5 if args.quick else 1.0
    phases = [("low", 1, 20 * scale), ("high", 16, 60 * scale), ("low again", 1, 75 * scale)]
    chosen = [args.only] if args.only else list(VARIANTS)
    results = [run_variant(ws, label, phases, progress) for label in chosen]
    text = markdown(results, len(ws.models), phases)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "router-scaling.md").write_text(text)
    (RESULTS / "router-scaling.json").write_text(json.dumps(results, indent=1))
    failed = sum(r["summary"]["failed_requests"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
