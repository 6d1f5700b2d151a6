"""What the deadline and access checks add to each scored request, in microseconds.

    python -m benchmarks.hot_path_checks      # a few seconds; no services

Times the exact functions the router runs per request (core/deadlines.py; the scope check
of serving/auth.py), in-process with `timeit`, and sets them beside the router's measured CPU
per request (benchmarks/results/latest.md, about 1,000 us): the checks are a
per-request constant, so an end-to-end A/B would only measure the machine's noise (+-30%).
"""

from __future__ import annotations

import timeit

from serve_app.core import deadlines
from serve_app.core.access import SCORE, Access, parse_principals
from serve_app.serving import auth

ROUTER_CPU_US = 1_030.0  # serve-app fast lane, CPU per request (benchmarks/results/latest.md)
MODEL = "fraud-card-eu"
PER_MODEL = {"fraud-ach-*": 50.0, "fraud-card-*": 30.0}


def deadline_with_header() -> None:
    default = deadlines.model_default(MODEL, PER_MODEL, None)
    budget = deadlines.budget_ms("x-request-timeout-ms", "25", None, default)
    deadlines.Deadline(0.0, budget).check(0.001)


def deadline_without_header() -> None:
    default = deadlines.model_default(MODEL, {}, None)
    deadlines.Deadline(0.0, deadlines.budget_ms("x-request-timeout-ms", None, None, default))


TEAMS = 20  # principals in the tokens file, each with its own token and two scopes
ACCESS = Access(
    parse_principals(
        {
            "principals": [
                {"name": f"team-{i}", "token": f"token-of-team-{i:04d}-padding",
                 "scopes": [f"score:fraud-t{i}-*", f"admin:fraud-t{i}-*"]}
                for i in range(TEAMS - 1)
            ]
            + [{"name": "card-team", "token": "token-of-the-card-team",
                "scopes": ["score:fraud-card-*"]}]
        }
    )
)  # fmt: skip
BEARER = "Bearer token-of-the-card-team"


OPEN = Access()  # no tokens file


def scope_open() -> None:
    auth.authorize(OPEN, SCORE, MODEL, None, False)


def scope_checked() -> None:
    auth.authorize(ACCESS, SCORE, MODEL, BEARER, False)


def cases() -> dict[str, object]:
    return {
        "deadline: header + per-model default": deadline_with_header,
        "deadline: none set (the default)": deadline_without_header,
        "scope: no tokens file (scoring open)": scope_open,
        f"scope: {TEAMS} principals, token checked": scope_checked,
    }


def main() -> None:
    print(f"{'check':<44} {'us/request':>11} {'share of router CPU':>20}")
    for label, function in cases().items():
        runs = 200_000
        seconds = min(timeit.repeat(function, number=runs, repeat=5))
        micros = seconds / runs * 1e6
        print(f"{label:<44} {micros:>11.2f} {micros / ROUTER_CPU_US:>19.2%}")


if __name__ == "__main__":
    main()
