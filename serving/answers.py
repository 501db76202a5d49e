"""What the policy service answers: typed results and typed errors.

:mod:`serving.client` returns and raises these (and re-exports them). Like the client, this
module imports nothing heavy: only the standard library and :mod:`formats.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from formats.errors import RlserveError

__all__ = [
    "ActionResult",
    "ActionsResult",
    "AuthenticationError",
    "BadRequestError",
    "NotFoundError",
    "OverloadedError",
    "PolicyError",
    "ServerError",
    "error_for",
]

A = TypeVar("A")


class PolicyError(RlserveError):
    """An error answer from the policy service.

    Attributes:
        status: The HTTP status code.
        detail: The server's message.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class BadRequestError(PolicyError):
    """400, 413, 415 or 422: the request itself is wrong (the message says how)."""


class AuthenticationError(PolicyError):
    """401: missing or wrong bearer token."""


class NotFoundError(PolicyError):
    """404: no such policy."""


class OverloadedError(PolicyError):
    """503 after every retry: the service sheds load."""


class ServerError(PolicyError):
    """Any other 5xx."""


@dataclass(frozen=True)
class ActionResult:
    """The answer to ``compute_action``.

    Attributes:
        action: The action in the JSON form of the policy's action space (an ``int`` for
            Discrete, a list for Box, nested dicts/lists for structured spaces).
        policy: The policy that answered.
        version: Its version (changes on hot reload).
        action_dist_inputs: The action distribution's inputs (logits, or mean and log-std),
            when asked for with ``return_dist_inputs``.
        state: A recurrent policy's next state (JSON lists, one per part of its state): pass
            it as ``state=`` with the next observation of the same episode. ``None`` for a
            feed-forward policy, and over sessions (the server holds it).
    """

    action: Any
    policy: str
    version: str
    action_dist_inputs: list[float] | None = None
    state: list[Any] | None = None


@dataclass(frozen=True)
class ActionsResult(Generic[A]):
    """The answer to ``compute_actions`` (``A``: a list) or ``compute_actions_npy`` (an array).

    Attributes:
        actions: One action per observation: JSON values from ``compute_actions``, one
            ``numpy`` array (first axis: the batch) from ``compute_actions_npy``.
        policy: The policy that answered.
        version: Its version (changes on hot reload).
        action_dist_inputs: One row of distribution inputs per observation, when asked for
            with ``return_dist_inputs`` (JSON answers only).
        state: A recurrent policy's next state, one row per observation (see
            :attr:`ActionResult.state`).
    """

    actions: A
    policy: str
    version: str
    action_dist_inputs: list[list[float]] | None = None
    state: list[Any] | None = None


def error_for(status: int, detail: str) -> PolicyError:
    """The typed error of an error answer (``status`` >= 400) with the server's ``detail``."""
    if status == 401:
        return AuthenticationError(status, detail)
    if status == 404:
        return NotFoundError(status, detail)
    if status == 503:
        return OverloadedError(status, detail)
    if status < 500:
        return BadRequestError(status, detail)
    return ServerError(status, detail)
