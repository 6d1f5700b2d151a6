"""The label store at production size: logged rows in, late labels in, one model's quality out.

    python -m benchmarks.label_join                               # 10M rows, 1M labels
    python -m benchmarks.label_join --rows 200000 --labels 20000  # a quick run (~1 min)

On this machine, with the store's default backend (SQLite in a fresh temporary home under
benchmarks/.work/, removed afterwards unless --keep), it times:

1. inserting `--rows` logged predictions of one model (30 daily cohorts ending at the last
   UTC midnight, champion v1 and a 10% canary challenger v2, single-row requests with
   random 32-hex request ids as the router makes them) through `LabelStore.add_predictions`,
   the prediction log writer's path, in the writer's 2,000-row batches, in time order;
2. importing `--labels` labels (about 10% of the rows, older cohorts more mature) from a
   generated chargeback CSV with `serve-app labels import` itself (a subprocess: the CLI
   reads the shipped configs/serve_config.yaml and resolves the home's labels.db);
3. `labels.report.model_quality` over the whole window, three times; then where its time
   goes: each SQL statement it runs, timed alone and with SQLite's EXPLAIN QUERY PLAN, and
   a cProfile of one call.

Prints the tables and writes benchmarks/results/label-join.{md,json} (label-join-quick.*
when --rows is below a million). Refuses to start, or stops, when the disk would fill.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import io
import json
import math
import os
import platform
import pstats
import re
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from benchmarks import report
from benchmarks.peers import BENCH_DIR, REPO_DIR, VENV_BIN
from benchmarks.run import WORK_DIR, Progress, source_commit
from serve_app.labels.report import model_quality
from serve_app.labels.store import LabelStore
from serve_app.predictions.records import SECONDS_PER_DAY, LoggedBatch
from serve_app.registry.features import FEATURES
from serve_app.settings import LABELS_DATABASE_ENV, PredictionLogSettings

RESULTS = BENCH_DIR / "results"
MODEL = "fraud-card-eu"
DAYS = 30
CHALLENGER_SHARE = 0.10  # v2 is a canary at 10%
FRAUD_RATE = 0.01
THRESHOLD = 0.5
MATURITY_DAYS = 15.0  # labels of a cohort aged a days: share ~ 1 - exp(-a / 15)
WRITER_BATCH = PredictionLogSettings().batch_records  # rows the writer hands a sink at once
QUALITY_CALLS = 3
ROLES = {1: "champion", 2: "challenger"}
# Disk per row, measured here (SQLite file, the table and its 3 indexes): kept generous.
BYTES_PER_PREDICTION = 260
BYTES_PER_LABEL = 220  # labels table + its indexes + the CSV
DISK_MARGIN = 1024**3  # never leave the machine with less free space than this
IMPORT_LINE = re.compile(r"([\d,]+) labels read, ([\d,]+) accepted \(([\d.]+) s\)")


@dataclass
class Data:
    """What the generator decided, kept for the labels CSV."""

    start: float  # the first cohort's midnight (UTC)
    end: float
    label_ids: list[str]
    label_values: list[np.ndarray]
    label_times: list[np.ndarray]


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _db_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in home.glob("labels.db*") if p.is_file())


def _maturity_weight(age_days: np.ndarray) -> np.ndarray:
    return 1.0 - np.exp(-age_days / MATURITY_DAYS)


def insert_predictions(
    store: LabelStore, home: Path, rows: int, labels: int, progress: Progress
) -> tuple[dict, Data]:
    """Generate `rows` logged single-row requests and insert them as the writer does."""
    rng = np.random.default_rng(2024)
    now = time.time()
    end = math.floor(now / SECONDS_PER_DAY) * SECONDS_PER_DAY  # the last UTC midnight
    start = end - DAYS * SECONDS_PER_DAY
    span = end - start
    # p(labelled) = labels/rows * weight(age) / mean weight over the window
    ages = (now - np.linspace(start, end, 10_001)) / SECONDS_PER_DAY
    label_scale = labels / rows / float(_maturity_weight(ages).mean())
    data = Data(start, end, [], [], [])
    features = tuple(FEATURES)
    features_row = np.zeros((1, len(features)), np.float32)  # add_predictions never reads it
    insert_s, segment_s, segment_rows, curve = 0.0, 0.0, 0, []
    step = max(WRITER_BATCH, rows // 20 // WRITER_BATCH * WRITER_BATCH)
    done = 0
    while done < rows:
        n = min(WRITER_BATCH, rows - done)
        times = start + (done + np.arange(n) + rng.random(n)) * (span / rows)
        raw = rng.bytes(16 * n).hex()
        ids = [raw[i * 32 : i * 32 + 32] for i in range(n)]
        challenger = rng.random(n) < CHALLENGER_SHARE
        fraud = rng.random(n) < FRAUD_RATE
        scores = np.where(
            fraud,
            np.where(challenger, rng.beta(4.5, 2.0, n), rng.beta(5.0, 2.0, n)),
            np.where(challenger, rng.beta(1.0, 25.0, n), rng.beta(1.0, 30.0, n)),
        ).astype(np.float32)
        batches = [
            LoggedBatch(
                ids[i],
                float(times[i]),
                MODEL,
                2 if challenger[i] else 1,
                "challenger" if challenger[i] else "champion",
                "fast",
                None,
                features,
                features_row,
                scores[i : i + 1],
                THRESHOLD,
                1.0,
            )
            for i in range(n)
        ]
        age = (now - times) / SECONDS_PER_DAY
        labelled = np.flatnonzero(rng.random(n) < label_scale * _maturity_weight(age))
        data.label_ids += [ids[i] for i in labelled]
        data.label_values.append(fraud[labelled].astype(np.int8))
        delay = rng.random(labelled.size) * (now - times[labelled])  # known by now
        data.label_times.append(times[labelled] + delay)
        began = time.perf_counter()
        store.add_predictions(batches)
        took = time.perf_counter() - began
        insert_s += took
        segment_s += took
        segment_rows += n
        done += n
        if done % step == 0 or done == rows:
            db, free = _db_bytes(home), _free_bytes(home)
            curve.append({"rows": done, "segment_rows_per_s": round(segment_rows / segment_s)})
            progress(
                f"predictions: {done:,}/{rows:,} rows, {done / insert_s:,.0f} rows/s "
                f"(last {segment_rows:,}: {segment_rows / segment_s:,.0f} rows/s), "
                f"labels.db {db / 2**20:,.0f} MB, disk free {free / 2**30:.1f} GB"
            )
            segment_s, segment_rows = 0.0, 0
            if free < DISK_MARGIN:
                raise RuntimeError(f"stopping: less than {DISK_MARGIN / 2**30:.0f} GB free")
    db = _db_bytes(home)
    result = {
        "rows": rows,
        "insert_s": round(insert_s, 1),
        "rows_per_s": round(rows / insert_s),
        "writer_batch_rows": WRITER_BATCH,
        "db_mb": round(db / 2**20, 1),
        "bytes_per_row": round(db / rows),
        "curve": curve,
        "window": [time.strftime("%Y-%m-%d", time.gmtime(t)) for t in (start, end - 1)],
    }
    return result, data


def write_labels_csv(data: Data, path: Path) -> int:
    """A chargeback file: request_id,label,label_time, in the order outcomes became known."""
    values = np.concatenate(data.label_values)
    times = np.concatenate(data.label_times)
    order = np.argsort(times, kind="stable")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("request_id", "label", "label_time"))
        ids = data.label_ids
        writer.writerows((ids[i], int(values[i]), f"{times[i]:.3f}") for i in order)
    return len(order)


def import_labels(home: Path, path: Path, expected: int, progress: Progress) -> dict:
    """`serve-app labels import` on the file, as an operator runs it; its own lines parsed."""
    command = [str(VENV_BIN / "serve-app"), "--home", str(home), "labels", "import", str(path)]
    command += ["--model", MODEL]
    env = {k: v for k, v in os.environ.items() if k not in (LABELS_DATABASE_ENV, "SERVE_APP_HOME")}
    progress(f"labels: {' '.join(command[1:])}")
    chunks, lines = [], []
    shown = max(1, expected // 10 // 10_000)  # about ten progress lines
    began = time.perf_counter()
    with subprocess.Popen(
        command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.rstrip())
            if match := IMPORT_LINE.search(line):
                read, accepted, elapsed = (match.group(i).replace(",", "") for i in (1, 2, 3))
                chunks.append((int(read), int(accepted), float(elapsed)))
                if len(chunks) % shown == 0:
                    progress(f"labels: {line.strip()}")
    wall = time.perf_counter() - began
    if child.returncode != 0 or not chunks:
        raise RuntimeError(f"labels import failed ({child.returncode}): {lines[-5:]}")
    read, accepted, elapsed = chunks[-1]
    progress(f"labels: {lines[-1].strip()} ({wall:.1f} s wall)")
    per_chunk = np.diff([0.0] + [c[2] for c in chunks])
    if len(chunks) > 1 and chunks[-1][0] - chunks[-2][0] < chunks[0][0]:
        per_chunk = per_chunk[:-1]  # the last, partial chunk
    tenth = max(1, len(per_chunk) // 10)
    return {
        "labels": read,
        "accepted": accepted,
        "wall_s": round(wall, 1),
        "import_s": round(elapsed, 1),  # the CLI's own clock: after start-up and imports
        "startup_s": round(wall - elapsed, 1),
        "labels_per_s": round(read / elapsed),
        "chunk_rows": chunks[0][0],
        "first_chunks_s": round(float(per_chunk[:tenth].mean()), 3),
        "last_chunks_s": round(float(per_chunk[-tenth:].mean()), 3),
        "summary": lines[-1].strip(),
    }


@contextlib.contextmanager
def captured_statements():
    """Every SQL statement (and its parameters) any engine runs inside the block."""
    found: list[tuple[str, tuple]] = []

    def before(_conn, _cursor, statement, parameters, _context, _many) -> None:
        found.append((statement, tuple(parameters)))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
    try:
        yield found
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", before)


def explain(db: Path, statements: list[tuple[str, tuple]]) -> list[dict]:
    """Each statement alone on a fresh connection: its plan, rows and time to fetch them all."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        out = []
        for sql, parameters in statements:
            plan = [r[3] for r in connection.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)]
            began = time.perf_counter()
            fetched = len(connection.execute(sql, parameters).fetchall())
            out.append(
                {
                    "sql": " ".join(sql.split()),
                    "plan": plan,
                    "rows": fetched,
                    "seconds": round(time.perf_counter() - began, 2),
                }
            )
        return out


