"""What the control actor must do to make the routing table match the registry.

Pure: given the table, the registry's `champion` aliases and the versions already
known to be broken, it names the versions to load and check and the models to drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serve_app.core.routing import RoutingTable


@dataclass(frozen=True)
class Plan:
    to_load: dict[str, int] = field(default_factory=dict)  # model → champion version
    to_drop: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.to_load and not self.to_drop


def plan(
    table: RoutingTable,
    champions: dict[str, int],
    registered: set[str],
    broken: set[tuple[str, int]],
) -> Plan:
    """Load every new champion not known broken; drop models gone from the registry.

    A model whose `champion` alias was removed keeps serving its last good version:
    an alias edit in progress must not take a fraud model offline.
    """
    to_load = {
        name: version
        for name, version in champions.items()
        if (name, version) not in broken
        and ((route := table.get(name)) is None or route.champion != version)
    }
    to_drop = set(table.routes) - registered
    return Plan(to_load, to_drop)
