"""Autoscaling, shown on a local multi-node Ray cluster: the router scales out under
sustained load and back in when idle, within its configured bounds.

    python -m benchmarks.autoscaling [--work DIR] [--out benchmarks/results/autoscaling] [--quick]

Starts a head (0 CPUs) and worker raylets on this machine, seeds the demo models if the
work folder's registry has none, deploys serve-app with short autoscaling delays (through
AppSettings, the config file's schema), then runs three phases: an idle baseline,
sustained load at concurrency 16 round-robin over the models (benchmarks.loadgen in its
own process), and idle again until the pool is back at min_replicas. The pool is sampled
every second (running replicas, target, node of each). Prints a timeline and writes
OUT.md, OUT.json and OUT.png. Every phase is bounded, traffic goes to 127.0.0.1 only, and
the cluster is stopped whatever happens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import autoscaling_report as report
from benchmarks import models
from benchmarks.localcluster import PoolSample, deploy, free_port, local_cluster, sample_pool
from benchmarks.peers import MULTIPLEX_HEADER, REPO_DIR, Workspace
from benchmarks.run import QUICK_MODELS, RESULTS, WORK_DIR, Progress, quiet, workspace
from serve_app.settings import AppSettings, RouterSettings

# Short delays so that one run shows both directions in about three minutes.
POOL = RouterSettings(
    min_replicas=1,
    max_replicas=4,
    target_ongoing_requests=2,
    upscale_delay_s=2,
    downscale_delay_s=10,
)
STARTUP_BUDGET_S = 420.0  # cluster start, deploy, first seeding: the rest is planned below


@dataclass(frozen=True)
class Plan:
    workers: int = 3
    idle_s: float = 10.0
    load_s: float = 50.0
    cooldown_max_s: float = 90.0
    concurrency: int = 16
    models: int | None = None  # None: all 54 demo models
    pool: RouterSettings = field(default_factory=lambda: POOL)

    @property
    def cpus_per_worker(self) -> int:
        """Enough that max_replicas fit on the workers together, but not all on one."""
        need = self.pool.max_replicas * self.pool.num_cpus
        return max(1, math.ceil(need / self.workers))

    @property
    def budget_s(self) -> float:
        return STARTUP_BUDGET_S + self.idle_s + self.load_s + 60.0 + self.cooldown_max_s


QUICK = Plan(workers=2, idle_s=5.0, load_s=30.0, cooldown_max_s=75.0, models=QUICK_MODELS)


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2.0) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"serve-app at {url} not ready within {timeout_s:.0f} s")


class Watch:
    """Samples the pool once a second, tagging each sample with the current phase."""

    def __init__(self, labels: dict[str, str], progress: Progress) -> None:
        self.labels = labels
        self.progress = progress
        self.samples: list[tuple[str, PoolSample]] = []
        self._shown: tuple = ()
        self._shown_at = 0.0

    def phase(self, name: str, max_s: float, done: Callable[[PoolSample], bool]) -> None:
        """Sample until `done(sample)` or `max_s` seconds, whichever comes first."""
        deadline = time.monotonic() + max_s
        next_at = time.monotonic()
        while True:
            sample = sample_pool(self.labels)
            self.samples.append((name, sample))
            self._show(name, sample)
            if done(sample) or time.monotonic() >= deadline:
                return
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _show(self, name: str, s: PoolSample) -> None:
        state = (name, s.replicas, s.target, s.starting, s.stopping, s.placement())
        if state != self._shown or time.monotonic() - self._shown_at >= 10.0:
            self.progress(
                f"{name}: {s.replicas} running (target {s.target}, starting {s.starting}, "
                f"stopping {s.stopping}) {s.placement()}"
            )
            self._shown, self._shown_at = state, time.monotonic()


def start_load(url: str, names: tuple[str, ...], plan: Plan, ws: Workspace) -> subprocess.Popen:
    """benchmarks.loadgen in its own process, tracing every request to a CSV."""
    command = [sys.executable, "-m", "benchmarks.loadgen"]
    command += [
        "--url",
        f"{url}/v2/models/{{model}}/infer",
        "--models",
        ",".join(names),
        "--concurrency",
        str(plan.concurrency),
    ]
    command += ["--duration", str(plan.load_s), "--warmup", "0"]
    command += ["--model-header", MULTIPLEX_HEADER, "--trace", str(trace_path(ws))]
    log_path = ws.log("autoscaling-loadgen")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL
        )


def trace_path(ws: Workspace) -> Path:
    return ws.root / "autoscaling-trace.csv"


def run(plan: Plan, ws: Workspace, progress: Progress) -> tuple[list, dict, dict]:
    """The three phases on a fresh local cluster: (samples, loadgen summary, layout)."""
    pool = plan.pool
    settings = AppSettings(home=str(ws.registry), router=pool)
    layout = {"workers": plan.workers, "cpus_per_worker": plan.cpus_per_worker, "head_cpus": 0}
    progress(
        f"starting a local Ray cluster: head (0 CPUs) + {plan.workers} worker raylets "
        f"x {plan.cpus_per_worker} CPU"
    )
    with local_cluster(plan.workers, plan.cpus_per_worker) as labels:
        url = deploy(settings, free_port())
        wait_ready(url)
        progress(
            f"serve-app ready at {url}; pool {pool.min_replicas}..{pool.max_replicas} "
            f"replicas, target {pool.target_ongoing_requests:g} ongoing, upscale delay "
            f"{pool.upscale_delay_s:g} s, downscale delay {pool.downscale_delay_s:g} s"
        )
        watch = Watch(labels, progress)
        watch.phase("idle", plan.idle_s, lambda _: False)
        progress(
            f"load: concurrency {plan.concurrency} over {len(ws.models)} models "
            f"for {plan.load_s:g} s"
        )
        load = start_load(url, ws.models, plan, ws)
        try:
            watch.phase("load", plan.load_s + 60.0, lambda _: load.poll() is not None)
            output = load.communicate(timeout=60.0)[0].decode().strip()
            if load.returncode != 0 or not output:
                log = ws.log("autoscaling-loadgen")
                raise RuntimeError(f"loadgen failed ({load.returncode}); see {log}")
            summary = json.loads(output.splitlines()[-1])
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(10.0)
        progress(
            f"load done: {summary['requests_per_s']} req/s, {summary['errors']} errors; "
            f"idle until back at min ({plan.cooldown_max_s:g} s at most)"
        )

        def at_min(s: PoolSample) -> bool:
            low = pool.min_replicas
            return s.replicas == low and s.target == low and not s.starting + s.stopping

        watch.phase("idle after load", plan.cooldown_max_s, at_min)
        layout["nodes"] = sorted(labels.values())
    progress("cluster stopped")
    return watch.samples, summary, layout


def write(
    out: Path, plan: Plan, command: str, samples: list, summary: dict, layout: dict, ws: Workspace
) -> tuple[str, dict]:
    """Write OUT.md, .json and .png; return the terminal report and the scale events."""
    trace = report.Trace.read(trace_path(ws))
    t0 = samples[0][1].at
    rows = report.timeline(samples, trace, t0)
    found = report.events(samples, trace, plan.pool.min_replicas, plan.pool.max_replicas)
    stages = report.phases(trace, found, t0, samples[-1][1].at)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    title = (
        f"serve-app pool autoscaling, {plan.workers} worker raylets + head, "
        f"concurrency {plan.concurrency} over {len(ws.models)} models, "
        f"{os.cpu_count()} shared cores ({stamp})"
    )
    lines = summary_lines(found, plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(
        f"# Autoscaling {stamp}\n\n{title}.\n\n"
        f"`{command}`; pool settings "
        f"(AppSettings.router): `{plan.pool.model_dump_json()}`.\n\n"
        + "\n".join(f"- {line}" for line in lines)
        + f"\n\n## Phases\n\n{report.markdown(stages, report.PHASES)}\n\n"
        f"## Timeline (one sample a second)\n\n{report.markdown(rows, report.TIMELINE)}\n\n"
        "Replica counts come from the Serve controller (running replicas, the autoscaler's "
        "target, and the node of each); req/s and latency are the requests the load "
        "generator saw complete in each one-second interval. Times are good to ~1 s.\n"
    )
    report.chart(rows, found, t0, out.with_suffix(".png"), title)
    document = {
        "title": title,
        "plan": asdict(plan) | {"pool": plan.pool.model_dump()},
        "cluster": layout,
        "events": found,
        "phases": stages,
        "timeline": rows,
        "loadgen": {k: v for k, v in summary.items() if k != "spec"},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
    }
    out.with_suffix(".json").write_text(json.dumps(document, indent=1))
    terminal = [report.text(rows, report.TIMELINE), "", report.text(stages, report.PHASES)]
    return "\n".join([*terminal, "", *lines]), found


def summary_lines(found: dict, plan: Plan) -> list[str]:
    def s(value: float | None) -> str:
        return "never" if value is None else f"{value:g} s"

    return [
        f"scale-out: target raised {s(found['scale_out_decided_s'])} after the load started; "
        f"first new replica running after {s(found['first_new_replica_running_s'])}; "
        f"peak {found['peak_replicas']} replicas after {s(found['peak_running_s'])}",
        f"bounds: min {found['min_replicas']}, max {found['max_replicas']}; highest target "
        f"{found['highest_target']}, most replicas at once (running + starting) "
        f"{found['most_replicas_seen']}",
        f"nodes holding pool replicas from the load's start on: "
        f"{', '.join(found['nodes_used_after_load_start'])}",
        f"scale-in: target back to {found['min_replicas']} {s(found['scale_in_decided_s'])} "
        f"after the load stopped; back at {found['min_replicas']} running replica(s) after "
        f"{s(found['back_at_min_s'])} (limit {plan.cooldown_max_s:g} s)",
        f"requests: {found['requests']} sent, {found['failed_requests']} failed",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 workers, 12 models, 30 s load")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help=f"default {WORK_DIR}")
    parser.add_argument("--out", type=Path, help="OUT.{md,json,png}; default results/autoscaling")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    out = args.out or RESULTS / ("autoscaling-quick" if args.quick else "autoscaling")
    progress = Progress()
    ws = workspace(None, plan.models, args.work.resolve())

    def overrun(signum: int, frame: object) -> None:
        raise TimeoutError(f"the run took over {plan.budget_s:.0f} s")

    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(int(plan.budget_s))
    try:
        progress(f"registry: {ws.registry} ({len(ws.models)} models)")
        with quiet(ws.log("registry")):
            models.seed(ws.registry, len(ws.models), progress=lambda _: None)
        samples, summary, layout = run(plan, ws, progress)
    finally:
        signal.alarm(0)
    command = " ".join(["python -m benchmarks.autoscaling", *(argv or sys.argv[1:])])
    text, found = write(out.resolve(), plan, command, samples, summary, layout, ws)
    print("\n" + text, flush=True)
    progress(f"wrote {out}.md, .json and .png")
    shown = found["peak_replicas"] > plan.pool.min_replicas and found["back_at_min_s"] is not None
    return 0 if shown and found["failed_requests"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
