"""What the prediction log costs a request: run.py's serve-app row with logging off and on.

    python -m benchmarks.prediction_log            # 4 rounds x (off, on), 15 s points (~15 min)
    python -m benchmarks.prediction_log --quick    # 1 round, 12 models, 3 s points (~5 min)

The serve-app configuration is run.py's serve-app row (`peers.BEST_VARIANT`: the benchmark
Serve config with 2 fixed router replicas, HAProxy ingress as `serve-app up` ships it,
RAY_SERVE_THROUGHPUT_OPTIMIZED=1, canaries on one model in six) with settings added:
`prediction_log: {enabled: false}` or `{enabled: true, sink: parquet}`, and, for both, a
fresh Parquet directory and label store (SQLite) per run, so the row counts below are this
run's. Logging on means both of the writer's sinks: Parquet files and the label store's
join keys. Rounds alternate the order (off, on; on, off ...) so that drift on the shared
2-core machine falls on both sides; 4 by default, since single runs vary a lot here (a
2-round run gave +40% CPU per request, the 4-round run after it +15%). The table shows
medians and the on/off ratio. The target: logging adds at most 10% server CPU per request
at concurrency 16.

Rows lost: with logging on, before serve-app stops, the Prometheus counters of every router
replica are read from Ray's metrics port once they stop moving (rows scored, rows handed to
each sink, `ray_serve_app_prediction_log_dropped_total` by reason); after it stops, the
Parquet files are counted (rows in finished files; unfinished `.inprogress` files, which
no reader can use, are counted as files). Writes results/prediction-log.{md,json}
(prediction-log-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import urllib.error
from dataclasses import asdict
from pathlib import Path

import yaml

from benchmarks import density, levers, report, run
from benchmarks.measure import Plan, measure_peer
from benchmarks.peers import BEST_VARIANT, Peer, ServeAppVariant, Workspace, serve_app
from benchmarks.run import source_commit

RESULTS = run.RESULTS
TARGET_CPU_RATIO = 1.10
SCORED = "ray_serve_app_scored_rows"
WRITTEN = "ray_serve_app_prediction_log_rows"
DROPPED = "ray_serve_app_prediction_log_dropped"
METRICS = (SCORED, WRITTEN, DROPPED)
SETTLE_S = 15.0  # unchanged this long: the writer (5 s), the tally (1 s) and Ray reported
SETTLE_TIMEOUT_S = 90.0
CHANGED = (
    "prediction_log.enabled false/true (sink parquet), prediction_log.directory and "
    "labels.database_uri in a fresh folder per run (benchmarks/.work/prediction-log/)"
)


def variant(
    ws: Workspace, enabled: bool, folder: Path, label: str, env: dict[str, str]
) -> ServeAppVariant:
    """BEST_VARIANT's Serve config with the prediction log on or off, writing into `folder`."""
    document = yaml.safe_load(BEST_VARIANT.config.read_text())
    args = document["applications"][0]["args"]
    args["prediction_log"] = {
        "enabled": enabled,
        "sink": "parquet",
        "directory": str(folder / "predictions"),
    }
    args["labels"] = {"database_uri": f"sqlite:///{folder / 'labels.db'}"}
    name = "on" if enabled else "off"
    path = ws.root / "configs" / f"prediction-log-{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return ServeAppVariant(label, path, {**BEST_VARIANT.env, **env}, BEST_VARIANT.header)


def _router_counts(port: int) -> dict[str, dict[str, float]]:
    """The router replicas' counters, summed: scored rows; written by sink; dropped by reason."""
    found: dict[str, dict[str, float]] = {SCORED: {}, WRITTEN: {}, DROPPED: {}}
    key = {SCORED: "deployment", WRITTEN: "sink", DROPPED: "reason"}
    for name, labels, value in density.metric_samples(port, METRICS):
        if name == SCORED and labels.get("deployment") != "Router":
            continue  # pool replicas count the rows they score too
        what = labels.get(key[name], "?")
        found[name][what] = found[name].get(what, 0.0) + value
    return found


def settled_counts(peer: Peer, progress: run.Progress) -> dict:
    """The counters once unchanged for SETTLE_S (the writer flushes every second, the router
    hands its tally to Ray every second, Ray exports every few seconds)."""
    port = density.metrics_port(peer.server.remember_tree())
    if port is None:
        return {"error": "Ray's metrics port not found"}
    began = time.monotonic()
    last, since = None, time.monotonic()
    while True:
        time.sleep(3.0)
        try:
            current = _router_counts(port)
        except (urllib.error.URLError, OSError, ValueError) as error:
            return {"error": f"metrics: {error}"}
        if current != last:
            last, since = current, time.monotonic()
        elif time.monotonic() - since >= SETTLE_S or time.monotonic() - began > SETTLE_TIMEOUT_S:
            break
    counts = {
        "scored_rows": round(sum(last[SCORED].values())),
        "written": {k: round(v) for k, v in last[WRITTEN].items()},
        "dropped": {k: round(v) for k, v in last[DROPPED].items()},
        "settled_after_s": round(time.monotonic() - began, 1),
    }
    progress(f"counters: {counts}")
    return counts


