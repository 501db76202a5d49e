"""WebSocket sessions: ``/v1/policies/{name}/session``, one connection for many observations.

A game server or robot controller asks for an action every tick. Over unary HTTP each
observation pays Ray Serve's whole per-request stack; over a session it pays that once per
connection, and each message then costs a WebSocket frame and the inference.

The protocol (``rlserve.session.v1``, offered as the WebSocket subprotocol):

- A **text frame** holds one JSON object: ``{"id": <optional JSON scalar>, "observation": <obs>,
  "explore": false, "seed": null, "return_dist_inputs": false}`` is answered
  ``{"id": ..., "action": ..., "policy": name, "version": ...}``; with ``"observations": [...]``
  instead, ``{"id": ..., "actions": [...], ...}``. The fields and their checks are the HTTP
  API's (:class:`~serving.http_edge.ComputeActionRequest`).
- A **binary frame** holds one ``.npy`` array (no pickles): a single observation (the
  space's shape) is answered with a ``.npy`` action, a batch (one more leading axis) with a
  ``.npy`` batch of actions. Single-array observation spaces only; ``?explore=true`` on the
  handshake makes these sample.
- **Recurrent policies** (an LSTM): the server holds the state, per agent of the session.
  ``"agent": <string or integer>`` names whose observation it is (absent: the session's own
  agent); each agent starts from the initial state, and ``"reset": true`` beside an
  observation starts its agent's new episode. ``{"reset": true}`` alone forgets every agent's
  state, ``{"reset": true, "agent": id}`` one agent's (answered ``{"id", "reset": true, ...}``);
  closing the session drops them all. A batch names its rows' agents (``"agents": [...]``).
  One agent's steps follow each other in the order sent; different agents' steps are batched
  together, with every other session's (:mod:`serving.recurrent`). Feed-forward policies
  accept these fields and need none of them.
- Answers come back in the order the messages were sent. A client may send up to ``window``
  messages before reading; past that the server stops reading the socket (TCP backpressure)
  until answers have gone out, so a fast sender cannot make it buffer without bound.
- A bad message is answered ``{"id": ..., "error": {"status": 4xx, "detail": ...}}`` with the
  status and wording the HTTP API would use, and the session stays open. A message over the
  size limit closes it with 1009, a text frame that is not UTF-8 with 1007 (the WebSocket
  server's own check), a session idle for ``idle_timeout_s`` with 1000.

Refusals happen before the upgrade, as HTTP answers: 401 (bearer token), 404 (unknown policy),
422 (a bad query parameter), 503 with ``Retry-After`` when the replica holds ``max_sessions``
sessions. Each open session holds one of Ray Serve's request slots for its whole life, so the
application sizes the replica's slots for sessions plus HTTP requests (``serving.AppArgs``).

Messages of every open session on a replica are batched together by a
:class:`serving.batching.Coalescer`: what arrives in one pass of the event loop is answered with
one graph call per policy, so concurrent sessions share batches without a batch-wait timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.types import Message
from starlette.websockets import WebSocket

from exporters.manifest import PREVIOUS_REWARDS
from formats.leaves import flatten_leaves
from serving import wire
from serving.batching import Coalescer, Infer
from serving.decoding import DecodeError, decode_json, decode_npy
from serving.http_edge import (
    ApiError,
    authorize,
    deadline,
    error_response,
    validate_request,
)
from serving.observations import (
    ObservationError,
    actions_to_json,
    array_to_leaves,
    observations_to_leaves,
)
from serving.recurrent import AgentStates
from serving.runtime import ActionBatch, PolicyRuntime, Previous, State
from serving.session_messages import (
    Scalar,
    SessionActionMessage,
    SessionActionsMessage,
    SessionResetMessage,
    Tick,
    check_agents,
    plain_action,
)

if TYPE_CHECKING:  # serving.http_app builds the SessionServer: no import at run time
    from serving.http_app import PolicyApi

__all__ = [
    "PROTOCOL_DESCRIPTION",
    "SessionServer",
    "SessionSettings",
]

logger = logging.getLogger(__name__)

PROTOCOL_DESCRIPTION = f"""
## WebSocket sessions ({wire.SESSION_PROTOCOL})

