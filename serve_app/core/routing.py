"""The routing table: which registry versions of each model take traffic, and how much.

Pure data plus the split decision. The control actor builds tables, every scoring
replica holds the latest one and asks it which version answers a request. A version
appears in a table only after the control actor has loaded and checked it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace

SPLIT_BUCKETS = 10_000
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ModelRoute:
    """Traffic for one registered model: its champion and an optional challenger."""

    name: str
    champion: int
    features: tuple[str, ...]
    challenger: int | None = None
    challenger_weight: float = 0.0  # percent of traffic, 0..100
    shadow: bool = False  # challenger scores a copy of the traffic, never answers
    standby: int | None = None  # the previous champion, kept open for a quick rollback
    pool: str | None = None  # the model pool that scores it; None: the router's fast lane
    thresholds: tuple[tuple[int, float], ...] = ()  # each open version's alert threshold

    def __post_init__(self) -> None:
        if not 0.0 <= self.challenger_weight <= 100.0:
            raise ValueError(f"challenger weight {self.challenger_weight} is not in 0..100")

    def threshold(self, version: int) -> float:
        """The alert threshold the version was calibrated for (0.5 when none is known)."""
        return next((t for v, t in self.thresholds if v == version), DEFAULT_THRESHOLD)

    def roles(self) -> dict[int, str]:
        """What each answering version is: champion, and challenger or shadow."""
        roles = {self.champion: "champion"}
        if self.challenger is not None:
            roles[self.challenger] = "shadow" if self.shadow else "challenger"
        return roles

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version replicas keep open for this model: routed, shadow and standby."""
        standby = () if self.standby is None else (self.standby,)
        return tuple(dict.fromkeys((*self.answering, *standby)))

    @property
    def answering(self) -> tuple[int, ...]:
        """The versions requests reach (champion, challenger), without the standby."""
        challenger = () if self.challenger is None else (self.challenger,)
        return tuple(dict.fromkeys((self.champion, *challenger)))

    def choose(self, routing_key: str | None = None, rng: random.Random | None = None) -> int:
        """The version that answers a request.

        With a routing key the choice is sticky: the key hashes to a fixed bucket, and
        the bucket goes to the challenger while it lies below the weight, so raising
        the weight only ever moves keys towards the challenger. Without a key the
        split is random by weight.
        """
        if self.challenger is None or self.shadow or self.challenger_weight <= 0.0:
            return self.champion
        if routing_key is None:
            draw = (rng or random).random() * 100.0
            return self.challenger if draw < self.challenger_weight else self.champion
        bucket = key_bucket(self.name, routing_key)
        threshold = self.challenger_weight * SPLIT_BUCKETS / 100.0
        return self.challenger if bucket < threshold else self.champion


def key_bucket(model_name: str, routing_key: str) -> int:
    """A stable bucket in [0, SPLIT_BUCKETS) for a key, independent per model."""
    digest = hashlib.blake2b(
        routing_key.encode(), digest_size=8, key=model_name.encode()[:64]
    ).digest()
    return int.from_bytes(digest, "big") % SPLIT_BUCKETS


@dataclass(frozen=True)
class RoutingTable:
    """A numbered snapshot of every route; replicas swap whole tables, never edit one."""

    revision: int = 0  # 0: not loaded from the registry yet
    routes: dict[str, ModelRoute] = field(default_factory=dict)
    hot: tuple[str, ...] = ()  # models every replica keeps loaded, busiest first
    epoch: str = ""  # the publishing controller's life: revisions restart with it

    @property
    def stamp(self) -> tuple[str, int]:
        return (self.epoch, self.revision)

    def get(self, name: str) -> ModelRoute | None:
        return self.routes.get(name)

    def with_routes(self, routes: dict[str, ModelRoute], hot: tuple[str, ...]) -> RoutingTable:
        """The next table, or this one when nothing changed (so replicas are not woken)."""
        if routes == self.routes and hot == self.hot and self.revision:
            return self
        return replace(self, revision=self.revision + 1, routes=routes, hot=hot)

    def changed_models(self, newer: RoutingTable) -> set[str]:
        """Names whose routed versions or pool differ between this table and a newer one."""
        names = self.routes.keys() | newer.routes.keys()
        return {
            n
            for n in names
            if (r := self.routes.get(n)) is None
            or (s := newer.routes.get(n)) is None
            or (r.versions, r.pool) != (s.versions, s.pool)
        }
