"""Plain ASGI middleware of the HTTP app: the ``compute_action`` fast path and status metrics.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` spawns a
task group per request, which costs more than the whole inference call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fastapi import Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import wire
from serving.http_edge import ApiError, error_response
from serving.registry import PolicyRegistry

__all__ = ["ActionFastPath", "ActionHandler", "Observer", "StatusObserver"]

Observer = Callable[[str, str, int], None]
"""``observer(policy, version, status)``, called once per answered ``/v1/policies`` request."""

_ROOT = wire.POLICIES.strip("/").split("/")  # ["v1", "policies"]


class ActionHandler(Protocol):
    """What the fast path calls: the routes' own ``compute_action`` handler."""

    async def compute_action(self, name: str, request: Request) -> Response:
        """The answer to ``POST /v1/policies/{name}/compute_action``."""
        ...


class StatusObserver:
    """ASGI middleware calling ``observer(policy, version, status)`` per policy request."""

    def __init__(self, app: ASGIApp, registry: PolicyRegistry, observer: Observer) -> None:
        self.app = app
        self.registry = registry
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, then report its policy, version and answered status."""
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
    the same :meth:`serving.http_app.PolicyApi.compute_action` as the FastAPI route, but skips
    FastAPI's routing and dependency solving, which cost more per request than the inference.
    Every other route, and the OpenAPI documentation of this one, stays with FastAPI.
    """

    def __init__(self, app: ASGIApp, api: ActionHandler) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a ``compute_action`` request here; pass anything else on."""
        name = _action_route(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.api.compute_action(name, request)
        except ApiError as err:
            response = error_response(err)
        await response(scope, receive, send)


def _action_route(scope: Scope) -> str | None:
    """The policy name when ``scope`` is a ``POST .../compute_action``, else ``None``."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    parts = _policy_path(scope)
    if len(parts) == 4 and parts[3] == wire.COMPUTE_ACTION and parts[2]:
        return parts[2]
    return None


def _policy_path(scope: Scope) -> list[str]:
    """``scope``'s path split at ``/`` when it is under ``/v1/policies/``, else ``[]``."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[0] != _ROOT[0] or parts[1] != _ROOT[1]:
        return []
    return parts
