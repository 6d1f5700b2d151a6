"""The density benchmark runs end to end in quick mode: more models than the replicas'
LRU holds, every one answered, none failed, evictions seen (speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_quick_density_serves_every_model_without_failures(tmp_path):
    out, work = tmp_path / "density", tmp_path / "work"
    command = [sys.executable, "-m", "benchmarks.density", "--quick", "--work", str(work)]
    done = subprocess.run(
        [*command, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    traffic = result["requests"]
    assert traffic["failed"] == 0
    assert traffic["models_answered"] == result["registered"] == result["setup"]["models"]
    assert traffic["requests"] == result["loadgen"]["requests_started"]
    assert sum(result["counters"]["ray_serve_app_model_evictions"].values()) > 0
    assert all(0 < n <= result["setup"]["lru"] for n in result["loaded_end"].values())
    assert "failed requests" in out.with_suffix(".md").read_text()
