"""`serve-app drift NAME` and `serve-app retrain NAME`: the drift monitor's view of a model,
and a retrain started by hand (it runs on the cluster; the gate and canary take it from
there, as for a drift-triggered one)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from serve_app.cli_http import admin, read_or_exit

PSI_SHOWN = 13  # the demo models' features and the score


def cmd_drift(args: argparse.Namespace) -> int:
    report = read_or_exit(args.url, f"/admin/models/{args.name}/drift")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(describe(report))
    return 0


def describe(report: dict[str, Any]) -> str:
    policy = report["policy"]
    lines = [f"{report['model']}: {report['status']}" + (
        f" ({', '.join(report['signals'])})" if report["signals"] else ""
    ) + (f", serving v{report['version']}" if report["version"] else "")]  # fmt: skip
    filling = report.get("filling")
    if filling:
        lines.append(f"  window filling: {filling['rows']:,} of {policy['window_rows']:,} rows")
    last = report.get("last_window")
    if last is None:
        lines.append("  no window judged yet")
    else:
        span = (last["end"] or 0) - (last["start"] or 0)
        lines.append(
            f"  last window: {last['rows']:,} rows over {span:.0f} s; alert rate "
            f"{last['alert_rate']:.2%} (reference {last['expected_alert_rate']:.2%}, "
            f"p = {last['alert_p_value']:.3g})"
        )
        ranked = sorted(last["psi"].items(), key=lambda kv: -(kv[1] or 0.0))[:PSI_SHOWN]
        for feature, psi in ranked:
            mark = "  <- over" if (psi or 0.0) > policy["psi_alarm"] else ""
            lines.append(f"    PSI {feature:<24} {'-' if psi is None else f'{psi:.3f}'}{mark}")
    retrain = report["retrain"]
    if retrain["running"]:
        lines.append(f"  retraining ({retrain['running']['trigger']}) since "
                     f"{_clock(retrain['running']['since'])}")  # fmt: skip
    elif retrain["wanted"]:
        lines.append(f"  retrain wanted ({retrain['wanted']['detail']}); next try "
                     f"{_clock(retrain['retry_at'])}")  # fmt: skip
    if retrain["last"]:
        last_job = retrain["last"]
        reason = f" [{last_job['reason']}]" if last_job.get("reason") else ""
        lines.append(f"  last retrain: {last_job['outcome']}{reason}: {last_job['detail']}")
    return "\n".join(lines)


def _clock(at: float | None) -> str:
    return "-" if at is None else time.strftime("%H:%M:%S", time.localtime(at))


def cmd_retrain(args: argparse.Namespace) -> int:
    path = f"/admin/models/{args.name}/drift"
    before = read_or_exit(args.url, path)["retrain"]["last"]
    started = admin(args, "retrain")
    if started or not args.wait:
        return started
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        time.sleep(2.0)
        retrain = read_or_exit(args.url, path)["retrain"]
        if retrain["running"] is None and retrain["last"] != before:
            last = retrain["last"]
            print(f"{last['outcome']}: {last['detail']} ({last['took_s']:.0f} s)")
            return 0 if last["outcome"] == "registered" else 1
        print(f"  retraining ... {args.wait - (deadline - time.monotonic()):.0f} s", flush=True)
    print(f"still running after {args.wait:g} s; see `serve-app drift {args.name}`")
    return 1


def add_commands(commands: Any, common: argparse.ArgumentParser, default_url: str) -> None:
    drift = commands.add_parser(
        "drift", help="the drift monitor's readings and retraining state", parents=[common]
    )
    drift.add_argument("name")
    drift.add_argument("--url", default=default_url)
    drift.add_argument("--json", action="store_true")
    drift.set_defaults(func=cmd_drift)
    retrain = commands.add_parser(
        "retrain", help="retrain on recent labelled traffic (a challenger)", parents=[common]
    )
    retrain.add_argument("name")
    retrain.add_argument("--url", default=default_url)
    retrain.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the outcome")
    retrain.set_defaults(func=cmd_retrain)
