"""`serve-app export-state [--out FILE]`: what is serving, as YAML, for audits and diffs.

Read from the live service (`GET /admin/models`, with the admin token when there is one,
as the other commands read), so it records what the routers serve, not what the registry
says should serve: per model the champion, the challenger and its canary weight, each
answering version's share of the traffic in the routing table, the pool, the aliases and
the pin with whether it agrees. Models are written by name and versions by number, and
only the header's time changes between two exports of an unchanged service, so two
exports diff to exactly what moved.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from serve_app.cli_http import read_or_exit

HEADER = "# serve-app export-state: what was serving; from GET /admin/models\n"


def state_document(status: dict[str, Any], url: str, now: float) -> dict[str, Any]:
    """The export: a header, the pins file's state, then every model by name."""
    pins = status.get("pins") or {}
    cluster = status.get("cluster") or {}
    return {
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "service": url,
        "app": cluster.get("app"),
        "ray_cluster": cluster.get("ray_address"),
        "registry_uri": status.get("registry_uri"),
        "controller_epoch": status.get("controller_epoch"),
        "table_revision": status.get("table_revision"),
        "pins_file": {"path": pins.get("file"), "error": pins.get("error")},
        "models": {name: _model(status["models"][name]) for name in sorted(status["models"])},
    }


def _model(model: dict[str, Any]) -> dict[str, Any]:
    serving = model.get("serving") or {}
    pin = model.get("pin")
    challenger = serving.get("challenger")
    return {
        "champion": serving.get("champion"),
        "challenger": challenger,
        "canary_weight": float(serving.get("challenger_weight") or 0.0) if challenger else 0.0,
        "shadow": bool(serving.get("shadow")),
        "weights": weights(serving),
        "pool": serving.get("pool"),
        "aliases": dict(sorted((model.get("aliases") or {}).items())),
        "pin": None
        if pin is None
        else {
            "version": pin["version"],
            "agrees": pin["agrees"],
            "disagreement": pin["disagreement"],
            "serving": pin["serving"],
            "problem": pin["problem"],
        },
    }


def weights(serving: dict[str, Any]) -> dict[int, float]:
    """Percent of requests each version answers, as the routing table splits them; a shadow
    challenger answers none (it scores copies)."""
    if not serving:
        return {}
    champion, challenger = serving["champion"], serving.get("challenger")
    weight = float(serving.get("challenger_weight") or 0.0)
    if challenger is None or serving.get("shadow"):
        return {champion: 100.0}
    return dict(sorted({champion: 100.0 - weight, challenger: weight}.items()))


def render(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def cmd_export_state(args: argparse.Namespace) -> int:
    document = state_document(read_or_exit(args.url, "/admin/models"), args.url, time.time())
    text = render(document)
    if args.out is None:
        print(text, end="")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # written beside the target and renamed: a reader never sees half a file
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False) as scratch:
        scratch.write(text)
    os.replace(scratch.name, args.out)
    print(f"wrote {args.out} ({len(document['models'])} models)")
    return 0


def add_commands(commands: Any, common: argparse.ArgumentParser, default_url: str) -> None:
    export = commands.add_parser(
        "export-state", help="what is serving, as YAML (stdout or --out)", parents=[common]
    )
    export.add_argument("--url", default=default_url)
    export.add_argument("--out", type=Path, help="write to this file instead of stdout")
    export.set_defaults(func=cmd_export_state)
