"""HTTP clients for the policy service: ``PolicyClient`` and ``AsyncPolicyClient`` (httpx).

For game/robot clients and batch evaluation jobs; :func:`play_episodes` plays episodes against a
served policy through :func:`serving.episodes.play_episode`.

A recurrent policy's state travels with the requests: each answer's ``state`` goes back with
the next observation of the same episode (``state=None`` starts one); :func:`play_episodes`
does that for you.

Both clients retry with exponential backoff on 503 (honouring ``Retry-After``) and on connection
errors, and raise typed exceptions that carry the server's message for 4xx answers. Answers are
typed: :class:`ActionResult` for one observation, :class:`ActionsResult` for a batch.

This module imports only httpx and numpy (and rlserve's own light modules): importing it does not
pull in Ray, the server stack, onnxruntime, gymnasium or torch.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
import numpy as np

from serving import wire
from serving.answers import (
    ActionResult,
    ActionsResult,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    OverloadedError,
    PolicyError,
    ServerError,
    error_for,
)
from serving.episodes import Episode, play_episode

__all__ = [
    "ActionResult",
    "ActionsResult",
    "AsyncPolicyClient",
    "AuthenticationError",
    "BadRequestError",
    "CarriedState",
    "NotFoundError",
    "OverloadedError",
    "PolicyClient",
    "PolicyError",
    "ServerError",
    "play_episodes",
    "to_jsonable",
]


def to_jsonable(value: Any) -> Any:
    """Observations (numpy arrays, scalars, dicts, tuples) as JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = str(response.json().get("detail", response.text))
    except ValueError:
        detail = response.text
    raise error_for(response.status_code, detail)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


class _BaseClient:
    """What both clients share: building requests, retry decisions and parsing answers.

    The subclasses only send (httpx's own ``BaseClient`` idiom).
    """

    _http: httpx.Client | httpx.AsyncClient

    def __init__(self, *, retries: int, backoff_s: float) -> None:
        self.retries, self.backoff_s = retries, backoff_s

    @staticmethod
    def _client_args(base_url: str, token: str | None, timeout: float) -> dict[str, Any]:
        headers = {wire.AUTHORIZATION: wire.bearer(token)} if token else {}
        return {"base_url": base_url, "timeout": timeout, "headers": headers}

    def _json_request(
        self,
        path: str,
        body: dict[str, Any],
        explore: bool,
        seed: int | None,
        dist: bool,
        state: Any,
        previous: dict[str, Any] | None = None,
    ) -> httpx.Request:
        body.update(explore=explore, seed=seed, return_dist_inputs=dist)
        if state is not None:
            body["state"] = to_jsonable(state)
        for key, value in (previous or {}).items():
            if value is not None:
                body[key] = to_jsonable(value)
        return self._http.build_request("POST", path, json=body)

    def _action_request(
        self,
        policy: str,
        observation: Any,
        explore: bool,
        seed: int | None,
        dist: bool,
        state: Any = None,
        prev_action: Any = None,
        prev_reward: float | None = None,
    ) -> httpx.Request:
        body = {"observation": to_jsonable(observation)}
        previous = {"prev_action": prev_action, "prev_reward": prev_reward}
        path = wire.action_path(policy)
        return self._json_request(path, body, explore, seed, dist, state, previous)

    def _actions_request(
        self,
        policy: str,
        observations: Any,
        explore: bool,
        seed: int | None,
        dist: bool,
        state: Any = None,
        prev_actions: Any = None,
        prev_rewards: Any = None,
    ) -> httpx.Request:
        body = {"observations": to_jsonable(list(observations))}
        previous = {"prev_actions": prev_actions, "prev_rewards": prev_rewards}
        path = wire.actions_path(policy)
        return self._json_request(path, body, explore, seed, dist, state, previous)

    def _actions_npy_request(
        self, policy: str, observations: np.ndarray, explore: bool
    ) -> httpx.Request:
        return self._http.build_request(
            "POST",
            wire.actions_path(policy),
            content=_npy(observations),
            headers={"content-type": wire.NPY, "accept": wire.NPY},
            params={"explore": "true"} if explore else None,
        )

    def _policies_request(self) -> httpx.Request:
        return self._http.build_request("GET", wire.POLICIES)

    def _policy_request(self, name: str) -> httpx.Request:
        return self._http.build_request("GET", wire.policy_path(name))

    def _answered(self, response: httpx.Response | None, attempt: int) -> bool:
        """Whether ``response`` is final (raising for errors); ``False``: wait and retry."""
        if response is None or (response.status_code == 503 and attempt < self.retries):
            return False
        _raise_for(response)
        return True

    def _delay(self, response: httpx.Response | None, attempt: int) -> float:
        if response is not None:
            after = response.headers.get("retry-after", "")
            if after.replace(".", "", 1).isdigit():
                return min(float(after), 30.0)
        return float(self.backoff_s * 2**attempt)

    @staticmethod
    def _action_result(response: httpx.Response) -> ActionResult:
        d = response.json()
        return ActionResult(
            d["action"], d["policy"], d["version"], d.get("action_dist_inputs"), d.get("state")
        )

    @staticmethod
    def _actions_result(response: httpx.Response) -> ActionsResult[list[Any]]:
        d = response.json()
        return ActionsResult(
            d["actions"], d["policy"], d["version"], d.get("action_dist_inputs"), d.get("state")
        )

    @staticmethod
    def _actions_npy_result(response: httpx.Response) -> ActionsResult[np.ndarray]:
        actions: np.ndarray = np.load(io.BytesIO(response.content), allow_pickle=False)
        headers = response.headers
        policy, version = headers.get(wire.POLICY_HEADER, ""), headers.get(wire.VERSION_HEADER, "")
        return ActionsResult(actions, policy, version)

    @staticmethod
    def _policies_result(response: httpx.Response) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = response.json()["policies"]
        return result

    @staticmethod
    def _policy_result(response: httpx.Response) -> dict[str, Any]:
        result: dict[str, Any] = response.json()
        return result