def parquet_files(folder: Path) -> dict:
    """Rows in the finished Parquet files, and how many files were left unfinished."""
    from serve_app.predictions.parquet_sink import IN_PROGRESS, dataset

    root = folder / "predictions"
    if not root.is_dir():
        return {"files": 0, "rows": 0, "in_progress_files": 0}
    found = dataset(root)
    return {
        "files": len(found.files),
        "rows": found.count_rows() if found.files else 0,
        "in_progress_files": sum(1 for _ in root.rglob(f"*{IN_PROGRESS}")),
        "mb": round(sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20, 2),
    }


def store_rows(folder: Path) -> int | None:
    import sqlite3

    path = folder / "labels.db"
    if not path.is_file():
        return None
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT count(*) FROM serve_app_predictions").fetchone()[0]


def measure_once(
    ws: Workspace, enabled: bool, label: str, plan: Plan, progress, ray_tmpdir: Path | None
) -> dict:
    folder = ws.root / "prediction-log" / label.replace(" ", "-")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env, ray_dir = {}, None
    if ray_tmpdir is not None:  # this run's Ray session (and the pool's pip env) go there
        ray_tmpdir.mkdir(parents=True, exist_ok=True)
        ray_dir = Path(tempfile.mkdtemp(prefix="pl-", dir=ray_tmpdir))
        env["RAY_TMPDIR"] = str(ray_dir)
    peer = serve_app(ws, variant(ws, enabled, folder, label, env))

    def inspect(running: Peer) -> dict:
        return settled_counts(running, progress) if enabled else {}

    try:
        result = measure_peer(peer, plan, progress, inspect=inspect)
    finally:
        if ray_dir is not None:
            shutil.rmtree(ray_dir, ignore_errors=True)
    if enabled:
        result["parquet"] = parquet_files(folder)
        result["store_rows"] = store_rows(folder)
        progress(f"{label}: after stop: parquet {result['parquet']}, store {result['store_rows']}")
    return result


# -- report ----------------------------------------------------------------------------
COLUMNS = (
    ("prediction log", "variant"),
    ("c1 p50 ms", "c1_p50_ms"),
    ("c1 p99 ms", "c1_p99_ms"),
    ("c16 req/s", "c16_rps"),
    ("c16 p50 ms", "c16_p50_ms"),
    ("c16 p99 ms", "c16_p99_ms"),
    ("CPU ms/req", "cpu_ms_per_req"),
    ("idle CPU %", "idle_cpu_pct"),
    ("10k-row batch rows/s", "batch_rps"),
    ("errors", "errors"),
)
RATIO_KEYS = ("c1_p50_ms", "c1_p99_ms", "c16_rps", "c16_p50_ms", "c16_p99_ms", "cpu_ms_per_req")
LOSS_COLUMNS = (
    ("run", "run"),
    ("rows scored (router)", "scored"),
    ("to parquet", "parquet"),
    ("to store", "store"),
    ("dropped", "dropped"),
    ("parquet rows on disk", "on_disk"),
    ("unfinished files", "in_progress"),
    ("store rows", "store_rows"),
)


def summary(label: str, rounds: list[dict]) -> dict:
    row = levers.summarize(label, rounds)
    batches = [r.get("batch", {}).get("batch_rows_per_s") for r in rounds]
    found = [b for b in batches if b is not None]
    row["batch_rps"] = round(statistics.median(found)) if found else None
    return row


def ratio_row(off: dict, on: dict) -> dict:
    row: dict = {"variant": "on / off"}
    for key in RATIO_KEYS:
        if off.get(key) and on.get(key) is not None:
            row[key] = f"{on[key] / off[key]:.2f}x"
    if off.get("batch_rps") and on.get("batch_rps"):
        row["batch_rps"] = f"{on['batch_rps'] / off['batch_rps']:.2f}x"
    return row


