"""What the OpenAPI document says each route answers: the answer models and every error.

The routes (:mod:`serving.http_app`) write their answers as bytes on the hot path, so these
models are documentation only — FastAPI never validates or serialises an answer through them.
``tests/cli/test_serve_openapi.py`` keeps them true: schemathesis calls a real service with
generated requests and checks each answer's status, content type and body against this
document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from exporters.manifest import StateSpec, TensorSpec
from serving import wire

__all__ = [
    "ActionAnswer",
    "ActionsAnswer",
    "ErrorAnswer",
    "Health",
    "PolicyDescription",
    "PolicyList",
    "Readiness",
    "compute_responses",
    "error_responses",
    "npy_body",
]


class ErrorAnswer(BaseModel):
    """Every error answer (4xx and 503) has this body."""

    detail: str = Field(description="What was wrong, naming the field and what was expected.")


class ActionAnswer(BaseModel):
    """``compute_action``'s answer."""

    action: Any = Field(description="The action in the JSON form of the policy's action space.")
    policy: str
    version: str = Field(description="The content-derived version of the policy that answered.")
    action_dist_inputs: list[float] | None = Field(
        default=None,
        description="The action distribution's inputs (when asked for); see the policy's "
        "action_distribution.",
    )
    state: list[list[float]] | None = Field(
        default=None,
        description="A recurrent policy's next state: send it as the next request's 'state' "
        "(only for recurrent policies).",
    )


class ActionsAnswer(BaseModel):
    """``compute_actions``' JSON answer: one action per observation, in order."""

    actions: list[Any]
    policy: str
    version: str
    action_dist_inputs: list[list[float]] | None = None
    state: list[list[list[float]]] | None = Field(
        default=None,
        description="A recurrent policy's next state, one row per observation: send it as "
        "the next request's 'state' (only for recurrent policies).",
    )


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Readiness: 200 when at least one policy is loaded, else 503 with the same body."""

    ready: bool
    policies: list[str]


class PolicyDescription(BaseModel):
    """What a client needs to call a policy."""

    name: str
    version: str
    algorithm: str
    observation_space: dict[str, Any] = Field(description="The space as rlserve's space JSON.")
    action_space: dict[str, Any]
    action_distribution: str = Field(
        description="What action_dist_inputs holds and how explore=true samples it: "
        "categorical (logits), diag_gaussian (mean and log-std; samples clipped into the Box), "
        "squashed_gaussian (SAC: mean and log-std before tanh, rescaled into the Box), or "
        "q_values (epsilon-greedy)."
    )
    inputs: list[TensorSpec]
    recurrent: bool = Field(
        description="Whether the policy carries a state from step to step (an LSTM): over "
        "HTTP the client sends each answer's 'state' with the next observation; a session "
        "holds it on the server, per agent."
    )
    state: list[StateSpec] | None = Field(
        description="A recurrent policy's state, part by part: the graph's input and output "
        "names, the shape of one row and the initial value (null: feed-forward)."
    )
    previous: list[TensorSpec] | None = Field(
        description="What a recurrent policy reads besides the observation: the previous "
        "action (prev_actions) and reward (prev_rewards); send them as prev_action and "
        "prev_reward over HTTP, or reward in a session (null: neither)."
    )
    formats: list[str]
    backend: str
    max_rows: int = Field(description="Most observations in one compute_actions request.")
    last_reload_error: str | None = Field(
        description="Why the last hot reload failed (the previous version kept serving)."
    )


class PolicyList(BaseModel):
    """Every served policy."""

    policies: list[PolicyDescription]


_WHY = {
    400: "Malformed body: not JSON, bad UTF-8, nested too deep, or a malformed .npy array.",
    401: "Missing or wrong bearer token (when the service has one).",
    404: "No policy of that name.",
    408: "The request body did not arrive in time, or the request ran past the timeout.",
    413: "Body over the size limit, or more rows than ``max_rows``.",
    415: "Unsupported Content-Type.",
    422: "Well-formed but not acceptable: schema errors, observations outside the space "
    "(shape, dtype, bounds, NaN or infinity, booleans), over-long integers, bad parameters.",
    503: "Overloaded (the queue is full) or no replica is ready. Retry after ``Retry-After`` "
    "seconds.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "string"},
    }
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of ``statuses``, each with :class:`ErrorAnswer` as its body."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorAnswer, "description": _WHY[status]}
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        responses[status] = entry
    return responses


def compute_responses(npy: bool = False) -> dict[int | str, dict[str, Any]]:
    """A compute route's answers: 200 (JSON, or ``.npy`` on ``Accept``) and every error."""
    responses = error_responses(400, 401, 404, 408, 413, 415, 422, 503)
    if npy:
        responses[200] = {
            "content": {wire.NPY: {"schema": {"type": "string", "format": "binary"}}},
            "description": f"The actions as JSON, or as one array when ``Accept: {wire.NPY}``.",
        }
    return responses


def npy_body() -> dict[str, Any]:
    """The OpenAPI fragments of the ``.npy`` body and its ``explore`` query parameter."""
    return {
        "parameters": [
            {
                "name": "explore",
                "in": "query",
                "required": False,
                "description": f"Sample actions (for {wire.NPY} bodies; JSON bodies say it "
                "in the body).",
                "schema": {"type": "boolean", "default": False},
            }
        ],
    }
