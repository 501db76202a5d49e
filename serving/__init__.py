"""rlserve.serving: batched ``compute_action`` over HTTP for exported policies.

A serving replica needs only the exported artifact: this package never imports ``training``.
"""

from serving.app import AppArgs, build_app
from serving.client import AsyncPolicyClient, PolicyClient, PolicyError, play_episodes
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

__all__ = [
    "ActionBatch",
    "ApiError",
    "AppArgs",
    "AsyncPolicyClient",
    "ComputeActionRequest",
    "ComputeActionsRequest",
    "ObservationError",
    "PolicyClient",
    "PolicyError",
    "PolicyRegistry",
    "PolicyRuntime",
    "ServingSettings",
    "actions_to_json",
    "build_app",
    "create_app",
    "observations_to_leaves",
    "play_episodes",
]
