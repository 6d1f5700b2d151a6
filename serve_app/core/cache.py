"""A per-replica prediction cache: the same features scored by the same version twice.

Fraud traffic repeats itself (retried authorisations, the same card checked by several
services), and a repeated request can skip the model. The key holds the model, the
version and a digest of the feature bytes, so a new version can never answer from an
old one's entries; when a version stops being routed, its entries are dropped at once.
Entries expire after a TTL and the least recently used go first past the size bound.
Caching is off unless a model's name matches one of the configured patterns.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np

Key = tuple[str, int, bytes]


def feature_digest(batch: np.ndarray) -> bytes:
    """Shape, dtype and values: two batches share a digest only if they are identical."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{batch.shape}{batch.dtype.str}".encode())
    digest.update(np.ascontiguousarray(batch).data)
    return digest.digest()


class PredictionCache:
    def __init__(
        self,
        patterns: Iterable[str] = (),
        ttl_s: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.patterns = tuple(patterns)
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Key, tuple[float, np.ndarray]] = OrderedDict()
        self._enabled: dict[str, bool] = {}  # per model name: matching runs once

    def __len__(self) -> int:
        return len(self._entries)

    def enabled_for(self, model: str) -> bool:
        enabled = self._enabled.get(model)
        if enabled is None:
            enabled = any(fnmatch.fnmatchcase(model, pattern) for pattern in self.patterns)
            self._enabled[model] = enabled
        return enabled

    def get(self, model: str, version: int, digest: bytes) -> np.ndarray | None:
        key = (model, version, digest)
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, scores = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return scores

    def put(self, model: str, version: int, digest: bytes, scores: np.ndarray) -> None:
        key = (model, version, digest)
        self._entries[key] = (self._clock() + self.ttl_s, scores)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def retain(self, model: str, versions: Iterable[int]) -> None:
        """Drop the entries of this model's versions that are no longer served."""
        keep = set(versions)
        stale = [key for key in self._entries if key[0] == model and key[1] not in keep]
        for key in stale:
            del self._entries[key]