def profile_top(call, limit: int = 12) -> list[dict]:
    profiler = cProfile.Profile()
    profiler.runcall(call)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():
        where = f"{Path(file).name}:{line}({name})" if line else name
        rows.append({"function": where, "calls": calls, "own_s": own, "cum_s": cumulative})
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    top = rows[:limit]
    return [{**r, "own_s": round(r["own_s"], 2), "cum_s": round(r["cum_s"], 2)} for r in top]


def quality(store: LabelStore, db: Path, since: float, progress: Progress) -> dict:
    """model_quality over the window, QUALITY_CALLS times; then where one call spends."""
    seconds, found = [], None
    for index in range(QUALITY_CALLS):
        began = time.perf_counter()
        found = model_quality(store, MODEL, since, ROLES)
        seconds.append(time.perf_counter() - began)
        progress(f"quality: call {index + 1}/{QUALITY_CALLS}: {seconds[-1]:.1f} s")
    assert found is not None
    with captured_statements() as statements:
        inputs_began = time.perf_counter()
        store.quality_inputs(MODEL, since)
        inputs_s = time.perf_counter() - inputs_began
    progress(f"quality: store.quality_inputs alone {inputs_s:.1f} s; explaining its statements")
    plans = explain(db, statements)
    for plan in plans:
        steps = " / ".join(plan["plan"])
        progress(f"quality: {plan['rows']:,} rows in {plan['seconds']} s: {steps}")
    profile = profile_top(lambda: model_quality(store, MODEL, since, ROLES))
    versions = [
        {
            "version": v.version,
            "role": v.role,
            "cohorts": len(v.cohorts),
            "rows": v.total.rows,
            "labelled": v.total.labelled,
            "frauds": v.total.frauds,
            "recall": _rounded(v.total.recall, 3),
            "fpr": _rounded(v.total.false_positive_rate, 5),
            "pr_auc": _rounded(v.total.pr_auc, 3),
        }
        for v in found
    ]
    sql_s = sum(p["seconds"] for p in plans)
    return {
        "calls_s": [round(s, 2) for s in seconds],
        "first_s": round(seconds[0], 2),
        "median_s": round(statistics.median(seconds), 2),
        "quality_inputs_s": round(inputs_s, 2),
        "sql_alone_s": round(sql_s, 2),
        "statements": plans,
        "profile": profile,
        "versions": versions,
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# -- report ----------------------------------------------------------------------------
STEP_COLUMNS = (("step", "step"), ("rows", "rows"), ("seconds", "seconds"), ("rows/s", "rate"))
VERSION_COLUMNS = (
    ("version", "version"), ("role", "role"), ("cohorts", "cohorts"), ("rows", "rows"),
    ("labelled", "labelled"), ("frauds", "frauds"), ("recall", "recall"), ("fpr", "fpr"),
    ("pr_auc", "pr_auc"),
)  # fmt: skip


def steps_table(result: dict) -> list[dict]:
    ins, imp, q = result["insert"], result["import"], result["quality"]
    rows = ins["rows"]
    return [
        {
            "step": f"insert predictions (add_predictions, {ins['writer_batch_rows']:,}-row calls)",
            "rows": rows,
            "seconds": ins["insert_s"],
            "rate": ins["rows_per_s"],
        },
        {
            "step": "serve-app labels import (CLI, own clock)",
            "rows": imp["labels"],
            "seconds": imp["import_s"],
            "rate": imp["labels_per_s"],
        },
        {
            "step": "serve-app labels import (wall, with start-up)",
            "rows": imp["labels"],
            "seconds": imp["wall_s"],
            "rate": round(imp["labels"] / imp["wall_s"]),
        },
        {
            "step": "model_quality, first call",
            "rows": rows,
            "seconds": q["first_s"],
            "rate": round(rows / q["first_s"]),
        },
        {
            "step": f"model_quality, median of {QUALITY_CALLS}",
            "rows": rows,
            "seconds": q["median_s"],
            "rate": round(rows / q["median_s"]),
        },
        {
            "step": "  of which store.quality_inputs (SQL + row fetch)",
            "rows": rows,
            "seconds": q["quality_inputs_s"],
        },
    ]


def markdown(result: dict) -> str:
    q, ins, imp = result["quality"], result["insert"], result["import"]
    lines = [
        f"# Label store at scale ({result['stamp']})",
        "",
        result["title"] + f"; serve_app at {result['commit']}, SQLite {result['sqlite']}.",
        "",
        report.markdown(steps_table(result), STEP_COLUMNS),
        "",
        f"labels.db after the inserts: {ins['db_mb']:,} MB ({ins['bytes_per_row']} bytes per "
        f"prediction row). Import: {imp['summary']}; {imp['chunk_rows']:,}-label chunks took "
        f"{imp['first_chunks_s']} s each at first, {imp['last_chunks_s']} s at the end; CLI "
        f"start-up {imp['startup_s']} s.",
        "",
        "Insert rate as the table grew (rows/s over each segment):",
        "",
        "| rows in store | rows/s |",
        "|---:|---:|",
        *[f"| {p['rows']:,} | {p['segment_rows_per_s']:,} |" for p in ins["curve"]],
        "",
        "What `model_quality` returned (totals per version):",
        "",
        report.markdown(q["versions"], VERSION_COLUMNS),
        "",
        "Its SQL statements, each run alone (fetching every row) with SQLite's plan:",
        "",
        "| rows | seconds | plan | statement |",
        "|---:|---:|---|---|",
        *[
            f"| {s['rows']:,} | {s['seconds']} | {'; '.join(s['plan'])} | `{s['sql']}` |"
            for s in q["statements"]
        ],
        "",
        "cProfile of one `model_quality` call (top functions by own time):",
        "",
        "| function | calls | own s | cumulative s |",
        "|---|---:|---:|---:|",
        *[
            f"| `{p['function']}` | {p['calls']:,} | {p['own_s']} | {p['cum_s']} |"
            for p in q["profile"]
        ],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="logged prediction rows")
    parser.add_argument("--labels", type=int, default=1_000_000, help="labels imported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument(
        "--dir", type=Path, default=WORK_DIR, help=f"temporary home in (default {WORK_DIR})"
    )
    parser.add_argument("--out", help="results/OUT.{md,json} (default label-join[-quick])")
    args = parser.parse_args(argv)
    if not 0 < args.labels <= args.rows // 2:
        parser.error("--labels must be positive and at most half of --rows")
    progress = Progress()
    args.dir.mkdir(parents=True, exist_ok=True)
    need = args.rows * BYTES_PER_PREDICTION + args.labels * BYTES_PER_LABEL
    free = _free_bytes(args.dir)
    if free - need < DISK_MARGIN:
        print(
            f"not starting: about {need / 2**30:.1f} GB needed under {args.dir}, "
            f"{free / 2**30:.1f} GB free (keeping {DISK_MARGIN / 2**30:.0f} GB); try fewer --rows",
        )
        return 2
    home = Path(tempfile.mkdtemp(prefix="label-join-", dir=args.dir))
    db = home / "labels.db"
    progress(f"home {home}: {args.rows:,} rows, {args.labels:,} labels, ~{need / 2**30:.1f} GB")
    result: dict = {"commit": source_commit()}  # at the start: the code this run imports
    try:
        store = LabelStore(f"sqlite:///{db}", retention_days=180)
        result["insert"], data = insert_predictions(store, home, args.rows, args.labels, progress)
        labels_csv = home / "chargebacks.csv"
        written = write_labels_csv(data, labels_csv)
        progress(f"labels: wrote {written:,} rows to {labels_csv.name}")
        result["import"] = import_labels(home, labels_csv, written, progress)
        result["quality"] = quality(store, db, data.start, progress)
    finally:
        if args.keep:
            progress(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    result["stamp"] = time.strftime("%Y-%m-%d %H:%M")
    result["title"] = (
        f"SQLite (the default store), one model, {args.rows:,} logged single-row predictions over "
        f"{DAYS} daily cohorts ({result['insert']['window'][0]} to {result['insert']['window'][1]}"
        f"), v1 champion and v2 at {CHALLENGER_SHARE:.0%}, {result['import']['labels']:,} labels"
        f" ({FRAUD_RATE:.0%} fraud), {os.cpu_count()} cores"
    )
    result["machine"] = {"cores": os.cpu_count(), "python": platform.python_version()}
    result["sqlite"] = sqlite3.sqlite_version
    table = steps_table(result)
    print("\n" + result["title"] + "\n" + report.text(table, STEP_COLUMNS))
    print("\n" + report.text(result["quality"]["versions"], VERSION_COLUMNS))
    RESULTS.mkdir(exist_ok=True)
    name = args.out or ("label-join" if args.rows >= 1_000_000 else "label-join-quick")
    out = RESULTS / name
    out.with_suffix(".md").write_text(markdown(result))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    progress(f"wrote {out}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
