"""The drift demonstration as a user runs it (`serve-app demo drift`): a real `serve-app up`
on a fresh home, a new fraud pattern, and the loop closed with no person in it: drift
detected, a retrain on the cluster, a challenger registered, the gate, the canary steps,
promotion; zero failed requests, and the home folder removed afterwards."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.e2e.up import BIN, user_env

STEPS = ("drift_detected", "retrain_started", "retrain_registered", "gate_passed", "promoted")


def test_the_demo_closes_the_loop_and_cleans_up(tmp_path):
    done = subprocess.run(
        [str(BIN / "serve-app"), "demo", "drift", "--steady", "20"],
        cwd=tmp_path,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    timeline = re.findall(r"^  \+\s*[\d.]+ s  (\w+)", done.stdout, flags=re.MULTILINE)
    positions = [timeline.index(step) for step in STEPS]
    assert positions == sorted(positions), timeline
    assert "step_reached" in timeline and "rolled_back" not in timeline, timeline
    assert re.search(r"[\d,]+ requests, 0 failed; outcome: promoted", done.stdout), out[-2000:]
    home = Path(re.search(r"home (\S+);", done.stdout).group(1))
    assert not home.exists()
