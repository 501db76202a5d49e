"""The HTTP API (FastAPI): ``compute_action`` / ``compute_actions`` and policy metadata.

The routes live here; the limits, auth, request models, body reading and error answers of the
edge (and its bad-input contract) in :mod:`serving.http_edge`; the ASGI fast path and the status
observer in :mod:`serving.middleware`. Route paths, headers and content types come from
:mod:`serving.wire`, which the clients read too.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from serving import wire
from serving.batching import Coalescer, Infer
from serving.decoding import DecodeError, decode_npy
from serving.http_edge import (
    ApiError,
    ComputeActionRequest,
    ComputeActionsRequest,
    ServingSettings,
    authorize,
    content_type,
    error_response,
    json_answer,
    parse_json,
    read_body,
)
from serving.middleware import ActionFastPath, Observer, StatusObserver
from serving.observations import (
    ObservationError,
    actions_to_json,
    array_to_leaves,
    observations_to_leaves,
)
from serving.openapi import (
    ActionAnswer,
    ActionsAnswer,
    ErrorAnswer,
    Health,
    PolicyDescription,
    PolicyList,
    Readiness,
    compute_responses,
    error_responses,
    npy_body,
)
from serving.recurrent import previous_from_json, state_from_json, state_to_json
from serving.registry import PolicyRegistry
from serving.runtime import ActionBatch, PolicyRuntime, Previous, State
from serving.sessions import PROTOCOL_DESCRIPTION, SessionServer, SessionSettings

__all__ = [
    "ApiError",
    "ComputeActionRequest",
    "ComputeActionsRequest",
    "Infer",
    "Observer",
    "PolicyApi",
    "ServingSettings",
    "create_app",
]

COMPUTE = (f"/{wire.COMPUTE_ACTION}", f"/{wire.COMPUTE_ACTIONS}")


async def _direct_infer(
    runtime: PolicyRuntime,
    leaves: list[np.ndarray],
    explore: bool,
    seed: int | None,
    state: State | None = None,
    previous: Previous | None = None,
) -> ActionBatch:
    return runtime.compute(leaves, explore=explore, seed=seed, state=state, previous=previous)


def _npy_leaves(runtime: PolicyRuntime, body: bytes, max_rows: int) -> list[np.ndarray]:
    """A batch sent as one ``.npy`` array (single-leaf observation spaces only)."""
    from formats.leaves import flatten_leaves

    leaves = flatten_leaves(runtime.observation_space)
    if len(leaves) != 1:
        raise ApiError(415, f"{wire.NPY} bodies need a single-array observation space; send JSON")
    try:
        return array_to_leaves(runtime.observation_space, decode_npy(body, max_rows))
    except DecodeError as err:
        raise ApiError(err.status, err.message) from None
    except ObservationError as err:
        raise ApiError(422, str(err)) from None


def _query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter: ``true`` or ``false`` (absent: false), else 422."""
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise ApiError(422, f"query parameter {name}: expected true or false, got {value!r}")
    return value == "true"


