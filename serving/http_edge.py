"""The HTTP edge: limits and auth, the request models, body reading and the error answers.

The bad-input contract, enforced here at the edge: malformed JSON -> 400; schema errors, wrong
shape or dtype, values outside the observation space, NaN or infinity -> 422 naming what was
expected; unknown policy -> 404; more rows than allowed or a body above the size limit -> 413
(the size is checked before the body is read whole); wrong content type -> 415; a missing or
wrong bearer token -> 401. No input a client can send produces a 500.

The routes (:mod:`serving.http_app`) and the ASGI middleware (:mod:`serving.middleware`) use
these pieces; nothing here knows about policies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, HTTPConnection

from formats.errors import RlserveError
from serving import wire
from serving.decoding import DecodeError, count_boolean_tokens, decode_json, find_boolean

__all__ = [
    "ApiError",
    "ComputeActionRequest",
    "ComputeActionsRequest",
    "ObservationRequest",
    "ObservationsRequest",
    "ServingSettings",
    "authorize",
    "content_type",
    "deadline",
    "error_response",
    "json_answer",
    "parse_json",
    "read_body",
    "validate_request",
]


@dataclass(frozen=True)
class ServingSettings:
    """Limits and security of the HTTP edge.

    Attributes:
        max_rows: Most observations in one ``compute_actions`` request.
        max_body_bytes: Largest request body accepted.
        token: Bearer token required on ``/v1`` routes (``None``: no auth).
        body_timeout_s: Longest a request body may take to arrive, counted from the first
            read (408 after it). A client that sends its body slowly holds one of the
            replica's ``max_ongoing_requests`` slots meanwhile; without a deadline a few hundred
            such clients hold them all.
    """

    max_rows: int = 4096
    max_body_bytes: int = 8 * 1024 * 1024
    token: str | None = None
    body_timeout_s: float = 10.0


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


class ObservationRequest(_Request):
    """One observation in the JSON form of the policy's observation space."""

    observation: Any


class ObservationsRequest(_Request):
    """A batch of observations."""

    observations: list[Any]


_STATE = (
    "A recurrent policy's state, as the previous answer's 'state' (a list with one array per "
    "part of the policy's 'state'); absent or null: the initial state, an episode's first step."
)


_PREVIOUS = (
    " For a recurrent policy that reads it (the policy's 'previous'); absent: zeros, an "
    "episode's first step."
)


class ComputeActionRequest(ObservationRequest):
    """``compute_action``: one observation (and a recurrent policy's state)."""

    state: list[Any] | None = Field(default=None, description=_STATE)
    prev_action: Any = Field(
        default=None, description="The action taken at the step before." + _PREVIOUS
    )
    prev_reward: float | None = Field(
        default=None, description="The reward that action brought." + _PREVIOUS
    )


class ComputeActionsRequest(ObservationsRequest):
    """``compute_actions``: a batch of observations (and a recurrent policy's state rows)."""

    state: list[Any] | None = Field(
        default=None, description=_STATE + " Each part has one row per observation."
    )
    prev_actions: list[Any] | None = Field(
        default=None, description="Each row's action at the step before." + _PREVIOUS
    )
    prev_rewards: list[float] | None = Field(
        default=None, description="Each row's reward at the step before." + _PREVIOUS
    )


def authorize(request: HTTPConnection, token: str | None) -> None:
    """Refuse (401) a request or handshake without the bearer ``token`` (``None``: no auth)."""
    if token is None:
        return
    scheme, _, given = request.headers.get(wire.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != wire.BEARER.lower() or not hmac.compare_digest(given.strip(), token):
        raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": wire.BEARER})


def content_type(request: Request) -> str:
    """The request's media type, lower case and without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """Read the body, refusing (413) before reading past ``limit`` bytes.

    Raises:
        ApiError: 413 past ``limit``; 408 when the whole body has not arrived within
            ``timeout_s`` seconds (``None``: no deadline).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    if timeout_s is None:
        return await _read_chunks(request, limit)
    try:
        # One timer per request (asyncio.timeout cancels this task at the deadline), no extra
        # task: the usual body is one message the server has already buffered.
        async with deadline(timeout_s):
            return await _read_chunks(request, limit)
    except TimeoutError:
        raise ApiError(
            408, f"the request body did not arrive within {timeout_s:g} s", {"Connection": "close"}
        ) from None


async def _read_chunks(request: Request, limit: int) -> bytes:
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


if sys.version_info >= (3, 11):
    deadline = asyncio.timeout
    """``async with deadline(seconds)``: ``TimeoutError`` past it (one timer, no extra task)."""
else:  # pragma: no cover - Python 3.10 has no asyncio.timeout

    @contextlib.asynccontextmanager
    async def deadline(delay: float) -> AsyncIterator[None]:
        """``asyncio.timeout`` for Python 3.10."""
        task = asyncio.current_task()
        assert task is not None
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_later(delay, expire)
        try:
            yield
        except asyncio.CancelledError:
            if not fired:  # cancelled by someone else, not by the deadline
                raise
            raise TimeoutError from None
        finally:
            handle.cancel()


def parse_json(model: type[BaseModel], body: bytes) -> Any:
    """``body`` validated as ``model``.

    Raises:
        ApiError: 400 for malformed JSON (see :func:`serving.decoding.decode_json` for the
            depth and number limits), 422 naming each schema error and any boolean inside
            the observations, 413 when decoding runs out of memory.
    """
    try:
        data = decode_json(body)
    except DecodeError as err:
        raise ApiError(err.status, err.message) from None
    return validate_request(model, data, body)


def validate_request(model: type[BaseModel], data: Any, body: bytes | str) -> Any:
    """Decoded JSON ``data`` (of ``body``) validated as ``model``.

    Raises:
        ApiError: 422 naming each schema error and any boolean inside the observations.
    """
    try:
        request = model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()
        )
        raise ApiError(422, problems) from None
    # The request's own booleans (explore, return_dist_inputs) are the only ones allowed; a
    # count in C decides whether the observations need a look.
    flags = sum(
        isinstance(value, bool) for key, value in data.items() if key not in _OBSERVATION_FIELDS
    )
    if count_boolean_tokens(body) > flags:
        for field in _OBSERVATION_FIELDS:
            where = find_boolean(data.get(field), field)
            if where is not None:
                raise ApiError(422, f"{where}: expected a number, got a boolean")
    return request


_OBSERVATION_FIELDS = ("observation", "observations", "state", "prev_action", "prev_actions")


class _JSONBytes(Response):
    """A 200 JSON answer whose headers are written here, once.

    Starlette's ``Response.__init__`` rebuilds and re-encodes the header list for every
    answer; on the single-observation path that costs half as much as the model call.
    """

    media_type = wire.JSON

    def __init__(self, body: bytes, batched_requests: int) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", _JSON_BYTES),
            (_BATCH_HEADER_BYTES, str(batched_requests).encode()),
        ]


_JSON_BYTES = wire.JSON.encode()
_BATCH_HEADER_BYTES = wire.BATCH_HEADER.lower().encode()


def json_answer(answer: dict[str, Any], batched_requests: int) -> Response:
    """A JSON answer, serialised once here (no response-model pass on the hot path)."""
    return _JSONBytes(json.dumps(answer, separators=(",", ":")).encode(), batched_requests)


def error_response(err: ApiError) -> JSONResponse:
    """``err`` as its status and ``{"detail": message}``."""
    return JSONResponse({"detail": err.message}, status_code=err.status, headers=err.headers)
