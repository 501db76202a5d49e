"""Session clients: ``PolicySession`` and ``AsyncPolicySession``, one WebSocket per policy.

For clients that ask for actions every tick (games, robot controllers): the connection, its
handshake and Ray Serve's per-request work are paid once, and each observation then costs one
message each way (see :mod:`serving.sessions` for the protocol). Both clients build and read
messages through :class:`_SessionProtocol`, and send through the ``websockets`` library (the
one the server side runs on: uvicorn's WebSocket protocol is built on it; maintained, typed,
with sync and asyncio clients over the same protocol core).

Messages may be pipelined: :meth:`PolicySession.send` returns at once and
:meth:`PolicySession.receive` gives the answers in order; :meth:`PolicySession.stream` keeps a
window of observations in flight. When the connection drops (a replica restarts, HAProxy reloads)
the client reconnects with exponential backoff and sends again whatever was not answered:
computing an action of a feed-forward policy changes nothing on the server, so a resend is safe.

A recurrent policy's state lives on the server, per agent of the session: name the agent with
``agent=`` (absent: the session's own), start its episode with ``reset=True`` (or
:meth:`PolicySession.reset`); :func:`play_session_episodes` does that for you. A reconnect
opens a new session, whose agents start from the initial state: the client says so by raising
:class:`SessionClosedError` for a recurrent policy's answers lost in the drop rather than
resending them into a memory that is gone.

Like :mod:`serving.client`, this imports only numpy, ``websockets`` and rlserve's light
modules: no Ray, no server stack.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from serving import wire
from serving.answers import ActionResult, ActionsResult, OverloadedError, PolicyError, error_for
from serving.client import to_jsonable
from serving.episodes import Episode, play_episode

__all__ = [
    "AgentId",
    "AsyncPolicySession",
    "PolicySession",
    "SessionClosedError",
    "play_session_episodes",
]

Frame = str | bytes
AgentId = str | int | None
"""An agent of the session (``None``: the session's own agent)."""


class SessionClosedError(PolicyError):
    """The session could not be (re)opened within the retries; ``status`` is 0 (no answer)."""


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)  # 0-d stays 0-d
    return buffer.getvalue()


