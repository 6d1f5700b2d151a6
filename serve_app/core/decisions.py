"""What a rollout step can decide: its own module, so that every guard (traffic in
`rollout`, labels in `quality`) can return a `RollBack` without importing the other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hold:
    pass


@dataclass(frozen=True)
class Advance:
    step: int


@dataclass(frozen=True)
class Promote:
    pass


@dataclass(frozen=True)
class RollBack:
    reason: str
    kind: str  # error_rate | latency | drift | quality: a bounded metric label


Decision = Hold | Advance | Promote | RollBack
