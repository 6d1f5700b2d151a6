"""One table (terminal + markdown) and one bar chart (PNG) from a run's results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

COLUMNS = (
    ("server", "label"),
    ("c1 p50 ms", "c1_p50"),
    ("c1 p99 ms", "c1_p99"),
    ("c16 req/s", "c16_rps"),
    ("c16 p50 ms", "c16_p50"),
    ("CPU ms/req", "cpu_ms"),
    ("idle CPU %", "idle_cpu"),
    ("RSS MB", "rss_mb"),
    ("PSS MB", "pss_mb"),
    ("cold start ms", "cold_ms"),
    ("10k-row batch rows/s", "batch_rps"),
    ("startup s", "startup_s"),
    ("errors", "errors"),
)


def rows(results: list[dict], floor: dict | None) -> list[dict]:
    """Flatten each peer's results into the table's cells."""
    table = []
    for result in results:
        c1 = result.get("points", {}).get("c1", {})
        c16 = result.get("points", {}).get("c16", {})
        points = result.get("points", {}).values()
        table.append(
            {
                "label": result["label"] + (" (FAILED)" if "error" in result else ""),
                "c1_p50": c1.get("p50_ms"),
                "c1_p99": c1.get("p99_ms"),
                "c16_rps": c16.get("requests_per_s"),
                "c16_p50": c16.get("p50_ms"),
                "cpu_ms": c16.get("server_cpu_ms_per_request"),
                "idle_cpu": result.get("idle_cpu_pct"),
                "rss_mb": result.get("rss_mb"),
                "pss_mb": result.get("pss_mb"),
                "cold_ms": result.get("cold_start", {}).get("cold_start_ms"),
                "batch_rps": result.get("batch", {}).get("batch_rows_per_s"),
                "startup_s": result.get("startup_s"),
                "errors": sum(p.get("errors", 0) for p in points) if points else None,
            }
        )
    if floor:
        table.append(
            {
                "label": "onnxruntime in process (floor)",
                "c1_p50": round(floor["single_row_us_p50"] / 1000, 3),
                "c1_p99": round(floor["single_row_us_p99"] / 1000, 3),
                "batch_rps": floor["batch_rows_per_s"],
            }
        )
    return table


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        digits = 3 if value < 1 else 2 if value < 10 else 1 if value < 100 else 0
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


Columns = Sequence[tuple[str, str]]  # (title, key); the first is the left-aligned label


def markdown(table: list[dict], columns: Columns = COLUMNS) -> str:
    header = "| " + " | ".join(title for title, _ in columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(_cell(row.get(key)) for _, key in columns) + " |" for row in table]
    return "\n".join([header, rule, *body])


def text(table: list[dict], columns: Columns = COLUMNS) -> str:
    cells = [[title for title, _ in columns]]
    cells += [[_cell(row.get(key)) for _, key in columns] for row in table]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]

    def line(row: list[str]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    lines = [line(row) for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def chart(table: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("c1_p50", "p50 latency at concurrency 1 (ms, lower is better)", True),
        ("c16_rps", "requests/s at concurrency 16 (higher is better)", False),
        ("cpu_ms", "server CPU ms per request at c16 (lower is better)", False),
        ("rss_mb", "server memory, RSS MB (lower is better)", False),
    )
    palette = plt.get_cmap("tab10").colors
    colors = {row["label"]: palette[index % len(palette)] for index, row in enumerate(table)}
    figure, axes = plt.subplots(2, 2, figsize=(13, 7.5))
    for axis, (key, label, log) in zip(axes.flat, panels, strict=True):
        shown = [row for row in table if row.get(key) is not None]
        names = [row["label"] for row in shown]
        values = [row[key] for row in shown]
        bars = axis.barh(names, values, color=[colors[name] for name in names])
        axis.bar_label(bars, labels=[_cell(v) for v in values], padding=3, fontsize=8)
        axis.set_title(label, fontsize=10)
        axis.invert_yaxis()
        axis.tick_params(axis="y", labelsize=8)
        if log and values:
            axis.set_xscale("log")
        axis.margins(x=0.2)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