class PolicyClient(_BaseClient):
    """Synchronous client.

    Example::

        with PolicyClient("http://127.0.0.1:8000", token="s3cret") as client:
            answer = client.compute_action("cartpole", [0.01, -0.02, 0.03, 0.04])
            env.step(answer.action)
            batch = client.compute_actions_npy("cartpole", np.zeros((32, 4), np.float32))
            batch.actions.shape  # (32,)

    Args:
        base_url: The service, e.g. ``http://127.0.0.1:8000``.
        token: Bearer token, if the service requires one.
        timeout: Seconds per request.
        retries: Extra attempts on 503 and connection errors.
        backoff_s: First retry delay (doubles each attempt) unless ``Retry-After`` says.
        transport: An httpx transport (tests, custom connection pools).
    """

    _http: httpx.Client

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(retries=retries, backoff_s=backoff_s)
        self._http = httpx.Client(
            **self._client_args(base_url, token, timeout), transport=transport
        )

    def _send(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = self._http.send(request)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            if self._answered(response, attempt):
                assert response is not None
                return response
            time.sleep(self._delay(response, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def compute_action(
        self,
        policy: str,
        observation: Any,
        *,
        state: Any = None,
        prev_action: Any = None,
        prev_reward: float | None = None,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> ActionResult:
        """The action for one observation (deterministic unless ``explore``).

        ``state``: a recurrent policy's state, the previous answer's ``state`` (``None``: an
        episode's first step). ``prev_action`` / ``prev_reward``: the action taken and the
        reward received at the step before, for a policy that reads them (its ``previous``).
        """
        request = self._action_request(
            policy, observation, explore, seed, return_dist_inputs, state, prev_action, prev_reward
        )
        return self._action_result(self._send(request))

    def compute_actions(
        self,
        policy: str,
        observations: Any,
        *,
        state: Any = None,
        prev_actions: Any = None,
        prev_rewards: Any = None,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> ActionsResult[list[Any]]:
        """The actions for a batch of observations, sent and answered as JSON.

        ``state``: a recurrent policy's state rows, the previous answer's ``state``;
        ``prev_actions`` / ``prev_rewards``: each row's previous action and reward.
        """
        request = self._actions_request(
            policy,
            observations,
            explore,
            seed,
            return_dist_inputs,
            state,
            prev_actions,
            prev_rewards,
        )
        return self._actions_result(self._send(request))

    def compute_actions_npy(
        self, policy: str, observations: np.ndarray, *, explore: bool = False
    ) -> ActionsResult[np.ndarray]:
        """The actions for a batch sent and answered as ``.npy`` (the fastest path).

        For single-array observation spaces; deterministic unless ``explore``.
        """
        request = self._actions_npy_request(policy, observations, explore)
        return self._actions_npy_result(self._send(request))

    def policies(self) -> list[dict[str, Any]]:
        """Every served policy."""
        return self._policies_result(self._send(self._policies_request()))

    def policy(self, name: str) -> dict[str, Any]:
        """One policy's spaces, version, formats and limits."""
        return self._policy_result(self._send(self._policy_request(name)))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPolicyClient(_BaseClient):
    """Asynchronous client: the arguments, methods and answers of :class:`PolicyClient`.

    Its ``transport`` is an httpx async transport (tests: ``httpx.ASGITransport(app=...)``).

    Example::

        async with AsyncPolicyClient("http://127.0.0.1:8000") as client:
            answer = await client.compute_action("cartpole", [0.01, -0.02, 0.03, 0.04])
            answer.action, answer.version
            batch = await client.compute_actions("cartpole", [obs_a, obs_b])
            batch.actions  # [0, 1]
    """

    _http: httpx.AsyncClient

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(retries=retries, backoff_s=backoff_s)
        self._http = httpx.AsyncClient(
            **self._client_args(base_url, token, timeout), transport=transport
        )

    async def _send(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = await self._http.send(request)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            if self._answered(response, attempt):
                assert response is not None
                return response
            await asyncio.sleep(self._delay(response, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def compute_action(
        self,
        policy: str,
        observation: Any,
        *,
        state: Any = None,
        prev_action: Any = None,
        prev_reward: float | None = None,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> ActionResult:
        """The action for one observation (deterministic unless ``explore``).

        ``state``: a recurrent policy's state, the previous answer's ``state`` (``None``: an
        episode's first step). ``prev_action`` / ``prev_reward``: the action taken and the
        reward received at the step before, for a policy that reads them (its ``previous``).
        """
        request = self._action_request(
            policy, observation, explore, seed, return_dist_inputs, state, prev_action, prev_reward
        )
        return self._action_result(await self._send(request))

    async def compute_actions(
        self,
        policy: str,
        observations: Any,
        *,
        state: Any = None,
        prev_actions: Any = None,
        prev_rewards: Any = None,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> ActionsResult[list[Any]]:
        """The actions for a batch of observations, sent and answered as JSON.

        ``state``: a recurrent policy's state rows, the previous answer's ``state``;
        ``prev_actions`` / ``prev_rewards``: each row's previous action and reward.
        """
        request = self._actions_request(
            policy,
            observations,
            explore,
            seed,
            return_dist_inputs,
            state,
            prev_actions,
            prev_rewards,
        )
        return self._actions_result(await self._send(request))

    async def compute_actions_npy(
        self, policy: str, observations: np.ndarray, *, explore: bool = False
    ) -> ActionsResult[np.ndarray]:
        """The actions for a batch sent and answered as ``.npy`` (the fastest path).

        For single-array observation spaces; deterministic unless ``explore``.
        """
        request = self._actions_npy_request(policy, observations, explore)
        return self._actions_npy_result(await self._send(request))

    async def policies(self) -> list[dict[str, Any]]:
        """Every served policy."""
        return self._policies_result(await self._send(self._policies_request()))

    async def policy(self, name: str) -> dict[str, Any]:
        """One policy's spaces, version, formats and limits."""
        return self._policy_result(await self._send(self._policy_request(name)))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPolicyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def play_episodes(
    client: PolicyClient,
    policy: str,
    env: Any,
    num_episodes: int,
    *,
    seed: int | None = None,
    explore: bool = False,
) -> list[Episode]:
    """Play episodes, asking the service for every action (:func:`~serving.episodes.play_episode`).

    Args:
        client: A connected client.
        policy: The served policy's name.
        env: A gymnasium-style env (its observations must fit the policy's space).
        num_episodes: Episodes to play.
        seed: Episode ``i`` resets with ``seed + i`` (reproducible) when given.
        explore: Ask for sampled instead of deterministic actions.

    Returns:
        One :class:`~serving.episodes.Episode` per episode, in order.

    A recurrent policy's state is carried from answer to request along each episode and
    starts afresh with the next one.
    """
    carried = CarriedState()

    def act(obs: Any, action_seed: int | None) -> Any:
        answer = client.compute_action(
            policy, obs, explore=explore, seed=action_seed, **carried.request()
        )
        return carried.answered(answer)

    episodes = []
    for i in range(num_episodes):
        carried.start_episode()
        episode_seed = None if seed is None else seed + i
        episodes.append(play_episode(env, act, episode_seed, on_reward=carried.rewarded))
    return episodes


class CarriedState:
    """What a client carries along an episode over HTTP, for any policy.

    The state the last answer returned (a recurrent policy's), the action it answered and the
    reward that action brought (read by an LSTM with ``lstm_use_prev_*``, ignored by others).

    Example::

        carried = CarriedState()
        obs, _ = env.reset()
        while True:
            answer = client.compute_action("npc", obs, **carried.request())
            obs, reward, terminated, truncated, _ = env.step(carried.answered(answer))
            carried.rewarded(reward)
            if terminated or truncated:
                break
    """

    def __init__(self) -> None:
        self.start_episode()

    def start_episode(self) -> None:
        """The next step is an episode's first: nothing carried."""
        self.state: Any = None
        self.action: Any = None
        self.reward: float | None = None

    def request(self) -> dict[str, Any]:
        """The keyword arguments of the next ``compute_action``."""
        return {"state": self.state, "prev_action": self.action, "prev_reward": self.reward}

    def answered(self, answer: ActionResult) -> Any:
        """Keep what the answer carries forward; its action."""
        self.state, self.action = answer.state, answer.action
        return answer.action

    def rewarded(self, reward: float) -> None:
        """The env's reward for the last action."""
        self.reward = reward