`ws://HOST:PORT{wire.SESSION_ROUTE}`: one connection for many observations (OpenAPI cannot
describe WebSockets, so it is described here). The bearer token goes on the handshake
(`Authorization` header). Refusals come before the upgrade as HTTP answers: 401 (token), 404
(policy), 422 (query parameter), 503 with `Retry-After` when the replica holds its limit of
sessions.

- Text frame: `{{"id": <optional JSON scalar>, "observation": ..., "explore": false,
  "seed": null, "return_dist_inputs": false}}` → `{{"id", "action", "policy", "version"}}`;
  with `"observations": [...]` → `{{"id", "actions", ...}}`. Fields and checks as for
  `compute_action` / `compute_actions`.
- Recurrent policies: the server holds the state per agent (`"agent": <string or integer>`,
  absent: the session's own). `"reset": true` beside an observation starts that agent's new
  episode; `{{"reset": true}}` alone forgets every agent's state, with `"agent"` one agent's.
  A batch names its rows' agents: `"agents": [...]`. Closing the session drops the states.
- Binary frame: one `.npy` array (no pickles), a single observation or a batch → one `.npy`
  action or batch of actions; `?explore=true` on the handshake makes these sample.
- Answers come in the order the messages were sent; up to a window of messages may be sent
  before reading (then the server stops reading the socket).
- A bad message is answered `{{"id", "error": {{"status", "detail"}}}}` with the status and
  detail the HTTP routes would give; the session stays open. Close codes: 1009 (message too
  big), 1007 (text not UTF-8), 1000 (idle timeout).
"""
"""The protocol's summary in the OpenAPI document's description."""

Job = asyncio.Future[tuple[str, Any]]
"""A message's answer being computed: ``("text", str)`` or ``("bytes", bytes)``."""
Pending = asyncio.Queue[Job | None]
"""A session's answers in the order their messages came (``None``: no more)."""
_DRAIN_S = 5.0
"""Before a close, how long the answers already owed may take to go out."""
_MAX_REASON = 120
"""A close frame's reason is at most 123 bytes (RFC 6455, 5.5)."""
Observer = Callable[[str, str, int], None]


@dataclass(frozen=True)
class SessionSettings:
    """Limits of the WebSocket sessions of one replica.

    Attributes:
        max_sessions: Sessions open at once; the next handshake is answered 503.
        window: Messages a client may send before reading their answers.
        idle_timeout_s: A session that sends nothing for this long is closed (1000).
        message_timeout_s: Longest one message's answer may take (408 on the socket, the
            session stays open); ``None``: no deadline. The service's request timeout: Ray
            Serve's own ``request_timeout_s`` would cut the whole connection instead.
        retry_after_s: ``Retry-After`` on the 503 beyond ``max_sessions``.
        max_agents: Agents whose recurrent state one session holds (a state row is a few KiB:
            ``2 * lstm_cell_size`` float32); past it a new agent is refused (413).
    """

    max_sessions: int = 256
    window: int = 64
    idle_timeout_s: float = 30.0
    message_timeout_s: float | None = None
    retry_after_s: float = 1.0
    max_agents: int = 1024


def _dumps(answer: dict[str, Any]) -> str:
    return json.dumps(answer, separators=(",", ":"))


def _error(ident: Scalar, err: ApiError) -> str:
    return _dumps({"id": ident, "error": {"status": err.status, "detail": err.message}})


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)  # 0-d stays 0-d
    return buffer.getvalue()


@dataclass(frozen=True)
class _Close:
    """End the session with a close frame: ``code`` and ``reason``."""

    code: int
    reason: str


