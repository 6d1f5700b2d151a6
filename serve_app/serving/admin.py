"""Health, metadata and admin endpoints: everything the router answers besides scoring.

The router checked access before calling (serving/auth.py HANDLER_VERBS): the changing
endpoints come with the principal allowed `admin` on the model, whose name each call to
the control actor (which owns rollouts and the registry) hands on for the history.
"""

from __future__ import annotations

import importlib.metadata
import time
from typing import Any

import orjson
from ray.serve.handle import DeploymentHandle

from serve_app import __version__
from serve_app.core.access import READ, Principal
from serve_app.core.routing import ModelRoute
from serve_app.protocol import openapi, v2
from serve_app.protocol.errors import BadRequest, NotFound, NotReady
from serve_app.serving import http, static
from serve_app.serving.asgi import HttpRequest, Reply
from serve_app.serving.dataplane import RouterState
from serve_app.settings import APP_NAME

MLFLOW_VERSION = importlib.metadata.version("mlflow")
OPENAPI_DOCUMENT = orjson.dumps(openapi.document())


class AdminEndpoints:
    def __init__(self, state: RouterState, controller: DeploymentHandle) -> None:
        self._state = state
        self._controller = controller

    async def live(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        return json_response({"live": True})

    async def ready(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        table = self._state.table
        if not table.revision:
            raise NotReady("the routing table is not loaded yet")
        return json_response({"ready": True, "models": len(table.routes)})

    async def mlflow_ping(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        """MLflow's `/ping` and `/health`: 200 with a newline once the model can be scored."""
        table = self._state.table
        if not table.revision:
            raise NotReady("the routing table is not loaded yet")
        default = self._state.settings.routing.default_model
        if default is not None and table.get(default) is None:
            raise NotReady(f"the default model '{default}' is not served")
        return Reply(b"\n")

    async def mlflow_version(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        """MLflow's `/version`: the MLflow version, as its scoring server answers it."""
        return Reply(MLFLOW_VERSION.encode())

    async def v2_server_metadata(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        return json_response(
            {"name": APP_NAME, "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def openapi(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        return Reply(OPENAPI_DOCUMENT)

    async def v2_model_metadata(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        route, version = self._route_and_version(found)
        features = route.features
        if version not in route.versions:
            features = (await self._state.version_info(route.name, version)).features
        return json_response(v2.model_metadata(route.name, [version], features))

    async def v2_model_ready(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        route, version = self._route_and_version(found)
        if version not in route.versions:
            await self._state.version_info(route.name, version)
        return json_response({"name": route.name, "version": str(version), "ready": True})

    def _route_and_version(self, found: http.Match) -> tuple[ModelRoute, int]:
        route = self._state.table.get(found.name or "")
        if route is None:
            raise NotFound(f"model '{found.name}' is not served")
        version = http.parse_version(found.version)
        return route, route.champion if version is None else version

    async def admin_models(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        status = await self._controller.status.remote()
        if principal is not None:  # reads are closed: only the models it may read
            models = status["models"]
            status["models"] = {n: m for n, m in models.items() if principal.grants(READ, n)}
        return json_response(status)

    async def admin_model(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        """One model's detail for the console's model view."""
        detail = await self._controller.model_detail.remote(found.name)
        if detail is None:
            raise NotFound(f"model '{found.name}' is not in the registry")
        return json_response(detail)

    async def console(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        """The operator console (no token needed for the page: its data calls send it)."""
        return static.answer(request, found.name)

    async def admin_canary(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        limit = self._state.settings.limits.max_body_bytes
        payload = v2.parse_json(await request.body(limit))
        weight = payload.get("weight") if isinstance(payload, dict) else None
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not 0 <= weight <= 100
        ):
            raise BadRequest("the body needs a 'weight' between 0 and 100 (percent)")
        changed = self._controller.set_weight.remote(found.name, float(weight), by(principal))
        return admin_answer(await changed)

    async def admin_promote(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        return admin_answer(await self._controller.promote.remote(found.name, by(principal)))

    async def admin_rollback(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        return admin_answer(await self._controller.rollback.remote(found.name, by(principal)))

    async def admin_drift(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        """The model's drift monitor and retraining state (`serve-app drift NAME`)."""
        found_state = await self._controller.drift_report.remote(found.name)
        if found_state is None:
            raise NotFound(f"model '{found.name}' is not served")
        return json_response(found_state)

    async def admin_retrain(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        if self._state.table.get(found.name or "") is None:
            raise NotFound(f"model '{found.name}' is not served")
        started = await self._controller.start_retrain.remote(found.name, by(principal))
        if not started["started"]:
            return json_response({"error": f"retrain refused ({started['reason']}): "
                                  f"{started['detail']}"}, 409)  # fmt: skip
        return json_response({"message": f"retraining '{found.name}' on the cluster"}, 202)

    async def admin_history(
        self, request: HttpRequest, found: http.Match, principal: Principal | None
    ) -> Reply:
        since = http.parse_since(request.query("since"), time.time())
        events = await self._controller.history.remote(found.name, since)
        return json_response({"model": found.name, "since": since, "events": events})


def by(principal: Principal | None) -> str:
    """Who asks, for the history (an `admin` endpoint always has a principal)."""
    return principal.name if principal is not None else "unknown"


def json_response(content: Any, status: int = 200) -> Reply:
    return Reply(orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS), status)


def admin_answer(outcome: tuple[int, str]) -> Reply:
    status, message = outcome
    return json_response({"message": message} if status < 400 else {"error": message}, status)