class PolicyApi:
    """The route handlers, bound to a registry, limits and an inference function."""

    def __init__(self, registry: PolicyRegistry, settings: ServingSettings, infer: Infer) -> None:
        self.registry = registry
        self.cfg = settings
        self.run = infer
        self.active = 0
        """Compute requests received and not yet answered (the batcher's load signal)."""

    def _authorize(self, request: Request) -> None:
        authorize(request, self.cfg.token)

    def runtime(self, name: str) -> PolicyRuntime:
        """The runtime serving ``name``; 404 naming the served policies if there is none."""
        runtime = self.registry.get(name)
        if runtime is None:
            raise ApiError(404, f"unknown policy {name!r}; serving {sorted(self.registry.names())}")
        return runtime

    async def healthz(self) -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    async def readyz(self) -> JSONResponse:
        """Readiness: at least one policy is loaded."""
        names = sorted(self.registry.names())
        return JSONResponse(
            {"ready": bool(names), "policies": names}, status_code=200 if names else 503
        )

    async def policies(self, request: Request) -> dict[str, Any]:
        """Every served policy with its version, spaces and limits."""
        self._authorize(request)
        names = sorted(self.registry.names())
        return {"policies": [self.registry.describe(n, self.cfg.max_rows) for n in names]}

    async def policy(self, name: str, request: Request) -> dict[str, Any]:
        """A policy's manifest summary: spaces, version, formats, batching limits."""
        self._authorize(request)
        self.runtime(name)
        return self.registry.describe(name, self.cfg.max_rows)

    async def compute_action(self, name: str, request: Request) -> Response:
        """The action for one observation (deterministic unless ``explore``)."""
        self.active += 1
        try:
            return await self._compute_action(name, request)
        finally:
            self.active -= 1

    async def compute_actions(self, name: str, request: Request) -> Response:
        """Actions for a batch (JSON, or a ``.npy`` array; answers in npy on ``Accept``)."""
        self.active += 1
        try:
            return await self._compute_actions(name, request)
        finally:
            self.active -= 1

    async def _compute_action(self, name: str, request: Request) -> Response:
        self._authorize(request)
        runtime = self.runtime(name)
        if content_type(request) != wire.JSON:
            raise ApiError(415, f"expected Content-Type: {wire.JSON}")
        body = await read_body(request, self.cfg.max_body_bytes, self.cfg.body_timeout_s)
        req = parse_json(ComputeActionRequest, body)
        try:
            leaves = observations_to_leaves(runtime.observation_space, [req.observation])
        except ObservationError as err:
            raise ApiError(422, str(err).replace("observations[0]", "observation")) from None
        state = state_from_json(runtime, req.state, None)
        fields = ("prev_action", "prev_reward")
        previous = previous_from_json(runtime, req.prev_action, req.prev_reward, None, fields)
        batch = await self.run(runtime, leaves, req.explore, req.seed, state, previous)
        action = actions_to_json(runtime.action_space, batch.actions)[0]
        answer = {"action": action, "policy": name, "version": runtime.version}
        if req.return_dist_inputs:
            answer["action_dist_inputs"] = batch.action_dist_inputs[0].tolist()
        if batch.state is not None:
            answer["state"] = state_to_json(batch.state, single=True)
        return json_answer(answer, batch.batched_requests)

    async def _compute_actions(self, name: str, request: Request) -> Response:
        self._authorize(request)
        runtime = self.runtime(name)
        kind = content_type(request)
        if kind not in (wire.JSON, wire.NPY):
            raise ApiError(415, f"expected Content-Type: {wire.JSON} or {wire.NPY}")
        body = await read_body(request, self.cfg.max_body_bytes, self.cfg.body_timeout_s)
        if kind == wire.NPY:
            if runtime.is_recurrent:
                raise ApiError(
                    415,
                    f"policy {name!r} is recurrent: its state travels in JSON requests and "
                    f"answers ('state'), not in {wire.NPY} bodies; send JSON, or use a session",
                )
            leaves = _npy_leaves(runtime, body, self.cfg.max_rows)
            explore = _query_flag(request, "explore")
            seed, with_dist, state, previous = None, False, None, None
        else:
            req = parse_json(ComputeActionsRequest, body)
            if len(req.observations) > self.cfg.max_rows:
                raise ApiError(
                    413, f"{len(req.observations)} observations exceed max_rows={self.cfg.max_rows}"
                )
            try:
                leaves = observations_to_leaves(runtime.observation_space, req.observations)
            except ObservationError as err:
                raise ApiError(422, str(err)) from None
            rows = len(req.observations)
            state = state_from_json(runtime, req.state, rows)
            previous = previous_from_json(
                runtime, req.prev_actions, req.prev_rewards, rows, ("prev_actions", "prev_rewards")
            )
            explore, seed, with_dist = req.explore, req.seed, req.return_dist_inputs
        batch = await self.run(runtime, leaves, explore, seed, state, previous)
        if wire.NPY in request.headers.get("accept", ""):
            buffer = io.BytesIO()
            np.save(buffer, batch.actions, allow_pickle=False)
            headers = {
                wire.POLICY_HEADER: name,
                wire.VERSION_HEADER: runtime.version,
                wire.BATCH_HEADER: str(batch.batched_requests),
            }
            return Response(buffer.getvalue(), media_type=wire.NPY, headers=headers)
        actions = actions_to_json(runtime.action_space, batch.actions)
        answer = {"actions": actions, "policy": name, "version": runtime.version}
        if with_dist:
            answer["action_dist_inputs"] = batch.action_dist_inputs.tolist()
        if batch.state is not None:
            answer["state"] = state_to_json(batch.state, single=False)
        return json_answer(answer, batch.batched_requests)