def loss_rows(runs: list[dict]) -> list[dict]:
    table = []
    for index, result in enumerate(runs, start=1):
        counts = result.get("inspect") or {}
        dropped = counts.get("dropped") or {}
        parquet = result.get("parquet") or {}
        table.append(
            {
                "run": f"on, round {index}" + (" (FAILED)" if "error" in result else ""),
                "scored": counts.get("scored_rows"),
                "parquet": (counts.get("written") or {}).get("parquet"),
                "store": (counts.get("written") or {}).get("store"),
                "dropped": ", ".join(f"{k} {v:,}" for k, v in dropped.items()) or "0",
                "on_disk": parquet.get("rows"),
                "in_progress": parquet.get("in_progress_files"),
                "store_rows": result.get("store_rows"),
            }
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 12 models, 3 s points")
    parser.add_argument("--rounds", type=int, help="off/on pairs (default 4; 1 with --quick)")
    parser.add_argument("--duration", type=float, help="measured seconds per load point")
    parser.add_argument("--models", type=int, help="serve the first N demo models (max 54)")
    parser.add_argument("--src", type=Path, help="benchmark the serve_app package in SRC")
    parser.add_argument("--out", help="results/OUT.{md,json} (default prediction-log[-quick])")
    parser.add_argument(
        "--ray-tmpdir",
        type=Path,
        help="Ray's session folders (1.4 GB each with the pool's pip env) in a fresh folder "
        "here, removed after each run (default: Ray's, /tmp/ray, never removed)",
    )
    args = parser.parse_args(argv)
    progress = run.Progress()
    count = args.models or (run.QUICK_MODELS if args.quick else None)
    ws = run.workspace(args.src, count)
    plan = Plan(
        duration_s=args.duration or (3.0 if args.quick else 15.0),
        warmup_s=1.0 if args.quick else 3.0,
        idle_s=2.0 if args.quick else 5.0,
    )
    rounds = args.rounds or (1 if args.quick else 4)
    commit = source_commit(args.src)  # at the start: the code the replicas import
    run.prepare_registry(ws, progress)
    raw: dict[str, list[dict]] = {"off": [], "on": []}
    for index in range(rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        for enabled in order:
            name = "on" if enabled else "off"
            label = f"log {name} round {index + 1}"
            progress(f"round {index + 1}/{rounds}: prediction log {name}")
            raw[name].append(measure_once(ws, enabled, label, plan, progress, args.ray_tmpdir))
    off, on = summary("off", raw["off"]), summary("on (parquet + store)", raw["on"])
    table = [off, on, ratio_row(off, on)]
    cpu_ratio = (
        on["cpu_ms_per_req"] / off["cpu_ms_per_req"]
        if on["cpu_ms_per_req"] and off["cpu_ms_per_req"]
        else None
    )
    verdict = (
        "not measured"
        if cpu_ratio is None
        else f"{(cpu_ratio - 1) * 100:+.1f}% CPU per request with logging: "
        + ("within" if cpu_ratio <= TARGET_CPU_RATIO else "OVER")
        + f" the {(TARGET_CPU_RATIO - 1) * 100:.0f}% target"
    )
    per_round = {
        name: [r.get("points", {}).get("c16", {}).get("server_cpu_ms_per_request") for r in runs]
        for name, runs in raw.items()
    }
    title = (
        f"{len(ws.models)} fraud models, run.py's serve-app row (peers.BEST_VARIANT), "
        f"{plan.duration_s:g} s per point, median of {rounds} round(s), {os.cpu_count()} cores"
    )
    losses = loss_rows(raw["on"])
    title += f"; serve_app at {commit}"
    print("\n" + title + "\n" + report.text(table, COLUMNS))
    print(f"\n{verdict}; CPU ms/req per round: {per_round}")
    print("\nRows lost with logging on:\n" + report.text(losses, LOSS_COLUMNS))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (args.out or ("prediction-log-quick" if args.quick else "prediction-log"))
    stamp = time.strftime("%Y-%m-%d %H:%M")
    out.with_suffix(".md").write_text(
        f"# Prediction log cost {stamp}{' (quick)' if args.quick else ''}\n\n{title}.\n\n"
        f"{report.markdown(table, COLUMNS)}\n\n{verdict}. CPU ms/req per round (c16): "
        f"{per_round}.\n\nRows lost with logging on (router replicas' counters once settled, "
        f"then the files after serve-app stopped):\n\n{report.markdown(losses, LOSS_COLUMNS)}\n"
        f"\n- both: {BEST_VARIANT.description}; {CHANGED}\n"
    )
    document = {"title": title, "plan": asdict(plan), "summary": table, "raw": raw}
    document["commit"] = commit
    out.with_suffix(".json").write_text(json.dumps(document, indent=1, default=str))
    progress(f"wrote {out}.md and .json")
    failed = [r for runs in raw.values() for r in runs if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
