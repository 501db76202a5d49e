"""The wire protocol's names, written once: content types, headers and route paths.

The server (:mod:`serving.http_app`), the clients (:mod:`serving.client`) and the tests all read
them from here. This module imports nothing: a game client importing :mod:`serving.client` pays
nothing for it.
"""

from __future__ import annotations

__all__ = [
    "ACTIONS_ROUTE",
    "ACTION_ROUTE",
    "AUTHORIZATION",
    "BATCH_HEADER",
    "BEARER",
    "COMPUTE_ACTION",
    "COMPUTE_ACTIONS",
    "HEALTHZ",
    "JSON",
    "NPY",
    "POLICIES",
    "POLICY_HEADER",
    "POLICY_ROUTE",
    "READYZ",
    "SESSION",
    "SESSION_PROTOCOL",
    "SESSION_ROUTE",
    "VERSION_HEADER",
    "CloseCode",
    "action_path",
    "actions_path",
    "bearer",
    "policy_path",
    "session_path",
]

JSON = "application/json"
NPY = "application/x-npy"
"""A batch of observations (or of actions) as one ``numpy.save`` array, no pickles."""

AUTHORIZATION = "authorization"
BEARER = "Bearer"
POLICY_HEADER = "X-Policy"
"""On ``.npy`` answers: the policy that answered (JSON answers carry it in the body)."""
VERSION_HEADER = "X-Policy-Version"
"""On ``.npy`` answers: the version of the policy that answered."""
BATCH_HEADER = "X-Batched-Requests"
"""On compute answers: how many requests shared this request's inference call."""

HEALTHZ = "/healthz"
READYZ = "/readyz"
POLICIES = "/v1/policies"
COMPUTE_ACTION = "compute_action"
COMPUTE_ACTIONS = "compute_actions"
POLICY_ROUTE = POLICIES + "/{name}"
ACTION_ROUTE = f"{POLICY_ROUTE}/{COMPUTE_ACTION}"
ACTIONS_ROUTE = f"{POLICY_ROUTE}/{COMPUTE_ACTIONS}"
SESSION = "session"
SESSION_ROUTE = f"{POLICY_ROUTE}/{SESSION}"
"""A WebSocket: a JSON or ``.npy`` message per observation (or batch) while it is open."""
SESSION_PROTOCOL = "rlserve.session.v1"
"""The session protocol's name and version, offered as the WebSocket subprotocol (optional:
a client that offers none gets this one)."""


class CloseCode:
    """The WebSocket close codes a session ends with (RFC 6455, section 7.4.1)."""

    NORMAL = 1000
    """The client closed, or the session was idle longer than the server's timeout."""
    GOING_AWAY = 1001
    """The replica is stopping: reconnect (another replica, or this one after a restart)."""
    PROTOCOL_ERROR = 1002
    """A broken frame."""
    INVALID_DATA = 1007
    """A text frame that is not UTF-8."""
    TOO_BIG = 1009
    """A message over the size limit."""
    RESTART = 1012
    """The service restarts: reconnect."""


def policy_path(name: str) -> str:
    """``/v1/policies/{name}``: a policy's description."""
    return POLICY_ROUTE.format(name=name)


def action_path(name: str) -> str:
    """``/v1/policies/{name}/compute_action``: one observation's action."""
    return ACTION_ROUTE.format(name=name)


def actions_path(name: str) -> str:
    """``/v1/policies/{name}/compute_actions``: a batch's actions."""
    return ACTIONS_ROUTE.format(name=name)


def session_path(name: str) -> str:
    """``/v1/policies/{name}/session``: a policy's WebSocket session."""
    return SESSION_ROUTE.format(name=name)


def bearer(token: str) -> str:
    """The ``authorization`` header value for ``token``."""
    return f"{BEARER} {token}"