class _SessionProtocol:
    """What both clients share: the URL, the messages, the answers and the retry decisions."""

    def __init__(
        self,
        base_url: str,
        policy: str,
        token: str | None,
        explore_npy: bool,
        retries: int,
        backoff_s: float,
    ) -> None:
        parts = urlsplit(base_url)
        scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
        if scheme is None or not parts.netloc:
            raise ValueError(
                f"base_url: expected http(s):// or ws(s)://HOST:PORT, got {base_url!r}"
            )
        path = parts.path.rstrip("/") + wire.session_path(policy)
        query = "explore=true" if explore_npy else ""
        self.url = urlunsplit((scheme, parts.netloc, path, query, ""))
        self.headers = {wire.AUTHORIZATION: wire.bearer(token)} if token else {}
        self.policy = policy
        self.retries, self.backoff_s = retries, backoff_s
        self.outstanding: deque[Frame] = deque()
        """Messages sent and not answered yet, oldest first (resent after a reconnect)."""
        self.stateful = False
        """Whether the server holds agents' state in this session (a recurrent policy)."""
        self.lost = False
        """The session dropped while it held agents' state (raised on the next call)."""

    @staticmethod
    def action_message(
        observation: Any,
        explore: bool,
        seed: int | None,
        dist: bool,
        ident: Any = None,
        agent: AgentId = None,
        reset: bool = False,
        reward: float | None = None,
    ) -> str:
        message: dict[str, Any] = {"observation": to_jsonable(observation)}
        if agent is not None:
            message["agent"] = agent
        if reset:
            message["reset"] = True
        if reward is not None:
            message["reward"] = float(reward)
        return _encode(message, explore, seed, dist, ident)

    @staticmethod
    def actions_message(
        observations: Any,
        explore: bool,
        seed: int | None,
        dist: bool,
        ident: Any = None,
        agents: list[AgentId] | None = None,
        reset: bool = False,
        rewards: list[float] | None = None,
    ) -> str:
        message: dict[str, Any] = {"observations": to_jsonable(list(observations))}
        if agents is not None:
            message["agents"] = list(agents)
        if reset:
            message["reset"] = True
        if rewards is not None:
            message["rewards"] = [float(r) for r in rewards]
        return _encode(message, explore, seed, dist, ident)

    @staticmethod
    def reset_message(agent: AgentId, everyone: bool) -> str:
        message: dict[str, Any] = {"reset": True}
        if not everyone:
            message["agent"] = agent
        return json.dumps(message, separators=(",", ":"))

    def result(self, frame: Frame) -> ActionResult | ActionsResult[Any] | None:
        """The answer in ``frame`` (``None``: a reset done); raises an error answer's error."""
        if isinstance(frame, bytes):
            actions: np.ndarray = np.load(io.BytesIO(frame), allow_pickle=False)
            return ActionsResult(actions, "", "")
        answer = json.loads(frame)
        error = answer.get("error")
        if error is not None:
            raise error_for(int(error["status"]), str(error["detail"]))
        if answer.get("reset") is True:
            return None
        if "steps" in answer:  # only a recurrent policy's answers say how long its memory is
            self.stateful = True
        if "actions" in answer:
            return ActionsResult(
                answer["actions"],
                answer["policy"],
                answer["version"],
                answer.get("action_dist_inputs"),
            )
        return ActionResult(
            answer["action"], answer["policy"], answer["version"], answer.get("action_dist_inputs")
        )

    def refusal(self, err: InvalidStatus) -> PolicyError:
        """The typed error of a handshake the server answered without upgrading."""
        response = err.response
        try:
            detail = str(json.loads(bytes(response.body or b"")).get("detail", ""))
        except (ValueError, AttributeError):
            detail = bytes(response.body or b"").decode("utf-8", "replace")
        return error_for(response.status_code, detail or response.reason_phrase)

    def delay(self, attempt: int, err: Exception | None) -> float:
        """How long to wait before attempt ``attempt + 1`` (``Retry-After`` when given)."""
        if isinstance(err, InvalidStatus):
            after = err.response.headers.get("retry-after", "")
            if after.replace(".", "", 1).isdigit():
                return min(float(after), 30.0)
        return float(self.backoff_s * 2**attempt)

    def retryable(self, err: Exception) -> bool:
        """Whether opening the session may succeed on a later attempt."""
        if isinstance(err, InvalidStatus):
            return err.response.status_code in (502, 503, 504)
        return isinstance(err, OSError | ConnectionClosed | TimeoutError)

    def dropped(self) -> None:
        """The connection dropped: a session holding agents' state cannot be resumed."""
        if self.stateful:
            self.lost, self.stateful = True, False

    def check_lost(self) -> None:
        """Raise once for a dropped session that held agents' state (the next call reopens).

        Raises:
            SessionClosedError: Naming what was lost.
        """
        if not self.lost:
            return
        self.lost = False
        unanswered = len(self.outstanding)
        self.outstanding.clear()
        raise SessionClosedError(
            0,
            "the session dropped, and the recurrent state the server held for its agents went "
            f"with it ({unanswered} messages unanswered); start their episodes again "
            "(reset=True) in the next session",
        )

    def gave_up(self, err: Exception) -> PolicyError:
        if isinstance(err, InvalidStatus):
            refused = self.refusal(err)
            if refused.status == 503:
                return OverloadedError(503, refused.detail)
            return refused
        return SessionClosedError(0, f"cannot open a session at {self.url}: {err}")


def _encode(
    message: dict[str, Any], explore: bool, seed: int | None, dist: bool, ident: Any
) -> str:
    if ident is not None:
        message["id"] = ident
    if explore:
        message["explore"] = True
    if seed is not None:
        message["seed"] = seed
    if dist:
        message["return_dist_inputs"] = True
    return json.dumps(message, separators=(",", ":"))


