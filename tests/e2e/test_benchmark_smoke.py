"""The benchmark command runs end to end (a short run: performance is not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_quick_benchmark_runs_and_reports(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--work",
            str(tmp_path / "work"),
            "--out",
            "smoke",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((ROOT / "benchmarks/results/smoke.json").read_text())
    text = json.dumps(report)
    assert "serve-app" in text and "fastapi" in text
    assert (ROOT / "benchmarks/results/smoke.md").is_file()
    assert (ROOT / "benchmarks/results/smoke.png").stat().st_size > 1000
