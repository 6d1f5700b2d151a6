"""`serve-app labels import` and `serve-app quality`: the loop's last steps, from a shell.

A chargeback file is imported straight into the label store (the same validation and
per-row outcomes as the feedback endpoint, without a round trip per batch); quality is
read from the running service, which knows each version's role.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from serve_app.settings import AppSettings

PROBLEMS_SHOWN = 5
REQUIRED_COLUMNS = ("request_id", "label")


def cmd_labels_import(args: argparse.Namespace, settings: AppSettings) -> int:
    from serve_app.labels.feedback import ACCEPTED, INVALID, OUTCOMES
    from serve_app.labels.store import LabelStore

    path: Path = args.file
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as error:
        print(f"cannot read {path}: {error.strerror}", file=sys.stderr)
        return 2
    with handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            print(f"{path} lacks the column(s) {', '.join(missing)}", file=sys.stderr)
            return 2
        if "model" not in columns and not args.model:
            print("give --model, or a 'model' column in the file", file=sys.stderr)
            return 2
        store = LabelStore(settings.labels.database_uri or "", settings.labels.retention_days)
        counts: Counter[str] = Counter()
        problems: list[str] = []
        started = time.perf_counter()
        chunk: list[tuple[int, dict[str, Any]]] = []
        size = settings.labels.max_batch

        def flush() -> None:
            by_model: dict[str, list[tuple[int, dict[str, Any]]]] = {}
            for line, item in chunk:
                model = item.get("model") or args.model
                if not model:
                    counts[INVALID] += 1
                    problems.append(f"line {line}: no model (give --model or fill the column)")
                    continue
                by_model.setdefault(model, []).append((line, item))
            for model, rows in by_model.items():
                outcomes = store.record_raw(model, [item for _, item in rows], time.time())
                for (line, _), outcome in zip(rows, outcomes, strict=True):
                    counts[outcome.status] += 1
                    if outcome.status != ACCEPTED:
                        problems.append(f"line {line}: {outcome.error or outcome.status}")
            chunk.clear()
            done = sum(counts.values())
            elapsed = time.perf_counter() - started
            print(f"  {done:,} labels read, {counts[ACCEPTED]:,} accepted ({elapsed:.1f} s)")

        for line, row in enumerate(reader, start=2):  # line 1 is the header
            chunk.append((line, row))
            if len(chunk) >= size:
                flush()
        if chunk:
            flush()
    summary = ", ".join(f"{counts[s]:,} {s}" for s in OUTCOMES if counts[s])
    print(f"imported {path.name}: {summary or 'no rows'}")
    for problem in problems[:PROBLEMS_SHOWN]:
        print(f"  {problem}")
    if len(problems) > PROBLEMS_SHOWN:
        print(f"  ... and {len(problems) - PROBLEMS_SHOWN:,} more")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    query = f"?since={urllib.parse.quote(args.since)}" if args.since else ""
    try:
        with urllib.request.urlopen(
            f"{args.url}/admin/models/{args.name}/quality{query}", timeout=30
        ) as answer:
            report = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        print(f"{error.code}: {json.loads(error.read()).get('error')}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"serve-app is not reachable at {args.url}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(report["since"]))
    print(f"{report['model']}: live quality of predictions since {since} UTC")
    header = ("version", "role", "cohort", "rows", "labelled", "maturity", "frauds")
    figures = ("recall", "precision", "false_positive_rate", "alert_rate", "pr_auc")
    print(
        f"{header[0]:<8} {header[1]:<11} {header[2]:<11} {header[3]:>9} {header[4]:>9} "
        f"{header[5]:>8} {header[6]:>7} {'recall':>7} {'precision':>9} {'fpr':>7} "
        f"{'alerts':>7} {'pr_auc':>7}"
    )
    for version in report["versions"]:
        lines = [("total", version["total"])] + [(c["date"], c) for c in version["cohorts"]]
        for index, (cohort, q) in enumerate(lines):
            name = f"v{version['version']}" if index == 0 else ""
            role = version["role"] if index == 0 else ""
            values = " ".join(
                f"{_figure(q[f]):>{w}}" for f, w in zip(figures, (7, 9, 7, 7, 7), strict=True)
            )
            print(
                f"{name:<8} {role:<11} {cohort:<11} {q['rows']:>9,} {q['labelled']:>9,} "
                f"{_figure(q['maturity']):>8} {q['frauds']:>7,} {values}"
            )
    if not report["versions"]:
        print("  no logged predictions in the window")
    return 0


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def add_commands(commands: Any, common: argparse.ArgumentParser, settings_of, default_url: str):
    """The `labels` and `quality` subcommands (wired into cli.build_parser)."""
    labels = commands.add_parser("labels", help="late fraud labels", parents=[common])
    label_commands = labels.add_subparsers(dest="labels_command", required=True)
    importer = label_commands.add_parser(
        "import",
        help="import a chargeback CSV: request_id,label[,label_time][,row][,model]",
        parents=[common],
    )
    importer.add_argument("file", type=Path)
    importer.add_argument("--model", help="the model, when the file has no 'model' column")
    importer.set_defaults(func=lambda args: cmd_labels_import(args, settings_of(args)))

    quality = commands.add_parser(
        "quality", help="live recall, precision, false-positive rate per version", parents=[common]
    )
    quality.add_argument("name")
    quality.add_argument("--url", default=default_url)
    quality.add_argument("--since", help="a Unix time or an age: 7d, 30d (default: 30 days)")
    quality.add_argument("--json", action="store_true")
    quality.set_defaults(func=cmd_quality)