class SessionServer:
    """The session endpoint of one app: handshake checks, the message loop, the answers.

    Args:
        api: The app's route handlers (registry, limits, inference, load counter).
        settings: The sessions' limits.
        infer: How a validated batch reaches the model (the app's, shared with HTTP).
        observer: ``observer(policy, version, status)`` once per answered message.
    """

    def __init__(
        self,
        api: PolicyApi,
        settings: SessionSettings,
        infer: Infer,
        observer: Observer | None,
    ) -> None:
        self.api = api
        self.cfg = settings
        self.run = infer
        self.observer = observer
        self.open: Counter[str] = Counter()
        """Open sessions by policy (the deployment's gauge reads it)."""
        self.on_open: Callable[[], None] | None = None
        """Called as each session opens (the deployment starts its metrics flush)."""

    @property
    def total_open(self) -> int:
        """Open sessions on this replica, all policies together."""
        return sum(self.open.values())

    async def serve(self, websocket: WebSocket, name: str) -> None:
        """The session route: check the handshake, accept, then answer until closed."""
        try:
            explore = self._check_handshake(websocket, name)
        except ApiError as err:
            await _refuse(websocket, err)
            return
        offered = websocket.scope.get("subprotocols") or []
        protocol = wire.SESSION_PROTOCOL if wire.SESSION_PROTOCOL in offered else None
        self.open[name] += 1  # counted before the accept yields: concurrent handshakes see it
        try:
            await websocket.accept(subprotocol=protocol)
            if self.on_open is not None:
                self.on_open()
            await self._loop(websocket, name, explore)
        finally:
            self.open[name] -= 1
            if not self.open[name]:
                del self.open[name]

    def _check_handshake(self, websocket: WebSocket, name: str) -> bool:
        """The handshake's refusals (401, 404, 422, 503); the session's ``explore`` flag."""
        authorize(websocket, self.api.cfg.token)
        self.api.runtime(name)
        value = websocket.query_params.get("explore", "false").lower()
        if value not in ("true", "false"):
            raise ApiError(422, f"query parameter explore: expected true or false, got {value!r}")
        if self.total_open >= self.cfg.max_sessions:
            retry = str(max(1, round(self.cfg.retry_after_s)))
            raise ApiError(
                503,
                f"this replica holds its limit of {self.cfg.max_sessions} sessions; retry later",
                {"Retry-After": retry},
            )
        return value == "true"

    async def _loop(self, websocket: WebSocket, name: str, explore: bool) -> None:
        """Read messages and start their answers; the writer sends them in order."""
        pending: Pending = asyncio.Queue()
        slots = asyncio.Semaphore(self.cfg.window)  # answers started and not sent yet
        writer = asyncio.ensure_future(_write(websocket, pending, slots))
        agents = AgentStates(self.cfg.max_agents)  # dropped with the session
        try:
            close = await self._read(websocket, name, explore, pending, slots, writer, agents)
        except BaseException:  # cancelled (the replica stops), or a bug: leave no task behind
            writer.cancel()
            _cancel_all(pending)
            raise
        if close is None:  # the client went away: drop what is not answered yet
            writer.cancel()
            _cancel_all(pending)
            return
        # Answer what was sent before the violation or the idle timeout, then close.
        pending.put_nowait(None)
        try:
            async with deadline(_DRAIN_S):
                await writer
        except TimeoutError:
            writer.cancel()
            _cancel_all(pending)
        with contextlib.suppress(RuntimeError, OSError):  # already gone
            await websocket.close(code=close.code, reason=close.reason[:_MAX_REASON])

    async def _read(
        self,
        websocket: WebSocket,
        name: str,
        explore: bool,
        pending: Pending,
        slots: asyncio.Semaphore,
        writer: asyncio.Future[None],
        agents: AgentStates,
    ) -> _Close | None:
        """Read until the client leaves (``None``) or the session must close (why).

        With ``window`` answers outstanding the reader waits for a slot before reading on:
        the socket's buffers then fill and TCP stops the client, so a client that sends
        without reading costs the server a window of messages, not its memory.
        """
        watch = _IdleWatch(self.cfg.idle_timeout_s)
        try:
            while True:
                message = await websocket.receive()
                watch.touch()
                if message["type"] == "websocket.disconnect":
                    return None
                await slots.acquire()
                job = self._job(name, message, explore, agents)
                if isinstance(job, _Close):
                    return job
                if writer.done():  # sending failed: the client is gone
                    job.cancel()
                    return None
                pending.put_nowait(job)
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            watch.uncancel()
            return _Close(wire.CloseCode.NORMAL, f"idle for {self.cfg.idle_timeout_s:g} s")
        finally:
            watch.stop()

    def _job(self, name: str, message: Message, explore: bool, agents: AgentStates) -> Job | _Close:
        """The answer to ``message`` as a running task, or why the session must close.

        Tasks start in the order they are made, which is the order the messages came: each
        takes its agents' turn (:meth:`AgentStates.turn`) before its first wait.
        """
        text, data = message.get("text"), message.get("bytes")
        limit = self.api.cfg.max_body_bytes
        if text is not None:
            # A character is 1-4 bytes: count the bytes only when the text could be too long.
            size = len(text) if len(text) * 4 <= limit else len(text.encode("utf-8"))
            if size > limit:
                return _Close(wire.CloseCode.TOO_BIG, f"message of {size} bytes; at most {limit}")
            return asyncio.ensure_future(self._answer_text(name, text, agents))
        body = data or b""
        if len(body) > limit:
            return _Close(wire.CloseCode.TOO_BIG, f"message of {len(body)} bytes; at most {limit}")
        return asyncio.ensure_future(self._answer_npy(name, body, explore, agents))

    async def _infer(
        self,
        runtime: PolicyRuntime,
        leaves: list[np.ndarray],
        explore: bool,
        seed: int | None,
        state: State | None = None,
        previous: Previous | None = None,
    ) -> ActionBatch:
        return await self._timed(self.run(runtime, leaves, explore, seed, state, previous))

    async def _timed(self, answer: Awaitable[ActionBatch]) -> ActionBatch:
        """``answer`` within the message deadline (408 past it); a bad observation is 422."""
        try:
            if self.cfg.message_timeout_s is None:
                return await answer
            async with deadline(self.cfg.message_timeout_s):
                return await answer
        except TimeoutError:
            raise ApiError(
                408, f"no answer within {self.cfg.message_timeout_s:g} s; retry"
            ) from None
        except ObservationError as err:
            raise ApiError(422, str(err)) from None

    def _observe(self, name: str, runtime: PolicyRuntime | None, status: int) -> None:
        if self.observer is not None:
            self.observer(name, runtime.version if runtime else "unknown", status)

    async def _answer_text(self, name: str, text: str, agents: AgentStates) -> tuple[str, str]:
        ident: Scalar = None
        runtime = None
        try:
            try:
                data = decode_json(text)
            except DecodeError as err:
                raise ApiError(err.status, err.message) from None
            if not isinstance(data, dict):
                raise ApiError(422, "message: expected a JSON object")
            ident = data.get("id")
            if not isinstance(ident, Scalar):
                ident = None
                raise ApiError(422, "id: expected a string, a number, a boolean or null")
            if "observations" in data:
                batch = validate_request(SessionActionsMessage, data, text)
                runtime = self.api.runtime(name)
                answer = await self._batch(runtime, batch, agents)
            elif "observation" not in data and "reset" in data:
                reset = validate_request(SessionResetMessage, data, text)
                runtime = self.api.runtime(name)
                answer = await self._reset(runtime, reset, agents)
            else:
                one = plain_action(data, text) or validate_request(SessionActionMessage, data, text)
                runtime = self.api.runtime(name)
                answer = await self._single(runtime, one, agents)
            answer["id"] = ident
        except ApiError as err:
            self._observe(name, runtime, err.status)
            return "text", _error(ident, err)
        self._observe(name, runtime, 200)
        return "text", _dumps(answer)

    async def _single(
        self, runtime: PolicyRuntime, req: SessionActionMessage | Tick, agents: AgentStates
    ) -> dict[str, Any]:
        steps = None
        if not runtime.is_recurrent:
            result = await self._one(runtime, req, None)
        else:
            async with agents.turn([req.agent]):
                one = [req.agent]
                state = agents.rows(runtime, one, req.reset)
                rewards = None if req.reward is None else [req.reward]
                previous = agents.previous_rows(runtime, one, req.reset, rewards)
                result = await self._one(runtime, req, state, previous)
                assert result.state is not None
                steps = agents.keep(runtime, one, result.state, req.reset, result.actions)[0]
        answer: dict[str, Any] = {
            "id": None,
            "action": actions_to_json(runtime.action_space, result.actions)[0],
            "policy": runtime.name,
            "version": runtime.version,
        }
        if req.return_dist_inputs:
            answer["action_dist_inputs"] = result.action_dist_inputs[0].tolist()
        if steps is not None:
            answer["steps"] = steps
        return answer

    async def _one(
        self,
        runtime: PolicyRuntime,
        req: SessionActionMessage | Tick,
        state: State | None,
        previous: Previous | None = None,
    ) -> ActionBatch:
        if isinstance(self.run, Coalescer):  # validated with the other messages of its pass
            return await self._timed(
                self.run.observation(
                    runtime, req.observation, req.explore, req.seed, state, previous
                )
            )
        try:
            leaves = observations_to_leaves(runtime.observation_space, [req.observation])
        except ObservationError as err:
            raise ApiError(422, str(err).replace("observations[0]", "observation")) from None
        return await self._infer(runtime, leaves, req.explore, req.seed, state, previous)

    async def _batch(
        self, runtime: PolicyRuntime, req: SessionActionsMessage, agents: AgentStates
    ) -> dict[str, Any]:
        max_rows = self.api.cfg.max_rows
        if len(req.observations) > max_rows:
            raise ApiError(413, f"{len(req.observations)} observations exceed max_rows={max_rows}")
        if req.agents is not None:
            check_agents(req.agents, len(req.observations))
        if req.rewards is not None and len(req.rewards) != len(req.observations):
            raise ApiError(
                422,
                f"rewards: expected {len(req.observations)}, one per observation; "
                f"got {len(req.rewards)}",
            )
        try:
            leaves = observations_to_leaves(runtime.observation_space, req.observations)
        except ObservationError as err:
            raise ApiError(422, str(err)) from None
        steps = None
        if not runtime.is_recurrent:
            result = await self._infer(runtime, leaves, req.explore, req.seed)
        elif req.agents is None:
            raise ApiError(
                422,
                f"agents: policy {runtime.name!r} is recurrent and keeps a state per agent; "
                "name each observation's agent (a list as long as 'observations')",
            )
        else:
            async with agents.turn(req.agents):
                state = agents.rows(runtime, req.agents, req.reset)
                previous = agents.previous_rows(runtime, req.agents, req.reset, req.rewards)
                result = await self._infer(runtime, leaves, req.explore, req.seed, state, previous)
                assert result.state is not None
                steps = agents.keep(runtime, req.agents, result.state, req.reset, result.actions)
        answer: dict[str, Any] = {
            "id": None,
            "actions": actions_to_json(runtime.action_space, result.actions),
            "policy": runtime.name,
            "version": runtime.version,
        }
        if req.return_dist_inputs:
            answer["action_dist_inputs"] = result.action_dist_inputs.tolist()
        if steps is not None:
            answer["steps"] = steps
        return answer

    async def _reset(
        self, runtime: PolicyRuntime, req: SessionResetMessage, agents: AgentStates
    ) -> dict[str, Any]:
        """Forget one agent's state or every agent's, after their steps sent before it."""
        everyone = "agent" not in req.model_fields_set
        async with agents.turn(None if everyone else [req.agent]):
            agents.reset(req.agent, everyone)
        answer: dict[str, Any] = {
            "id": None,
            "reset": True,
            "policy": runtime.name,
            "version": runtime.version,
        }
        if not everyone:
            answer["agent"] = req.agent
        return answer

    async def _answer_npy(
        self, name: str, body: bytes, explore: bool, agents: AgentStates
    ) -> tuple[str, Any]:
        runtime = None
        try:
            runtime = self.api.runtime(name)
            leaves, single = self._npy_leaves(runtime, body)
            if not runtime.is_recurrent:
                result = await self._infer(runtime, leaves, explore, None)
            elif not single:
                raise ApiError(
                    415,
                    f"policy {runtime.name!r} is recurrent: a batch needs its rows' agents; "
                    f"send JSON with 'agents', or one {wire.NPY} observation per message",
                )
            elif PREVIOUS_REWARDS in runtime.previous_names:
                raise ApiError(
                    415,
                    f"policy {runtime.name!r} reads the previous reward: send JSON messages "
                    "with 'reward'",
                )
            else:  # the session's own agent
                async with agents.turn([None]):
                    state = agents.rows(runtime, [None], False)
                    previous = agents.previous_rows(runtime, [None], False, None)
                    result = await self._infer(runtime, leaves, explore, None, state, previous)
                    assert result.state is not None
                    agents.keep(runtime, [None], result.state, False, result.actions)
        except ApiError as err:
            self._observe(name, runtime, err.status)
            return "text", _error(None, err)
        self._observe(name, runtime, 200)
        return "bytes", _npy(result.actions[0] if single else result.actions)

    def _npy_leaves(self, runtime: PolicyRuntime, body: bytes) -> tuple[list[np.ndarray], bool]:
        """The leaves of a ``.npy`` message, and whether it held a single observation."""
        leaves = flatten_leaves(runtime.observation_space)
        if len(leaves) != 1:
            raise ApiError(
                415, f"{wire.NPY} messages need a single-array observation space; send JSON"
            )
        try:
            # Rows are counted below: a single observation's first axis is not a row count,
            # and the body's length bounds the shape a header may declare.
            array = decode_npy(body, max(len(body), 1))
        except DecodeError as err:
            raise ApiError(err.status, err.message) from None
        single = array.ndim == len(leaves[0][1].shape or ())
        if single:
            array = array[None]
        max_rows = self.api.cfg.max_rows
        if array.shape[0] > max_rows:
            raise ApiError(413, f"expected 1..{max_rows} rows, got shape {tuple(array.shape)}")
        try:
            return array_to_leaves(runtime.observation_space, array), single
        except ObservationError as err:
            raise ApiError(422, str(err)) from None


