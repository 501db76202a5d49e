"""The HTTP API (FastAPI): ``compute_action`` / ``compute_actions`` and policy metadata.

The bad-input contract, enforced here at the edge: malformed JSON -> 400; schema errors, wrong
shape or dtype, values outside the observation space, NaN or infinity -> 422 naming what was
expected; unknown policy -> 404; more rows than allowed or a body above the size limit -> 413
(the size is checked before the body is read whole); wrong content type -> 415; a missing or
wrong bearer token -> 401. No input a client can send produces a 500.
"""

from __future__ import annotations

import hmac
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from formats.errors import RlserveError
from serving.observations import (
    ObservationError,
    actions_to_json,
    array_to_leaves,
    observations_to_leaves,
)
from serving.registry import PolicyRegistry
from serving.runtime import ActionBatch, PolicyRuntime

__all__ = [
    "ApiError",
    "ComputeActionRequest",
    "ComputeActionsRequest",
    "ServingSettings",
    "create_app",
]

Observer = Callable[[str, str, int], None]
"""``observer(policy, version, status)``, called once per answered ``/v1/policies`` request."""

NPY = "application/x-npy"
COMPUTE = ("/compute_action", "/compute_actions")
BATCH_HEADER = "X-Batched-Requests"
"""Response header: how many requests shared this request's inference call."""
Infer = Callable[[PolicyRuntime, list[np.ndarray], bool, int | None], Awaitable[ActionBatch]]


@dataclass(frozen=True)
class ServingSettings:
    """Limits and security of the HTTP edge.

    Attributes:
        max_rows: Most observations in one ``compute_actions`` request.
        max_body_bytes: Largest request body accepted.
        token: Bearer token required on ``/v1`` routes (``None``: no auth).
    """

    max_rows: int = 4096
    max_body_bytes: int = 8 * 1024 * 1024
    token: str | None = None


class ApiError(RlserveError):
    """An error answered with ``status`` and ``{"detail": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    explore: bool = False
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    return_dist_inputs: bool = False


class ComputeActionRequest(_Request):
    """One observation in the JSON form of the policy's observation space."""

    observation: Any


class ComputeActionsRequest(_Request):
    """A batch of observations."""

    observations: list[Any]


async def _direct_infer(
    runtime: PolicyRuntime, leaves: list[np.ndarray], explore: bool, seed: int | None
) -> ActionBatch:
    return runtime.compute(leaves, explore=explore, seed=seed)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) before reading past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    # The ASGI messages directly: Request.stream() is an async generator, which costs more
    # than the usual one-message body it would yield.
    chunks, size = [], 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":  # the client went away (as Request.stream)
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _parse(model: type[_Request], body: bytes) -> Any:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"malformed JSON: {err}") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()
        )
        raise ApiError(422, problems) from None


def _npy_leaves(runtime: PolicyRuntime, body: bytes, max_rows: int) -> list[np.ndarray]:
    """A batch sent as one ``.npy`` array (single-leaf observation spaces only)."""
    from formats.spaces import flatten_leaves

    leaves = flatten_leaves(runtime.observation_space)
    if len(leaves) != 1:
        raise ApiError(415, f"{NPY} bodies need a single-array observation space; send JSON")
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ApiError(400, f"malformed {NPY} body: {err}") from None
    if array.ndim == 0 or array.shape[0] > max_rows:
        raise ApiError(
            413 if array.ndim else 422, f"expected 1..{max_rows} rows, got shape {array.shape}"
        )
    try:
        return array_to_leaves(runtime.observation_space, array)
    except ObservationError as err:
        raise ApiError(422, str(err)) from None


class _JSONBytes(Response):
    """A 200 JSON answer whose headers are written here, once.

    Starlette's ``Response.__init__`` rebuilds and re-encodes the header list for every
    answer; on the single-observation path that costs half as much as the model call.
    """

    media_type = "application/json"

    def __init__(self, body: bytes, batched_requests: int) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            (_BATCH_HEADER_BYTES, str(batched_requests).encode()),
        ]


_BATCH_HEADER_BYTES = BATCH_HEADER.lower().encode()


def _json(answer: dict[str, Any], batched_requests: int) -> Response:
    """A JSON answer, serialised once here (no response-model pass on the hot path)."""
    return _JSONBytes(json.dumps(answer, separators=(",", ":")).encode(), batched_requests)


class StatusObserver:
    """ASGI middleware calling ``observer(policy, version, status)`` per policy request.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware``
    spawns a task group per request, which costs more than the whole inference call.
    """

    def __init__(self, app: ASGIApp, registry: PolicyRegistry, observer: Observer) -> None:
        self.app = app
        self.registry = registry
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = _policy_path(scope) if scope["type"] == "http" else []
        if not parts:
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            runtime = self.registry.get(parts[2])
            self.observer(parts[2], runtime.version if runtime else "unknown", status)


