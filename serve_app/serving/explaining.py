"""The explain path: reason codes for the version that scores, beside the scoring path.

`POST /v2/models/{name}[/versions/{v}]/explain` takes a V2 inference request and answers,
per row, the served score and the top-k TreeSHAP contributions of the same version: the
one pinned, else the one the routing table's split chooses for the request's routing key
(as /infer would). The score comes from the version's scoring lane, the contributions
from its LightGBM text model, fetched and opened on the first explanation of that
version only and kept in a small LRU of its own: the scoring hot path, its model cache
and its loads never wait for one. Explanations have their own budget (rows a second per
model, `explain` settings) and their own metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from serve_app.core.explain import top_contributions
from serve_app.core.ratelimit import TokenBucket
from serve_app.metrics import UNKNOWN_MODEL, ScoringMetrics, outcome
from serve_app.protocol import explain as wire
from serve_app.protocol import v2
from serve_app.protocol.errors import Conflict, NotReady, Overloaded, ServeAppError
from serve_app.runtime.explainer import ExplainerLoadError, TreeExplainer
from serve_app.serving import http
from serve_app.serving.asgi import HttpRequest, Reply
from serve_app.serving.dataplane import (
    Dataplane,
    RouterState,
    body_request_id,
    error_body,
    header_request_id,
    new_request_id,
)

logger = logging.getLogger("ray.serve")

FetchText = Callable[[str, int], Awaitable[str | None]]
Key = tuple[str, int]


class Explanations:
    def __init__(self, state: RouterState, dataplane: Dataplane, fetch_text: FetchText) -> None:
        self._state = state
        self._dataplane = dataplane
        self._fetch_text = fetch_text
        self._explainers: OrderedDict[Key, TreeExplainer | str] = OrderedDict()  # str: why not
        self._loading: dict[Key, asyncio.Task[TreeExplainer | str]] = {}
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def _metrics(self) -> ScoringMetrics:
        return self._state.metrics

    async def explain(self, request: HttpRequest, found: http.Match) -> Reply:
        started = time.perf_counter()
        name = found.name or ""
        model = UNKNOWN_MODEL
        headers: dict[str, str] = {}
        try:
            request_id = header_request_id(request)
            if request_id is not None:
                headers["x-request-id"] = request_id
            self._state.authorize(request, found)  # `score` on the model, as /infer
            route = self._dataplane.require_route(name)
            model = route.name
            settings = self._state.settings
            body = await request.body(settings.limits.max_body_bytes)
            pinned = http.parse_version(found.version)
            features = await self._dataplane.features_of(route, pinned)
            length = request.headers.get(v2.HEADER_LENGTH)
            limit = min(settings.limits.max_rows, settings.explain.burst_rows)  # else never in
            decoded = v2.decode_request(body, length, features, limit)
            top_k = wire.top_k(decoded.parameters, len(features), settings.explain.default_top_k)
            request_id = body_request_id(decoded) or request_id or new_request_id()
            headers["x-request-id"] = request_id
            self._admit(name, decoded.batch.shape[0])
            key = self._dataplane.routing_key(request, decoded)
            version = pinned if pinned is not None else route.choose(key)
            explainer = await self._explainer(name, version, features)
            scored = await self._dataplane.scored(route, version, decoded.batch, pinned is not None)
            contributions = await asyncio.to_thread(explainer.contributions, decoded.batch)
            rows = top_contributions(contributions, features, top_k)
            payload = wire.encode_response(name, version, request_id, scored.scores, rows)
            headers.update({"x-model-name": name, "x-model-version": str(version)})
            status = 200
        except ServeAppError as error:
            status, payload = error.status, error_body(error.message)
            headers.update(error.headers())  # the rate limit's Retry-After
        except Exception:
            logger.exception("explaining %s failed", name)
            status, payload = 500, error_body("internal error while explaining")
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._metrics.explanations.inc(tags={"model": model, "outcome": outcome(status)})
        self._metrics.explain_latency.observe(elapsed_ms, tags={"model": model})
        return Reply(payload, status, headers or None)

    def _admit(self, name: str, rows: int) -> None:
        """Take `rows` from the model's budget in this replica, or refuse with a 429."""
        budget = self._state.settings.explain
        now = time.monotonic()
        bucket = self._buckets.get(name)
        if bucket is None or (bucket.rate, bucket.burst) != (budget.rows_per_s, budget.burst_rows):
            bucket = self._buckets[name] = TokenBucket(budget.rows_per_s, budget.burst_rows, now)
        wait_s = bucket.take(rows, now)
        if wait_s:
            raise Overloaded(
                f"explanations of model '{name}' are over their rate limit "
                f"({budget.rows_per_s:g} rows/s per replica); retry later",
                429,
                wait_s,
            )

    async def _explainer(self, name: str, version: int, features: tuple[str, ...]) -> TreeExplainer:
        """The version's explainer, opened once however many ask; 409 when it has none."""
        key = (name, version)
        found = self._explainers.get(key)
        if found is None:
            pending = self._loading.get(key)
            if pending is None:
                pending = asyncio.get_running_loop().create_task(self._open(key, features))
                self._loading[key] = pending
                pending.add_done_callback(lambda _: self._loading.pop(key, None))
            found = await asyncio.shield(pending)
        else:
            self._explainers.move_to_end(key)
        if isinstance(found, str):
            raise Conflict(f"no explainer for version {version} of model '{name}': {found}")
        return found

    async def _open(self, key: Key, features: tuple[str, ...]) -> TreeExplainer | str:
        """Fetch and open the LightGBM model; a reason (kept, so never fetched again) when
        the version cannot be explained. A registry that is away raises: asked again."""
        try:
            text = await self._fetch_text(*key)
        except Exception as error:  # the registry is away: nothing kept, the next one asks
            logger.warning("text model of %s v%s not fetched: %s", *key, error)
            raise NotReady(f"the explainer of version {key[1]} cannot be fetched now") from None
        if text is None:
            found: TreeExplainer | str = "it was registered without its LightGBM text model"
        else:
            try:
                found = await asyncio.to_thread(TreeExplainer, text, features)
            except ExplainerLoadError as error:
                found = str(error)
        self._explainers[key] = found
        while len(self._explainers) > self._state.settings.explain.max_explainers_per_replica:
            self._explainers.popitem(last=False)
        return found
