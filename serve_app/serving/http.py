"""The HTTP surface: which handler answers a method and path.

A table of patterns instead of a web framework: on the scoring hot path a framework's
routing, validation and dependency layers cost more than scoring a tree model does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from serve_app.protocol.errors import BadRequest, MethodNotAllowed, NotFound

_NAME = r"(?P<name>[^/]+)"
_VERSION = r"(?:/versions/(?P<version>[^/]+))?"

ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (method, handler, re.compile(pattern + r"/?\Z"))
    for method, handler, pattern in (
        ("POST", "v2_infer", rf"/v2/models/{_NAME}{_VERSION}/infer"),
        ("POST", "v2_explain", rf"/v2/models/{_NAME}{_VERSION}/explain"),
        ("POST", "mlflow_invocations", rf"/models/{_NAME}{_VERSION}/invocations"),
        # MLflow's single-model scoring server paths (routing.default_model)
        ("POST", "mlflow_root_invocations", r"/invocations"),
        ("GET", "mlflow_ping", r"/ping"),
        ("GET", "mlflow_ping", r"/health"),
        ("GET", "mlflow_version", r"/version"),
        ("POST", "v2_feedback", rf"/v2/models/{_NAME}/feedback"),
        ("GET", "v2_model_ready", rf"/v2/models/{_NAME}{_VERSION}/ready"),
        ("GET", "v2_model_metadata", rf"/v2/models/{_NAME}{_VERSION}"),
        ("GET", "live", r"/v2/health/live"),
        ("GET", "ready", r"/v2/health/ready"),
        ("GET", "v2_server_metadata", r"/v2"),
        ("GET", "openapi", r"/openapi\.json"),
        ("GET", "admin_models", r"/admin/models"),
        ("GET", "admin_model", rf"/admin/models/{_NAME}"),
        ("GET", "admin_history", rf"/admin/models/{_NAME}/history"),
        ("GET", "admin_quality", rf"/admin/models/{_NAME}/quality"),
        ("GET", "admin_drift", rf"/admin/models/{_NAME}/drift"),
        ("POST", "admin_retrain", rf"/admin/models/{_NAME}/retrain"),
        ("POST", "admin_canary", rf"/admin/models/{_NAME}/canary"),
        ("POST", "admin_promote", rf"/admin/models/{_NAME}/promote"),
        ("POST", "admin_rollback", rf"/admin/models/{_NAME}/rollback"),
        # the operator console's files (serving/static.py); `name` is a file name here
        ("GET", "console", r"/ui(?:/(?P<name>[^/]*))?"),
    )
)


@dataclass(frozen=True)
class Match:
    handler: str
    name: str | None = None
    version: str | None = None


def match(method: str, path: str) -> Match:
    allowed: set[str] = set()
    for route_method, handler, pattern in ROUTES:
        found = pattern.match(path)
        if found is None:
            continue
        if route_method != method:
            allowed.add(route_method)
            continue
        groups = found.groupdict()
        return Match(handler, groups.get("name"), groups.get("version"))
    if allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {path}", frozenset(allowed))
    raise NotFound(f"no endpoint at {path}")


def parse_version(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise NotFound(f"version '{raw[:32]}' is not a registry version number")
    return int(raw)


DURATION_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0}


def parse_since(raw: str | None, now: float) -> float | None:
    """`since` as a Unix time, given as one (`1764580000`) or as an age (`30m`, `2h`, `7d`)."""
    if raw is None or raw == "":
        return None
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in DURATION_UNITS_S else (raw, "")
    try:
        value = float(number)
    except ValueError:
        raise BadRequest("'since' must be a Unix time or an age such as 30m, 2h or 7d") from None
    if not value >= 0 or value == float("inf"):
        raise BadRequest("'since' must be a finite, non-negative number")
    return now - value * DURATION_UNITS_S[unit] if unit else value
