"""rlserve.serving: batched ``compute_action`` over HTTP for exported policies.

A serving replica needs only the exported artifact: this package never imports ``training``.

Every name is imported on first use, so ``from serving import PolicyClient`` loads the client
alone (httpx and numpy), and ``from serving import PolicySession`` the session client (websockets
and numpy), not Ray Serve, FastAPI or onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports happen on first use (see __getattr__)
    from serving.app import AppArgs, build_app
    from serving.client import (
        ActionResult,
        ActionsResult,
        AsyncPolicyClient,
        CarriedState,
        PolicyClient,
        PolicyError,
        play_episodes,
    )
    from serving.http_app import (
        ApiError,
        ComputeActionRequest,
        ComputeActionsRequest,
        ServingSettings,
        create_app,
    )
    from serving.observations import ObservationError, actions_to_json, observations_to_leaves
    from serving.registry import PolicyRegistry
    from serving.runtime import ActionBatch, PolicyRuntime
    from serving.session_client import (
        AsyncPolicySession,
        PolicySession,
        SessionClosedError,
        play_session_episodes,
    )
    from serving.sessions import SessionSettings

_MODULES = {
    "serving.app": ("AppArgs", "build_app"),
    "serving.client": (
        "ActionResult",
        "ActionsResult",
        "AsyncPolicyClient",
        "CarriedState",
        "PolicyClient",
        "PolicyError",
        "play_episodes",
    ),
    "serving.http_app": (
        "ApiError",
        "ComputeActionRequest",
        "ComputeActionsRequest",
        "ServingSettings",
        "create_app",
    ),
    "serving.observations": ("ObservationError", "actions_to_json", "observations_to_leaves"),
    "serving.registry": ("PolicyRegistry",),
    "serving.runtime": ("ActionBatch", "PolicyRuntime"),
    "serving.session_client": (
        "AsyncPolicySession",
        "PolicySession",
        "SessionClosedError",
        "play_session_episodes",
    ),
    "serving.sessions": ("SessionSettings",),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "ActionBatch",
    "ActionResult",
    "ActionsResult",
    "ApiError",
    "AppArgs",
    "AsyncPolicyClient",
    "AsyncPolicySession",
    "CarriedState",
    "ComputeActionRequest",
    "ComputeActionsRequest",
    "ObservationError",
    "PolicyClient",
    "PolicyError",
    "PolicyRegistry",
    "PolicyRuntime",
    "PolicySession",
    "ServingSettings",
    "SessionClosedError",
    "SessionSettings",
    "actions_to_json",
    "build_app",
    "create_app",
    "observations_to_leaves",
    "play_episodes",
    "play_session_episodes",
]


def __getattr__(name: str) -> Any:
    """Import the module defining ``name`` when it is first asked for."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'serving' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
