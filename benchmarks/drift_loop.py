"""From drift onset to the retrained version serving all traffic, and what the monitor costs.

    python -m benchmarks.drift_loop                 # demo policy, then the shipped policy (~15 min)
    python -m benchmarks.drift_loop --policy demo   # the demo policy only (~3 min)

Each run is `serve-app demo drift` (serve_app/demo_drift.py): a fresh home with one model,
`serve-app up` on it, 30 s of steady traffic with labels 10 s late, then a new fraud
pattern; the time of each step of the loop is read from the model's event history,
counted from the new pattern's first request. `demo` is the demo policy (`DEMO_ARGS`:
1,000-row windows over 3 s, canary 10/50/100% with 10 s steps, Parquet files closed every
2 s); `default` is configs/serve_config.yaml as shipped (1,000-row windows over 60 s,
canary 5/25/50/100% with 60 s steps, Parquet files closed every 300 s, which the retrain
waits for: it reads finished files only). Target: under 10 minutes with the demo policy.

The monitor's cost is measured in this process on the demo seed's traffic: binning 1,000
logged rows against a reference (the router replica's share, in its writer thread),
merging counts, and judging a window (the control actor's share). Its lag behind the log
(a window judged, minus its newest row's time) is read from `/admin/models/{name}/drift`
during each run. Writes results/drift-loop.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict

import numpy as np

from benchmarks import report, run
from benchmarks.run import source_commit
from serve_app.demo_drift import MILESTONES, POLICIES, demonstrate, first_times

TARGET_S = 600.0
TIMEOUT_S = {"demo": 600.0, "default": 1_500.0}


def monitor_cost(repeats: int = 200) -> dict:
    """µs per 1,000 rows binned, per merge, per window judged (median of `repeats`)."""
    from benchmarks.drift_detection import DemoStream
    from serve_app.core.drift import bin_window, judge_counts

    stream = DemoStream()
    x, scores, decided, times = stream.window(0, None, "cost")
    rows = slice(0, 1_000)
    binned, merged, judged = [], [], []
    counts = bin_window(stream.reference, x[rows], scores[rows], decided[rows], times[rows])
    for _ in range(repeats):
        started = time.perf_counter()
        bin_window(stream.reference, x[rows], scores[rows], decided[rows], times[rows])
        binned.append(time.perf_counter() - started)
        started = time.perf_counter()
        counts.merge(counts)
        merged.append(time.perf_counter() - started)
        started = time.perf_counter()
        judge_counts(stream.reference, counts)
        judged.append(time.perf_counter() - started)
    return {
        "bin_1000_rows_us": round(statistics.median(binned) * 1e6, 1),
        "merge_us": round(statistics.median(merged) * 1e6, 1),
        "judge_window_us": round(statistics.median(judged) * 1e6, 1),
        "features": len(stream.reference.features) - 1,
    }


COLUMNS = (
    ("policy", "policy"),
    *((f"{kind} (s)", kind) for kind in MILESTONES),
    ("outcome", "outcome"),
    ("requests", "requests"),
    ("failed", "failures"),
    ("monitor lag p50 / max (s)", "lag"),
)


def row(result) -> dict:
    lags = result.lags_s
    found = {
        "policy": result.policy,
        **{k: round(v, 1) for k, v in first_times(result.timeline).items()},
        "outcome": result.outcome,
        "requests": result.requests,
        "failures": result.failures,
        "lag": f"{statistics.median(lags):.1f} / {max(lags):.1f}" if lags else "-",
    }
    return found


def timeline_text(timeline: list[tuple[float, str, str]]) -> str:
    return "\n".join(
        f"    +{at:7.1f} s  {kind:<20} {detail[:140]}" for at, kind, detail in timeline
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", choices=sorted(POLICIES), action="append")
    parser.add_argument("--steady", type=float, default=30.0)
    parser.add_argument("--label-delay", type=float, default=10.0)
    args = parser.parse_args(argv)
    progress = run.Progress()
    commit = source_commit()
    cost = monitor_cost()
    progress(f"monitor cost: {cost}")
    results = []
    for policy in args.policy or ["demo", "default"]:
        progress(f"policy {policy}")
        results.append(
            demonstrate(policy, args.steady, args.label_delay, TIMEOUT_S[policy], False, progress)
        )
    table = [row(r) for r in results]
    demo = next((r for r in results if r.policy == "demo"), None)
    promoted = demo and first_times(demo.timeline).get("promoted")
    verdict = (
        "demo policy: not promoted"
        if not promoted
        else f"demo policy: onset to 100% in {promoted:.0f} s, "
        + ("within" if promoted <= TARGET_S else "OVER")
        + f" the {TARGET_S:.0f} s target"
    )
    title = (
        f"serve-app demo drift, one model, {args.steady:g} s steady traffic, labels "
        f"{args.label_delay:g} s late, {os.cpu_count()} cores; serve_app at {commit}; "
        "seconds from the new pattern's first request"
    )
    cost_line = (
        f"monitor cost ({cost['features']} features and the score): binning 1,000 logged rows "
        f"{cost['bin_1000_rows_us']} µs (router replica, writer thread), merging counts "
        f"{cost['merge_us']} µs, judging a window {cost['judge_window_us']} µs (control actor)"
    )
    print("\n" + title + "\n" + report.text(table, COLUMNS) + f"\n\n{verdict}\n{cost_line}")
    run.RESULTS.mkdir(exist_ok=True)
    out = run.RESULTS / "drift-loop"
    timelines = "\n\n".join(f"{r.policy}:\n\n" + timeline_text(r.timeline) for r in results)
    out.with_suffix(".md").write_text(
        f"# Drift to retrained champion {time.strftime('%Y-%m-%d %H:%M')}\n\n{title}.\n\n"
        f"{report.markdown(table, COLUMNS)}\n\n{verdict}.\n\n{cost_line}.\n\n"
        f"Timelines:\n\n{timelines}\n"
    )
    document = {
        "title": title,
        "commit": commit,
        "monitor_cost": cost,
        "results": [asdict(r) for r in results],
        "policies": {p: POLICIES[p] for p in (args.policy or ["demo", "default"])},
    }
    out.with_suffix(".json").write_text(json.dumps(document, indent=1, default=str))
    progress(f"wrote {out}.md and .json")
    bad = [r for r in results if r.failures or r.outcome != "promoted"]
    return 1 if bad else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