def _body_schema(model: type[BaseModel], npy: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {wire.JSON: {"schema": model.model_json_schema()}}
    if npy:
        content[wire.NPY] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


def _document_bearer(app: FastAPI) -> None:
    """Say in the OpenAPI document that every ``/v1`` route needs the bearer token."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI builds it once and caches it; this edit is idempotent
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {"type": "http", "scheme": "bearer"}
        for path, operations in schema["paths"].items():
            if path.startswith(wire.POLICIES):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def create_app(
    registry: PolicyRegistry,
    settings: ServingSettings | None = None,
    infer: Infer | None = None,
    observer: Observer | None = None,
    sessions: SessionSettings | None = None,
    session_infer: Infer | None = None,
) -> FastAPI:
    """Build the FastAPI app around a policy registry.

    Args:
        registry: The served policies by name.
        settings: Limits and auth.
        infer: How a validated batch reaches the model (default: a direct call; the Ray Serve
            deployment passes its ``@serve.batch`` method).
        observer: Called with ``(policy, version, status)`` for every policy request and
            session message (metrics).
        sessions: Limits of the WebSocket sessions (:mod:`serving.sessions`).
        session_infer: How session messages reach the model (default: a
            :class:`~serving.batching.Coalescer`, which batches what arrives together).
    """
    api = PolicyApi(registry, settings or ServingSettings(), infer or _direct_infer)
    app = FastAPI(
        title="rlserve",
        summary="Batched compute_action for exported RL policies.",
        description=PROTOCOL_DESCRIPTION,
        # FastAPI's own OpenTelemetry hooks check the global providers on every request
        # (~7 us, nearly an inference call); rlserve's metrics go through Ray Serve's.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own 422 (a detail *list*) for a path or query parameter: not reachable with
        # today's parameters, and kept in the documented ``{"detail": str}`` shape if it ever is.
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return error_response(ApiError(422, problems))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_request)

    app.add_middleware(ActionFastPath, api=api)
    if observer is not None:  # added last = outermost: it sees the fast path's answers too
        app.add_middleware(StatusObserver, registry=registry, observer=observer)

    app.add_api_route(
        wire.HEALTHZ,
        api.healthz,
        methods=["GET"],
        response_model=Health,
        responses=error_responses(408, 503),
    )
    app.add_api_route(
        wire.READYZ,
        api.readyz,
        methods=["GET"],
        response_model=Readiness,
        responses={
            503: {"model": Readiness | ErrorAnswer, "description": "No policy is loaded yet."}
        },
    )
    app.add_api_route(
        wire.POLICIES,
        api.policies,
        methods=["GET"],
        response_model=PolicyList,
        responses=error_responses(401, 408, 503),
    )
    app.add_api_route(
        wire.POLICY_ROUTE,
        api.policy,
        methods=["GET"],
        response_model=PolicyDescription,
        responses=error_responses(401, 404, 408, 422, 503),
    )
    app.add_api_route(
        wire.ACTION_ROUTE,
        api.compute_action,
        methods=["POST"],
        response_model=ActionAnswer,
        responses=compute_responses(),
        openapi_extra=_body_schema(ComputeActionRequest),
    )
    app.add_api_route(
        wire.ACTIONS_ROUTE,
        api.compute_actions,
        methods=["POST"],
        response_model=ActionsAnswer,
        responses=compute_responses(npy=True),
        openapi_extra=_body_schema(ComputeActionsRequest, npy=True) | npy_body(),
    )
    session_server = SessionServer(
        api, sessions or SessionSettings(), session_infer or Coalescer(), observer
    )
    app.add_api_websocket_route(wire.SESSION_ROUTE, session_server.serve, name="session")
    if api.cfg.token is not None:
        _document_bearer(app)
    # Ray Serve names every request's route by trying the app's routes in order: the compute
    # routes go first, before the documentation routes FastAPI added (paths do not overlap).
    app.router.routes.sort(key=lambda route: not getattr(route, "path", "").endswith(COMPUTE))
    app.state.api = api
    app.state.sessions = session_server
    return app