class PolicySession:
    """A synchronous session with one served policy.

    Example::

        with PolicySession("http://127.0.0.1:8000", "cartpole", token="s3cret") as session:
            obs, _ = env.reset(seed=0)
            while True:
                obs, reward, terminated, truncated, _ = env.step(session.compute_action(obs).action)
                ...

    Args:
        base_url: The service (``http://``, ``https://``, ``ws://`` or ``wss://``, with port).
        policy: The served policy's name.
        token: Bearer token, if the service requires one (sent on the handshake).
        explore_npy: Sample the actions of ``.npy`` messages (JSON messages say per message).
        timeout: Seconds to open the session, and to wait for an answer.
        retries: Attempts to reopen a session that could not open or dropped (503 honours
            ``Retry-After``; 401, 404 and 422 are final).
        backoff_s: First reconnect delay; doubles each attempt.
        max_size: Largest answer accepted, in bytes.
    """

    def __init__(
        self,
        base_url: str,
        policy: str,
        *,
        token: str | None = None,
        explore_npy: bool = False,
        timeout: float = 10.0,
        retries: int = 5,
        backoff_s: float = 0.05,
        max_size: int = 64 * 1024 * 1024,
    ) -> None:
        self._protocol = _SessionProtocol(base_url, policy, token, explore_npy, retries, backoff_s)
        self.timeout, self.max_size = timeout, max_size
        self._ws: ClientConnection | None = None
        self.reconnects = 0
        """How many times the session was reopened after it dropped."""

    @property
    def url(self) -> str:
        """The session's ``ws://`` URL."""
        return self._protocol.url

    def connect(self) -> PolicySession:
        """Open the session now (otherwise the first message opens it)."""
        self._connection()
        return self

    def _open(self) -> ClientConnection:
        p = self._protocol
        for attempt in range(p.retries + 1):
            try:
                return connect(  # legacy=True: the connection itself, not a context manager
                    p.url,
                    legacy=True,
                    additional_headers=p.headers,
                    subprotocols=[Subprotocol(wire.SESSION_PROTOCOL)],
                    open_timeout=self.timeout,
                    max_size=self.max_size,
                )
            except InvalidURI as err:
                raise ValueError(f"base_url: {err}") from None
            except Exception as err:
                if not p.retryable(err) or attempt == p.retries:
                    raise p.gave_up(err) from None
                time.sleep(p.delay(attempt, err))
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> ClientConnection:
        self._protocol.check_lost()
        if self._ws is None:
            self._ws = self._open()
            for frame in self._protocol.outstanding:  # a reconnect: resend, in order
                self._ws.send(frame)
        return self._ws

    def _reconnect(self) -> None:
        self._ws = None
        self.reconnects += 1
        self._protocol.dropped()

    def send(self, frame: Frame) -> None:
        """Send one message (a JSON text or ``.npy`` bytes) without waiting for its answer."""
        connection = self._connection()  # a reopened one has resent what was outstanding
        self._protocol.outstanding.append(frame)
        try:
            connection.send(frame)
        except ConnectionClosed:
            self._reconnect()  # the next receive reopens and resends

    def receive(self) -> ActionResult | ActionsResult[Any] | None:
        """The answer to the oldest message not answered yet (``None``: a reset's).

        Raises:
            PolicyError: The typed error of an error answer (the session stays usable).
        """
        if not self._protocol.outstanding:
            raise RuntimeError("receive() without a message waiting for its answer")
        for attempt in range(self._protocol.retries + 1):
            try:
                frame = self._connection().recv(timeout=self.timeout)
                break
            except TimeoutError:
                self.close()  # a late answer must not be taken for the next message's
                raise SessionClosedError(0, f"no answer within {self.timeout:g} s") from None
            except ConnectionClosed:
                if attempt == self._protocol.retries:
                    raise SessionClosedError(0, "the session dropped and did not reopen") from None
                time.sleep(self._protocol.delay(attempt, None))
                self._reconnect()
        self._protocol.outstanding.popleft()
        return self._protocol.result(frame)

    def compute_action(
        self,
        observation: Any,
        *,
        agent: AgentId = None,
        reset: bool = False,
        reward: float | None = None,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> ActionResult:
        """The action for one observation (deterministic unless ``explore``).

        Args:
            observation: The observation.
            agent: Whose observation (a recurrent policy keeps a state per agent; ``None``:
                the session's own agent).
            reset: This is the first step of the agent's episode: its state starts afresh.
            reward: The reward the agent's previous action brought (read by a recurrent
                policy with ``lstm_use_prev_reward``; ignored otherwise).
            explore: Sample the action.
            seed: Seed of a sampled action.
            return_dist_inputs: Also answer the action distribution's inputs.
        """
        message = self._protocol.action_message(
            observation, explore, seed, return_dist_inputs, agent=agent, reset=reset, reward=reward
        )
        self.send(message)
        result = self.receive()
        assert isinstance(result, ActionResult)
        return result

    def compute_actions(
        self,
        observations: Any,
        *,
        agents: list[AgentId] | None = None,
        reset: bool = False,
        rewards: list[float] | None = None,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> ActionsResult[list[Any]]:
        """The actions for a batch of observations in one JSON message.

        ``agents`` names each row's agent (a recurrent policy needs them); ``reset`` starts
        their states afresh first; ``rewards``: what each agent's previous action brought.
        """
        message = self._protocol.actions_message(
            observations,
            explore,
            seed,
            return_dist_inputs,
            agents=agents,
            reset=reset,
            rewards=rewards,
        )
        self.send(message)
        result = self.receive()
        assert isinstance(result, ActionsResult)
        return result

    def reset(self, agent: AgentId = None, *, everyone: bool = False) -> None:
        """Forget an agent's state (``everyone``: every agent's), after the steps sent so far.

        Feed-forward policies hold no state: the reset is answered and changes nothing.
        """
        self.send(self._protocol.reset_message(agent, everyone))
        if self.receive() is not None:
            raise PolicyError(0, "the server did not answer the reset as a reset")

    def compute_actions_npy(self, observations: np.ndarray) -> np.ndarray:
        """Actions for one observation or a batch as one ``.npy`` message (the fastest path).

        A single observation (the space's shape) is answered with one action, a batch with one
        action per row. For single-array observation spaces; ``explore_npy`` decides sampling.
        """
        self.send(_npy(observations))
        result = self.receive()
        assert isinstance(result, ActionsResult)
        actions: np.ndarray = result.actions
        return actions

    def stream(
        self, observations: Iterable[Any], *, window: int = 32, explore: bool = False
    ) -> Iterator[ActionResult]:
        """Actions for many observations, ``window`` messages in flight (in order)."""
        in_flight = 0
        for observation in observations:
            self.send(self._protocol.action_message(observation, explore, None, False))
            in_flight += 1
            if in_flight >= window:
                yield self._action()
                in_flight -= 1
        for _ in range(in_flight):
            yield self._action()

    def _action(self) -> ActionResult:
        result = self.receive()
        assert isinstance(result, ActionResult)
        return result

    def close(self) -> None:
        """Close the session (answers still owed are dropped)."""
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        self._protocol.outstanding.clear()

    def __enter__(self) -> PolicySession:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPolicySession:
    """An asyncio session: the arguments, methods and answers of :class:`PolicySession`.

    Example::

        async with AsyncPolicySession("http://127.0.0.1:8000", "cartpole") as session:
            answer = await session.compute_action([0.01, -0.02, 0.03, 0.04])
    """

    def __init__(
        self,
        base_url: str,
        policy: str,
        *,
        token: str | None = None,
        explore_npy: bool = False,
        timeout: float = 10.0,
        retries: int = 5,
        backoff_s: float = 0.05,
        max_size: int = 64 * 1024 * 1024,
    ) -> None:
        self._protocol = _SessionProtocol(base_url, policy, token, explore_npy, retries, backoff_s)
        self.timeout, self.max_size = timeout, max_size
        self._ws: AsyncConnection | None = None
        self.reconnects = 0

    @property
    def url(self) -> str:
        """The session's ``ws://`` URL."""
        return self._protocol.url

    async def connect(self) -> AsyncPolicySession:
        """Open the session now (otherwise the first message opens it)."""
        await self._connection()
        return self

    async def _open(self) -> AsyncConnection:
        p = self._protocol
        for attempt in range(p.retries + 1):
            try:
                return await async_connect(
                    p.url,
                    additional_headers=p.headers,
                    subprotocols=[Subprotocol(wire.SESSION_PROTOCOL)],
                    open_timeout=self.timeout,
                    max_size=self.max_size,
                )
            except InvalidURI as err:
                raise ValueError(f"base_url: {err}") from None
            except Exception as err:
                if not p.retryable(err) or attempt == p.retries:
                    raise p.gave_up(err) from None
                await asyncio.sleep(p.delay(attempt, err))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connection(self) -> AsyncConnection:
        self._protocol.check_lost()
        if self._ws is None:
            self._ws = await self._open()
            for frame in self._protocol.outstanding:
                await self._ws.send(frame)
        return self._ws

    def _reconnect(self) -> None:
        self._ws = None
        self.reconnects += 1
        self._protocol.dropped()

    async def send(self, frame: Frame) -> None:
        """Send one message without waiting for its answer."""
        connection = await self._connection()
        self._protocol.outstanding.append(frame)
        try:
            await connection.send(frame)
        except ConnectionClosed:
            self._reconnect()

    async def receive(self) -> ActionResult | ActionsResult[Any] | None:
        """The answer to the oldest message not answered yet (see :meth:`PolicySession.receive`)."""
        if not self._protocol.outstanding:
            raise RuntimeError("receive() without a message waiting for its answer")
        for attempt in range(self._protocol.retries + 1):
            try:
                connection = await self._connection()
                frame = await asyncio.wait_for(connection.recv(), self.timeout)
                break
            except asyncio.TimeoutError:  # TimeoutError from 3.11 on
                await self.aclose()
                raise SessionClosedError(0, f"no answer within {self.timeout:g} s") from None
            except ConnectionClosed:
                if attempt == self._protocol.retries:
                    raise SessionClosedError(0, "the session dropped and did not reopen") from None
                await asyncio.sleep(self._protocol.delay(attempt, None))
                self._reconnect()
        self._protocol.outstanding.popleft()
        return self._protocol.result(frame)

    async def compute_action(
        self,
        observation: Any,
        *,
        agent: AgentId = None,
        reset: bool = False,
        reward: float | None = None,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> ActionResult:
        """The action for one observation (see :meth:`PolicySession.compute_action`)."""
        message = self._protocol.action_message(
            observation, explore, seed, return_dist_inputs, agent=agent, reset=reset, reward=reward
        )
        await self.send(message)
        result = await self.receive()
        assert isinstance(result, ActionResult)
        return result

    async def compute_actions(
        self,
        observations: Any,
        *,
        agents: list[AgentId] | None = None,
        reset: bool = False,
        rewards: list[float] | None = None,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> ActionsResult[list[Any]]:
        """The actions for a batch (see :meth:`PolicySession.compute_actions`)."""
        message = self._protocol.actions_message(
            observations,
            explore,
            seed,
            return_dist_inputs,
            agents=agents,
            reset=reset,
            rewards=rewards,
        )
        await self.send(message)
        result = await self.receive()
        assert isinstance(result, ActionsResult)
        return result

    async def reset(self, agent: AgentId = None, *, everyone: bool = False) -> None:
        """Forget an agent's state, or every agent's (see :meth:`PolicySession.reset`)."""
        await self.send(self._protocol.reset_message(agent, everyone))
        if await self.receive() is not None:
            raise PolicyError(0, "the server did not answer the reset as a reset")

    async def compute_actions_npy(self, observations: np.ndarray) -> np.ndarray:
        """Actions for one observation or a batch as one ``.npy`` message."""
        await self.send(_npy(observations))
        result = await self.receive()
        assert isinstance(result, ActionsResult)
        actions: np.ndarray = result.actions
        return actions

    async def stream(
        self, observations: Iterable[Any], *, window: int = 32, explore: bool = False
    ) -> AsyncIterator[ActionResult]:
        """Actions for many observations, ``window`` messages in flight (in order)."""
        in_flight = 0
        for observation in observations:
            await self.send(self._protocol.action_message(observation, explore, None, False))
            in_flight += 1
            if in_flight >= window:
                yield await self._action()
                in_flight -= 1
        for _ in range(in_flight):
            yield await self._action()

    async def _action(self) -> ActionResult:
        result = await self.receive()
        assert isinstance(result, ActionResult)
        return result

    async def aclose(self) -> None:
        """Close the session."""
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        self._protocol.outstanding.clear()

    async def __aenter__(self) -> AsyncPolicySession:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def play_session_episodes(
    session: PolicySession,
    env: Any,
    num_episodes: int,
    *,
    seed: int | None = None,
    explore: bool = False,
) -> list[Episode]:
    """Play episodes over a session: the episodes :func:`serving.client.play_episodes` plays.

    Args:
        session: A session with the served policy.
        env: A gymnasium-style env (its observations must fit the policy's space).
        num_episodes: Episodes to play.
        seed: Episode ``i`` resets with ``seed + i`` (reproducible) when given.
        explore: Ask for sampled instead of deterministic actions.

    Each episode's first step resets the session's agent (a recurrent policy's state starts
    afresh with every episode); every later step tells the reward the previous action brought.
    """
    reward: float | None = None  # None: the episode's first step (which resets)

    def act(obs: Any, action_seed: int | None) -> Any:
        answer = session.compute_action(
            obs, reset=reward is None, reward=reward, explore=explore, seed=action_seed
        )
        return answer.action

    def rewarded(value: float) -> None:
        nonlocal reward
        reward = value

    episodes = []
    for i in range(num_episodes):
        reward = None
        episode_seed = None if seed is None else seed + i
        episodes.append(play_episode(env, act, episode_seed, on_reward=rewarded))
    return episodes
