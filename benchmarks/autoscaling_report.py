"""The autoscaling run, analysed: per-second timeline, scale events, per-phase latency,
as a terminal table, markdown and a chart.

Replica counts come from one-second samples of the Serve controller; throughput and
latency from the load generator's per-request trace, bucketed by completion time into
the same seconds. Event times are therefore good to about one second.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.localcluster import PoolSample


@dataclass(frozen=True)
class Trace:
    """Every request the load generator sent: start and end (unix s), latency, failed."""

    start: np.ndarray
    end: np.ndarray
    ms: np.ndarray
    failed: np.ndarray

    @classmethod
    def read(cls, path: Path) -> Trace:
        with path.open(newline="") as source:
            rows = list(csv.DictReader(source))
        start = np.array([float(r["started_unix"]) for r in rows])
        ms = np.array([float(r["latency_ms"]) for r in rows])
        failed = np.array([bool(r["error"]) for r in rows], dtype=bool)
        return cls(start, start + ms / 1000.0, ms, failed)

    def window(self, since: float, until: float, by_end: bool = False) -> dict:
        """Requests that started (or ended) in [since, until): count, req/s, p50/p99, errors."""
        times = self.end if by_end else self.start
        chosen = (times >= since) & (times < until)
        ms, seconds = self.ms[chosen], max(until - since, 1e-9)
        return {
            "requests": int(chosen.sum()),
            "requests_per_s": round(float(chosen.sum()) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if ms.size else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if ms.size else None,
            "errors": int(self.failed[chosen].sum()),
        }


def timeline(samples: list[tuple[str, PoolSample]], trace: Trace, t0: float) -> list[dict]:
    """One row per sample: the pool then, and the requests completed since the last one."""
    rows, previous = [], t0 - 1.0
    for phase, sample in samples:
        served = trace.window(previous, sample.at, by_end=True)
        previous = sample.at
        rows.append(
            {
                "t_s": round(sample.at - t0, 1),
                "phase": phase,
                "replicas": sample.replicas,
                "target": sample.target,
                "starting": sample.starting,
                "stopping": sample.stopping,
                "placement": sample.placement(),
                **served,
            }
        )
    return rows


def _first(samples: list[PoolSample], after: float, test) -> PoolSample | None:
    return next((s for s in samples if s.at >= after and test(s)), None)


def events(samples: list[tuple[str, PoolSample]], trace: Trace, low: int, high: int) -> dict:
    """Scale-out and scale-in times (seconds after the load started / stopped) and bounds."""
    pool = [s for _, s in samples]
    load_start, load_end = float(trace.start.min()), float(trace.end.max())
    after = [s for s in pool if s.at >= load_start]  # the pool peaks at or after the load's end
    peak = max((s.replicas for s in after), default=0)
    decided = _first(pool, load_start, lambda s: s.target > low)
    first_new = _first(pool, load_start, lambda s: s.replicas > low)
    at_peak = _first(pool, load_start, lambda s: s.replicas == peak)
    back_decided = _first(pool, load_end, lambda s: s.target == low)
    back = _first(pool, load_end, lambda s: s.replicas == low and not s.stopping + s.starting)

    def since(sample: PoolSample | None, moment: float) -> float | None:
        return None if sample is None else round(sample.at - moment, 1)

    return {
        "min_replicas": low,
        "max_replicas": high,
        "load_s": round(load_end - load_start, 1),
        "scale_out_decided_s": since(decided, load_start),
        "first_new_replica_running_s": since(first_new, load_start),
        "peak_replicas": peak,
        "peak_running_s": since(at_peak, load_start) if peak > low else None,
        "highest_target": max(s.target for s in pool),
        "most_replicas_seen": max(s.replicas + s.starting for s in pool),
        "nodes_used_after_load_start": sorted({n for s in after for n in s.nodes}),
        "scale_in_decided_s": since(back_decided, load_end),
        "back_at_min_s": since(back, load_end),
        "requests": int(trace.start.size),
        "failed_requests": int(trace.failed.sum()),
        "load_start": load_start,
        "load_end": load_end,
        "first_new_at": first_new.at if first_new else None,
        "peak_at": at_peak.at if at_peak and peak > low else None,
    }


def phases(trace: Trace, found: dict, idle_start: float, end: float) -> list[dict]:
    """Throughput and latency per phase; the load split at the replica changes."""
    start, stop = found["load_start"], found["load_end"]
    new, peak = found["first_new_at"] or stop, found["peak_at"] or stop
    windows = [
        ("idle baseline", idle_start, start),
        (f"load, {found['min_replicas']} replica(s) (before scale-out)", start, min(new, stop)),
        ("load, scaling out", min(new, stop), min(peak, stop)),
        (f"load, at peak ({found['peak_replicas']} replicas)", min(peak, stop), stop),
        ("load, whole phase", start, stop),
        ("idle after load", stop, end),
    ]
    return [
        {"phase": name, "seconds": round(b - a, 1), **trace.window(a, b)}
        for name, a, b in windows
        if b - a >= 0.5
    ]


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


TIMELINE = ("t_s", "phase", "replicas", "target", "starting", "stopping", "placement")
TIMELINE += ("requests_per_s", "p50_ms", "p99_ms", "errors")
PHASES = ("phase", "seconds", "requests", "requests_per_s", "p50_ms", "p99_ms", "errors")


def markdown(rows: list[dict], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def text(rows: list[dict], columns: tuple[str, ...]) -> str:
    cells = [list(columns), *[[_cell(row.get(c)) for c in columns] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def chart(rows: list[dict], found: dict, t0: float, path: Path, title: str) -> None:
    """Replicas (running and target) over time above req/s and p50/p99 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [row["t_s"] for row in rows]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    top.step(t, [row["replicas"] for row in rows], where="post", label="running replicas")
    top.step(t, [row["target"] for row in rows], where="post", ls="--", label="target")
    for bound, name in ((found["min_replicas"], "min"), (found["max_replicas"], "max")):
        top.axhline(bound, color="grey", ls=":", lw=1)
        top.annotate(name, (t[-1], bound), fontsize=8, va="bottom", ha="right", color="grey")
    top.set_ylim(0, found["max_replicas"] + 1)
    top.set_ylabel("pool replicas")
    top.legend(loc="upper left", fontsize=8)
    answered = [row["requests_per_s"] for row in rows]  # in the second before each sample
    bottom.bar(t, answered, width=-0.9, align="edge", color="tab:green")
    bottom.set_ylabel("requests/s (answered)")
    latency = bottom.twinx()
    for key, style in (("p50_ms", "-"), ("p99_ms", ":")):
        values = [np.nan if row[key] is None else row[key] for row in rows]
        latency.plot(t, values, ls=style, color="tab:red", label=key)
    latency.set_ylabel("latency ms")
    latency.legend(loc="upper right", fontsize=8)
    bottom.set_xlabel("seconds since the idle baseline started")
    for axis in (top, bottom):
        axis.axvspan(found["load_start"] - t0, found["load_end"] - t0, color="orange", alpha=0.1)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
