"""Labels in, quality out: `POST /v2/models/{name}/feedback` and
`GET /admin/models/{name}/quality`.

Both are thin: validation is `labels.feedback`'s, the join is the store's and the
figures are `core.quality`'s. Store calls block, so they run off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from serve_app.core.access import Principal
from serve_app.labels.feedback import OUTCOMES, read_batch
from serve_app.labels.report import model_quality
from serve_app.labels.store import LabelStore, StoreUnavailable
from serve_app.predictions.records import SECONDS_PER_DAY
from serve_app.protocol import v2
from serve_app.protocol.errors import NotFound, NotReady
from serve_app.serving import http
from serve_app.serving.admin import json_response
from serve_app.serving.asgi import HttpRequest, Reply
from serve_app.serving.dataplane import RouterState

LABEL_HANDLERS = frozenset({"v2_feedback", "admin_quality"})


class LabelEndpoints:
    """The router checked access before calling (serving/auth.py HANDLER_VERBS)."""

    def __init__(self, state: RouterState, store: LabelStore) -> None:
        self._state = state
        self._store = store

    async def v2_feedback(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        """Labels for this model's logged predictions; an answer per row, in order."""
        name = found.name or ""
        if self._state.table.get(name) is None:
            raise NotFound(f"model '{name}' is not served")
        settings = self._state.settings
        payload = v2.parse_json(await request.body(settings.limits.max_body_bytes))
        items = read_batch(payload, settings.labels.max_batch)
        try:
            outcomes = await asyncio.to_thread(self._store.record_raw, name, items, time.time())
        except StoreUnavailable as error:  # nothing stored: the client sends them again
            raise NotReady(f"{error}: no label of this batch was stored, send it again") from None
        counts = Counter(outcome.status for outcome in outcomes)
        for status, count in counts.items():
            self._state.metrics.labels_received.inc(count, {"model": name, "status": status})
        return json_response(
            {
                "model": name,
                "received": len(outcomes),
                "counts": {status: counts[status] for status in OUTCOMES if counts[status]},
                "results": [outcome.to_dict() for outcome in outcomes],
            }
        )

    async def admin_quality(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        """Live quality per version and prediction-date cohort (default: the gauges' window)."""
        name = found.name or ""
        now = time.time()
        since = http.parse_since(request.query("since"), now)
        if since is None:
            since = now - self._state.settings.quality.window_days * SECONDS_PER_DAY
        route = self._state.table.get(name)
        roles = route.roles() if route is not None else {}
        try:
            versions = await asyncio.to_thread(model_quality, self._store, name, since, roles)
        except StoreUnavailable as error:
            raise NotReady(str(error)) from None
        if route is None and not versions:
            raise NotFound(f"model '{name}' is not served and has no logged predictions")
        return json_response(
            {"model": name, "since": since, "versions": [v.to_dict() for v in versions]}
        )