class ActionFastPath:
    """ASGI middleware answering ``POST /v1/policies/{name}/compute_action`` itself.

    The single-observation route is the hot one (one request per game or robot step). It runs
    the same :meth:`PolicyApi.compute_action` as the FastAPI route, but skips FastAPI's
    routing and dependency solving, which cost more per request than the inference. Every
    other route, and the OpenAPI documentation of this one, stays with FastAPI.
    """

    def __init__(self, app: ASGIApp, api: PolicyApi) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = _action_route(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.api.compute_action(name, request)
        except ApiError as err:
            response = _error_response(err)
        await response(scope, receive, send)


def _action_route(scope: Scope) -> str | None:
    """The policy name when ``scope`` is a ``POST .../compute_action``, else ``None``."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    parts = _policy_path(scope)
    if len(parts) == 4 and parts[3] == "compute_action" and parts[2]:
        return parts[2]
    return None


def _policy_path(scope: Scope) -> list[str]:
    """``scope``'s path split at ``/`` when it is under ``/v1/policies/``, else ``[]``."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[0] != "v1" or parts[1] != "policies":
        return []
    return parts


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse({"detail": err.message}, status_code=err.status, headers=err.headers)


class PolicyApi:
    """The route handlers, bound to a registry, limits and an inference function."""

    def __init__(self, registry: PolicyRegistry, settings: ServingSettings, infer: Infer) -> None:
        self.registry = registry
        self.cfg = settings
        self.run = infer
        self.active = 0
        """Compute requests received and not yet answered (the batcher's load signal)."""

    def _authorize(self, request: Request) -> None:
        if self.cfg.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.cfg.token):
            raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    def _runtime(self, name: str) -> PolicyRuntime:
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
        self._runtime(name)
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
        runtime = self._runtime(name)
        if _content_type(request) != "application/json":
            raise ApiError(415, "expected Content-Type: application/json")
        req = _parse(ComputeActionRequest, await _read_body(request, self.cfg.max_body_bytes))
        try:
            leaves = observations_to_leaves(runtime.observation_space, [req.observation])
        except ObservationError as err:
            raise ApiError(422, str(err).replace("observations[0]", "observation")) from None
        batch = await self.run(runtime, leaves, req.explore, req.seed)
        action = actions_to_json(runtime.action_space, batch.actions)[0]
        answer = {"action": action, "policy": name, "version": runtime.version}
        if req.return_dist_inputs:
            answer["action_dist_inputs"] = batch.action_dist_inputs[0].tolist()
        return _json(answer, batch.batched_requests)

    async def _compute_actions(self, name: str, request: Request) -> Response:
        self._authorize(request)
        runtime = self._runtime(name)
        kind = _content_type(request)
        if kind not in ("application/json", NPY):
            raise ApiError(415, f"expected Content-Type: application/json or {NPY}")
        body = await _read_body(request, self.cfg.max_body_bytes)
        if kind == NPY:
            leaves = _npy_leaves(runtime, body, self.cfg.max_rows)
            explore = request.query_params.get("explore", "false").lower() == "true"
            seed, with_dist = None, False
        else:
            req = _parse(ComputeActionsRequest, body)
            if len(req.observations) > self.cfg.max_rows:
                raise ApiError(
                    413, f"{len(req.observations)} observations exceed max_rows={self.cfg.max_rows}"
                )
            try:
                leaves = observations_to_leaves(runtime.observation_space, req.observations)
            except ObservationError as err:
                raise ApiError(422, str(err)) from None
            explore, seed, with_dist = req.explore, req.seed, req.return_dist_inputs
        batch = await self.run(runtime, leaves, explore, seed)
        if NPY in request.headers.get("accept", ""):
            buffer = io.BytesIO()
            np.save(buffer, batch.actions, allow_pickle=False)
            headers = {
                "X-Policy": name,
                "X-Policy-Version": runtime.version,
                BATCH_HEADER: str(batch.batched_requests),
            }
            return Response(buffer.getvalue(), media_type=NPY, headers=headers)
        actions = actions_to_json(runtime.action_space, batch.actions)
        answer = {"actions": actions, "policy": name, "version": runtime.version}
        if with_dist:
            answer["action_dist_inputs"] = batch.action_dist_inputs.tolist()
        return _json(answer, batch.batched_requests)


def _body_schema(model: type[BaseModel], npy: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": model.model_json_schema()}}
    if npy:
        content[NPY] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


def create_app(
    registry: PolicyRegistry,
    settings: ServingSettings | None = None,
    infer: Infer | None = None,
    observer: Observer | None = None,
) -> FastAPI:
    """Build the FastAPI app around a policy registry.

    Args:
        registry: The served policies by name.
        settings: Limits and auth.
        infer: How a validated batch reaches the model (default: a direct call; the Ray Serve
            deployment passes its ``@serve.batch`` method).
        observer: Called with ``(policy, version, status)`` for every policy request (metrics).
    """
    api = PolicyApi(registry, settings or ServingSettings(), infer or _direct_infer)
    app = FastAPI(
        title="rlserve",
        summary="Batched compute_action for exported RL policies.",
        # FastAPI's own OpenTelemetry hooks check the global providers on every request
        # (~7 us, nearly an inference call); rlserve's metrics go through Ray Serve's.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _error_response(exc)

    app.add_exception_handler(ApiError, api_error)

    app.add_middleware(ActionFastPath, api=api)
    if observer is not None:  # added last = outermost: it sees the fast path's answers too
        app.add_middleware(StatusObserver, registry=registry, observer=observer)

    app.add_api_route("/healthz", api.healthz, methods=["GET"])
    app.add_api_route("/readyz", api.readyz, methods=["GET"])
    app.add_api_route("/v1/policies", api.policies, methods=["GET"])
    app.add_api_route("/v1/policies/{name}", api.policy, methods=["GET"])
    app.add_api_route(
        "/v1/policies/{name}/compute_action",
        api.compute_action,
        methods=["POST"],
        openapi_extra=_body_schema(ComputeActionRequest),
    )
    app.add_api_route(
        "/v1/policies/{name}/compute_actions",
        api.compute_actions,
        methods=["POST"],
        openapi_extra=_body_schema(ComputeActionsRequest, npy=True),
        response_model=None,
    )
    # Ray Serve names every request's route by trying the app's routes in order: the compute
    # routes go first, before the documentation routes FastAPI added (paths do not overlap).
    app.router.routes.sort(key=lambda route: not getattr(route, "path", "").endswith(COMPUTE))
    app.state.api = api
    return app
