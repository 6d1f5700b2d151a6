"""The control actor's side that router and pool replicas call: the table long poll,
what each replica reports, and checked model bytes.

A part of `Controller` (serving/controller.py), kept in a room of its own.
"""

from __future__ import annotations

import asyncio
import time

from serve_app.core.drift import WindowCounts
from serve_app.core.routing import RoutingTable
from serve_app.core.stats import VersionWindow
from serve_app.runtime.onnx import ModelArtifact


class ReplicaChannel:
    async def sync(
        self,
        replica: str,
        node: str,
        loaded: list[str],
        opens: int,
        traffic: dict[str, int],
        windows: dict[str, dict[int, VersionWindow]],
        drift: dict[tuple[str, int], WindowCounts],
        stamp: tuple[str, int],
        wait_s: float,
        recent: dict[str, dict[int, VersionWindow]] | None = None,
    ) -> RoutingTable | None:
        """Long poll: the current table once it differs from the replica's `stamp`, else None.

        A table not yet filled from the registry is never handed out: a restarted
        controller must not empty the replicas' tables while it takes its first sweep.
        """
        revision = stamp[1] if stamp[0] == self._table.epoch else 0
        self._remember_replica(replica, node, loaded, opens, revision, sum(traffic.values()))
        self._traffic.update(traffic)
        for name, by_version in windows.items():
            if name in self._windows:
                current = self._windows[name]
                for version, window in by_version.items():
                    current[version] = current.get(version, VersionWindow()).merge(window)
        if drift:
            self._take_drift_counts(drift)
        now = time.time()
        for name, by_version in (recent or {}).items():
            if name in self._table.routes:  # bounded by the table, as the metrics are
                self._recent.add(now, name, by_version)
        if self._table.revision == 0 or self._table.stamp == tuple(stamp):
            changed = self._table_changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=wait_s)
            except TimeoutError:
                return None
        return self._table

    def _remember_replica(
        self,
        replica: str,
        node: str,
        loaded: list[str],
        opens: int,
        revision: int | None = None,
        requests: int = 0,
    ) -> None:
        """What a replica holds, the table it serves from (None: unchanged) and how many
        requests it has answered (how the ingress spreads load shows in status)."""
        known = self._replicas.get(replica, {})
        self._replicas[replica] = {
            "loaded": sorted(loaded),
            "opens": opens,
            "node": node,
            "seen": time.time(),
            "revision": known.get("revision", 0) if revision is None else revision,
            "requests": known.get("requests", 0) + requests,
        }

    async def drift_profile(self, name: str, version: int) -> str | None:
        """A version's drift reference profile (JSON), None if it has none; raises while
        the registry cannot be read (the replica asks again)."""
        key = (name, version)
        if key not in self._profile_texts:
            self._profile_texts[key] = await self._io(self._registry.reference_profile, *key)
        return self._profile_texts[key]

    async def booster_text(self, name: str, version: int) -> str | None:
        """A version's LightGBM text model (for explanations), None if it has none; not kept
        here: each router replica asks once per version it explains, and keeps the model."""
        return await self._io(self._registry.booster_text, name, version)

    async def artifact(self, name: str, version: int) -> ModelArtifact | str | None:
        """A checked version's bytes; None if it does not exist, a reason if it is unusable."""
        key = (name, version)
        async with self._fetch_locks.setdefault(key, asyncio.Lock()):
            if key not in self._artifacts and key not in self._broken:
                await self._load_checked(name, version)
        self._fetch_locks.pop(key, None)
        if key in self._artifacts:
            return self._artifacts[key]
        return self._broken.get(key)
