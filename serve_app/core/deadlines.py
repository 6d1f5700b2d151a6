"""A request's time budget, and whether it is spent.

A card authorisation waits tens of milliseconds for a fraud score; a later score is
worthless, and computing it only delays the requests behind it. So a request may carry a
budget (a header, or the V2 `parameters.timeout_ms`; the header wins), each model may have
a default, and a request whose budget is spent before it is scored is answered 504 without
being scored. The budget counts from the moment the router starts on the request: time
queued in front of the router (HAProxy, the client's network) is the client's to allow for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from serve_app.protocol.errors import BadRequest, ServeAppError

PARAMETER = "timeout_ms"
MAX_TIMEOUT_MS = 600_000.0


class DeadlineExceeded(ServeAppError):
    status = 504


def budget_ms(
    header_name: str, header: str | None, parameter: Any, default_ms: float | None
) -> float | None:
    """The request's budget in milliseconds: its header, else its parameter, else the
    model's default (None: no deadline)."""
    if header is not None:
        return _milliseconds(header, header_name)
    if parameter is not None:
        return _milliseconds(parameter, f"parameters.{PARAMETER}")
    return default_ms


def model_default(name: str, per_model: Mapping[str, float], default_ms: float | None):
    """The first pattern of `per_model` (`fraud-card-*`) that names the model, else the
    default for all."""
    for pattern, budget in per_model.items():
        if fnmatchcase(name, pattern):
            return budget
    return default_ms


def _milliseconds(raw: Any, what: str) -> float:
    if isinstance(raw, bool):
        value = math.nan
    else:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
    if not 0.0 < value <= MAX_TIMEOUT_MS:  # NaN fails too
        raise BadRequest(f"{what} must be a number of milliseconds in (0, {MAX_TIMEOUT_MS:g}]")
    return value


@dataclass(frozen=True)
class Deadline:
    """When a request must have been scored, on the `time.perf_counter()` clock."""

    started: float
    budget_ms: float | None

    def remaining_s(self, now: float) -> float | None:
        if self.budget_ms is None:
            return None
        return self.started + self.budget_ms / 1000.0 - now

    def check(self, now: float) -> None:
        """Raise `DeadlineExceeded` when the budget is spent: the request is not scored."""
        remaining = self.remaining_s(now)
        if remaining is not None and remaining <= 0.0:
            raise DeadlineExceeded(self.message(now))

    def message(self, now: float) -> str:
        spent = (now - self.started) * 1000.0
        return (
            f"the request's deadline of {self.budget_ms:g} ms passed before it was scored "
            f"({spent:.0f} ms in); it was not scored"
        )


NO_DEADLINE = Deadline(0.0, None)  # shadow copies: scored after the answer, whenever
