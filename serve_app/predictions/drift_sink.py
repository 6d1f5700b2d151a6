"""The drift monitor's feed: each replica bins its logged champion rows against the serving
version's reference profile, and ships only the counts.

A sink of the prediction log, so drift sees exactly the rows the log records (sampling
included), whichever sink stores them, on any number of nodes, and no feature value leaves
the replica for drift's sake. It runs in the writer's thread and never raises. A version's
first rows wait (up to `HELD_ROWS`) for its profile, which the router fetches; rows it cannot
bin (no profile, another signature) are skipped: drift windows are statistics. The router
hands the counts to the control actor with its table sync, and fetches the profiles asked
for (`wanted`) on the same loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from serve_app.core.drift import ReferenceProfile, WindowCounts, bin_window
from serve_app.predictions.records import LoggedBatch, decisions

logger = logging.getLogger("ray.serve")

Key = tuple[str, int]  # (model, version)
JUDGED_ROLE = "champion"  # the serving version's traffic, judged against its reference
UNUSABLE = None  # a version without a usable profile: its rows are skipped
HELD_ROWS = 20_000  # a new version's rows kept per version until its profile arrives


class DriftCounter:
    name = "drift"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: dict[Key, ReferenceProfile | None] = {}
        self._wanted: set[Key] = set()
        self._counts: dict[Key, WindowCounts] = {}
        self._held: dict[Key, tuple[int, list[LoggedBatch]]] = {}  # waiting for a profile

    def write(self, batches: Sequence[LoggedBatch]) -> None:
        groups: dict[Key, list[LoggedBatch]] = {}
        for batch in batches:
            if batch.role == JUDGED_ROLE:
                groups.setdefault((batch.model, batch.version), []).append(batch)
        for key, group in groups.items():
            with self._lock:
                known = key in self._profiles
                if not known:
                    self._wanted.add(key)
                    self._hold(key, group)
            if known:
                self._count(key, group)

    def tick(self, now: float) -> None:
        """Count the rows held for versions whose profile has come since."""
        with self._lock:
            ready = [key for key in self._held if key in self._profiles]
            groups = [(key, self._held.pop(key)[1]) for key in ready]
        for key, group in groups:
            self._count(key, group)

    def close(self, timeout_s: float) -> None:
        """Counts left untaken are a few seconds of statistics, not records: nothing to do."""

    def _hold(self, key: Key, group: list[LoggedBatch]) -> None:
        """Keep a new version's first rows until its profile arrives (bounded)."""
        rows, held = self._held.get(key, (0, []))
        for batch in group:
            if rows + batch.size > HELD_ROWS:
                break
            rows += batch.size
            held.append(batch)
        self._held[key] = (rows, held)

    def _count(self, key: Key, group: list[LoggedBatch]) -> None:
        profile = self._profiles.get(key)
        if profile is None:
            return
        try:
            counts = _bin(profile, group)
        except ValueError as error:  # a signature the profile does not describe
            logger.warning("drift: cannot bin %s v%s: %s", *key, error)
            self.install(key, UNUSABLE)
            return
        with self._lock:
            found = self._counts.get(key)
            self._counts[key] = counts if found is None else found.merge(counts)

    # -- the router's side -------------------------------------------------------------
    def take(self) -> dict[Key, WindowCounts]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def wanted(self) -> set[Key]:
        with self._lock:
            return set(self._wanted)

    def install(self, key: Key, profile: ReferenceProfile | None) -> None:
        with self._lock:
            self._profiles[key] = profile
            self._wanted.discard(key)


def _bin(profile: ReferenceProfile, group: list[LoggedBatch]) -> WindowCounts:
    features = group[0].features
    if tuple(features) != profile.names[:-1]:
        raise ValueError("the logged features differ from the profile's")
    rows = np.concatenate([b.rows for b in group])
    scores = np.concatenate([b.scores for b in group])
    decided = np.concatenate([decisions(b.scores, b.threshold) for b in group])
    times = np.array([b.time for b in group])
    return bin_window(profile, rows, scores, decided, times)
