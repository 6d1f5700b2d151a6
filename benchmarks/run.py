"""serve-app against its peers, side by side, in one run:

    python -m benchmarks.run            # all peers, 15 s per load point (~4 min; first run +2 min)
    python -m benchmarks.run --quick    # serve-app + FastAPI baseline, 3 s points (CI smoke)

Seeds a registry under benchmarks/.work/ (first run), starts each peer in turn, drives
the same load generator (a separate process) at concurrency 1 and 16, and measures the
server's CPU per request and memory, serve-app's cold start and 10,000-row batch
scoring, and onnxruntime's in-process floor. Prints one table and writes
benchmarks/results/latest.{md,png,json} (quick.* with --quick). Every server it starts
is stopped, even on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from benchmarks import measure, models, peers, report
from benchmarks.peers import BENCH_DIR, Workspace

RESULTS = BENCH_DIR / "results"
WORK_DIR = BENCH_DIR / ".work"
QUICK_MODELS = 12  # a fresh clone seeds these in ~20 s instead of ~60-90 s for all 54


class Progress:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s] {message}", flush=True)


@contextlib.contextmanager
def quiet(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors too) to `log` for a while."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as target:
        os.dup2(target.fileno(), 1)
        os.dup2(target.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def source_commit(src: Path | None = None) -> str:
    """The benchmarked checkout's commit, `+dirty` when serve_app has uncommitted changes."""
    import subprocess

    where = str(src or peers.REPO_DIR)
    found = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], **_QUIET)
    if found.returncode != 0:
        return "unknown"
    changed = subprocess.run(["git", "-C", where, "status", "--porcelain", "serve_app"], **_QUIET)
    return found.stdout.strip() + ("+dirty" if changed.stdout.strip() else "")


_QUIET = {"capture_output": True, "text": True, "check": False}


def workspace(src: Path | None, count: int | None, root: Path = WORK_DIR) -> Workspace:
    if src is not None:
        src = src.resolve()
        sys.path.insert(0, str(src))  # before anything imports serve_app
    from serve_app.registry.seed import DEMO_MODELS

    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root, tuple(DEMO_MODELS[: count or len(DEMO_MODELS)]), src)


def prepare_registry(ws: Workspace, progress: Progress) -> dict[str, Path]:
    """Seed what the registry lacks and export every champion's ONNX graph."""
    progress(f"registry: {ws.registry} ({len(ws.models)} models)")
    with quiet(ws.log("registry")):
        models.seed(ws.registry, len(ws.models), progress=lambda _: None)
        models.start_canaries(ws.registry, list(ws.models), progress=lambda _: None)
        models.assign_pools(ws.registry, list(ws.models))
        return models.export_onnx(ws.registry, list(ws.models), ws.root / "onnx")


def peer_list(ws: Workspace, onnx: dict[str, Path], quick: bool, progress: Progress) -> list:
    chosen = [peers.serve_app(ws), peers.fastapi(ws, onnx_dir=ws.root / "onnx")]
    if quick:
        return chosen
    chosen.insert(1, peers.serve_app_pool(ws))
    venv = peers.install_mlserver(ws, progress)
    repository = ws.root / "mlserver" / "models"
    with quiet(ws.log("lightgbm")):
        models.write_mlserver_repository(onnx, repository, progress=lambda _: None)
    return [*chosen, peers.mlserver(ws, venv, repository), peers.mlflow_serve(ws)]


def memory_by_role(results: list[dict]) -> str:
    """serve-app's PSS per kind of process, from its first measured run."""
    measured = next((r["pss_by_role_mb"] for r in results if "pss_by_role_mb" in r), None)
    if not measured:
        return ""
    lines = ["", "serve-app's memory by process (PSS, MB, after the load points):", ""]
    lines += ["| process | PSS MB |", "|---|---:|"]
    lines += [f"| {name} | {mb:,.1f} |" for name, mb in measured.items()]
    return "\n".join(lines) + f"\n| total | {sum(measured.values()):,.1f} |\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: 2 peers, 3 s points")
    parser.add_argument("--duration", type=float, help="measured seconds per load point")
    parser.add_argument("--models", type=int, help="serve the first N demo models (max 54)")
    parser.add_argument("--only", help="run only the peers whose label contains this")
    parser.add_argument("--src", type=Path, help="benchmark the serve_app package in SRC")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help=f"default {WORK_DIR}")
    parser.add_argument("--out", help="results/OUT.{md,png,json} (default: latest, quick)")
    args = parser.parse_args(argv)
    progress = Progress()
    count = args.models or (QUICK_MODELS if args.quick else None)
    ws = workspace(args.src, count, args.work.resolve())
    plan = measure.Plan(
        duration_s=args.duration or (3.0 if args.quick else 15.0),
        warmup_s=1.0 if args.quick else 3.0,
        idle_s=2.0 if args.quick else 5.0,
    )
    onnx = prepare_registry(ws, progress)
    floor = measure.onnxruntime_floor(onnx[ws.models[0]])
    progress(f"onnxruntime floor: {floor}")
    chosen = peer_list(ws, onnx, args.quick, progress)
    results = [
        measure.measure_peer(peer, plan, progress)
        for peer in chosen
        if not args.only or args.only in peer.label
    ]
    table = report.rows(results, floor)
    title = (
        f"{len(ws.models)} fraud models, single-row requests round-robin "
        "(V2; MLflow format for mlflow-serve), "
        f"{plan.duration_s:g} s per point, {os.cpu_count()} cores"
    )
    print("\n" + title + "\n" + report.text(table))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (args.out or ("quick" if args.quick else "latest"))
    stamp = time.strftime("%Y-%m-%d %H:%M")
    notes = "\n".join(f"- {r['label']}: {r['notes']}" for r in results)
    out.with_suffix(".md").write_text(
        f"# Benchmark {stamp}{' (quick)' if args.quick else ''}\n\n{title}.\n\n"
        f"{report.markdown(table)}\n\n{notes}\n"
        f"- floor: serve-app's OnnxModel.predict in process ({floor['model']})\n"
        f"{memory_by_role(results)}"
    )
    report.chart(table, out.with_suffix(".png"), f"{title} ({stamp})")
    raw = {"title": title, "plan": asdict(plan), "floor": floor, "results": results}
    raw["machine"] = {"cores": os.cpu_count(), "python": platform.python_version()}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    progress(f"wrote {out}.md, .png and .json")
    failed = [r["label"] for r in results if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