class _IdleWatch:
    """Cancels the reading task once nothing has arrived for ``idle_s``.

    One timer per session, re-armed only when it fires: a message just stores the time. (A
    timeout around each ``receive`` would create and reschedule a timer per message, ~4 % of
    a message's cost in the replica.)
    """

    def __init__(self, idle_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task, self.idle_s = task, idle_s
        self.last = self.loop.time()
        self.fired = False
        self.handle = self.loop.call_at(self.last + idle_s, self._check)

    def touch(self) -> None:
        """Something arrived."""
        self.last = self.loop.time()

    def _check(self) -> None:
        due = self.last + self.idle_s
        if self.loop.time() >= due:
            self.fired = True
            self.task.cancel()
        else:
            self.handle = self.loop.call_at(due, self._check)

    def uncancel(self) -> None:
        """Take back this watch's cancellation (the task goes on to close the session)."""
        uncancel = getattr(self.task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()

    def stop(self) -> None:
        """No more checks."""
        self.handle.cancel()


async def _write(websocket: WebSocket, pending: Pending, slots: asyncio.Semaphore) -> None:
    """Send each answer as soon as it and every earlier one are ready."""
    while True:
        job = await pending.get()
        if job is None:
            return
        try:
            kind, payload = await job
        except Exception:  # a bug, not a bad message: say so on the socket, keep the session
            logger.exception("session message failed")
            kind, payload = "text", _error(None, ApiError(500, "internal error"))
        try:
            await websocket.send({"type": "websocket.send", kind: payload})
        except (RuntimeError, OSError):  # the client is gone
            slots.release()  # a reader waiting for a slot wakes, sees this task done, leaves
            return
        slots.release()


def _cancel_all(pending: Pending) -> None:
    while not pending.empty():
        job = pending.get_nowait()
        if job is not None:
            job.cancel()


async def _refuse(websocket: WebSocket, err: ApiError) -> None:
    """Answer the handshake with ``err`` as an HTTP response (no upgrade)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(err))
    else:  # a server without the denial extension: a bare 403 is all it can send
        await websocket.close(code=1008, reason=err.message[:120])
