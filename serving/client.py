"""HTTP clients for the policy service: ``PolicyClient`` and ``AsyncPolicyClient`` (httpx).

For game/robot clients and batch evaluation jobs; :func:`play_episodes` runs gymnasium episodes
against a served policy.

Both clients retry with exponential backoff on 503 (honouring ``Retry-After``) and on connection
errors, and raise typed exceptions that carry the server's message for 4xx answers.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from formats.errors import RlserveError

__all__ = [
    "AsyncPolicyClient",
    "AuthenticationError",
    "BadRequestError",
    "EpisodeResult",
    "NotFoundError",
    "OverloadedError",
    "PolicyClient",
    "PolicyError",
    "ServerError",
    "play_episodes",
    "to_jsonable",
]

NPY = "application/x-npy"


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
    status = response.status_code
    if status == 401:
        raise AuthenticationError(status, detail)
    if status == 404:
        raise NotFoundError(status, detail)
    if status == 503:
        raise OverloadedError(status, detail)
    if status < 500:
        raise BadRequestError(status, detail)
    raise ServerError(status, detail)


def _retry_delay(response: httpx.Response | None, attempt: int, backoff_s: float) -> float:
    if response is not None:
        after = response.headers.get("retry-after", "")
        if after.replace(".", "", 1).isdigit():
            return min(float(after), 30.0)
    return float(backoff_s * 2**attempt)


def _action_body(observation: Any, explore: bool, seed: int | None, dist: bool) -> dict[str, Any]:
    return {
        "observation": to_jsonable(observation),
        "explore": explore,
        "seed": seed,
        "return_dist_inputs": dist,
    }


def _actions_body(observations: Any, explore: bool, seed: int | None, dist: bool) -> dict[str, Any]:
    return {
        "observations": to_jsonable(list(observations)),
        "explore": explore,
        "seed": seed,
        "return_dist_inputs": dist,
    }


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


class PolicyClient:
    """Synchronous client.

    Args:
        base_url: The service, e.g. ``http://127.0.0.1:8000``.
        token: Bearer token, if the service requires one.
        timeout: Seconds per request.
        retries: Extra attempts on 503 and connection errors.
        backoff_s: First retry delay (doubles each attempt) unless ``Retry-After`` says.
        transport: An httpx transport (tests, custom connection pools).
    """

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
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, headers=_headers(token), transport=transport
        )

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            if response is not None and (response.status_code != 503 or attempt == self.retries):
                _raise_for(response)
                return response
            time.sleep(_retry_delay(response, attempt, self.backoff_s))
        raise AssertionError("unreachable")  # pragma: no cover

    def compute_action(
        self,
        policy: str,
        observation: Any,
        *,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> dict[str, Any]:
        """``{"action", "policy", "version"[, "action_dist_inputs"]}`` for one observation."""
        body = _action_body(observation, explore, seed, return_dist_inputs)
        result: dict[str, Any] = self._send(
            "POST", f"/v1/policies/{policy}/compute_action", json=body
        ).json()
        return result

    def compute_actions(
        self,
        policy: str,
        observations: Any,
        *,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> dict[str, Any]:
        """``{"actions", "policy", "version"[, ...]}`` for a batch of observations."""
        body = _actions_body(observations, explore, seed, return_dist_inputs)
        result: dict[str, Any] = self._send(
            "POST", f"/v1/policies/{policy}/compute_actions", json=body
        ).json()
        return result

    def compute_actions_npy(self, policy: str, observations: np.ndarray) -> np.ndarray:
        """Deterministic actions for a batch sent and answered as ``.npy`` (fastest path)."""
        response = self._send(
            "POST",
            f"/v1/policies/{policy}/compute_actions",
            content=_npy(observations),
            headers={"content-type": NPY, "accept": NPY},
        )
        result: np.ndarray = np.load(io.BytesIO(response.content), allow_pickle=False)
        return result

    def policies(self) -> list[dict[str, Any]]:
        """Every served policy."""
        result: list[dict[str, Any]] = self._send("GET", "/v1/policies").json()["policies"]
        return result

    def policy(self, name: str) -> dict[str, Any]:
        """One policy's spaces, version, formats and limits."""
        result: dict[str, Any] = self._send("GET", f"/v1/policies/{name}").json()
        return result

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPolicyClient:
    """Asynchronous client (same arguments and methods as :class:`PolicyClient`)."""

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
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=_headers(token), transport=transport
        )

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = None
            try:
                response = await self._http.request(method, url, **kwargs)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            if response is not None and (response.status_code != 503 or attempt == self.retries):
                _raise_for(response)
                return response
            await asyncio.sleep(_retry_delay(response, attempt, self.backoff_s))
        raise AssertionError("unreachable")  # pragma: no cover

    async def compute_action(
        self,
        policy: str,
        observation: Any,
        *,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> dict[str, Any]:
        """``{"action", "policy", "version"[, "action_dist_inputs"]}`` for one observation."""
        body = _action_body(observation, explore, seed, return_dist_inputs)
        response = await self._send("POST", f"/v1/policies/{policy}/compute_action", json=body)
        result: dict[str, Any] = response.json()
        return result

    async def compute_actions(
        self,
        policy: str,
        observations: Any,
        *,
        explore: bool = False,
        seed: int | None = None,
        return_dist_inputs: bool = False,
    ) -> dict[str, Any]:
        """``{"actions", "policy", "version"[, ...]}`` for a batch of observations."""
        body = _actions_body(observations, explore, seed, return_dist_inputs)
        response = await self._send("POST", f"/v1/policies/{policy}/compute_actions", json=body)
        result: dict[str, Any] = response.json()
        return result

    async def policies(self) -> list[dict[str, Any]]:
        """Every served policy."""
        result: list[dict[str, Any]] = (await self._send("GET", "/v1/policies")).json()["policies"]
        return result

    async def policy(self, name: str) -> dict[str, Any]:
        """One policy's spaces, version, formats and limits."""
        result: dict[str, Any] = (await self._send("GET", f"/v1/policies/{name}")).json()
        return result

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPolicyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@dataclass(frozen=True)
class EpisodeResult:
    """One played episode."""

    episode_return: float
    length: int
    terminated: bool
    seed: int | None


def play_episodes(
    client: PolicyClient,
    policy: str,
    env: Any,
    num_episodes: int,
    *,
    seed: int | None = None,
    explore: bool = False,
) -> list[EpisodeResult]:
    """Play gymnasium episodes, asking the service for every action.

    Args:
        client: A connected client.
        policy: The served policy's name.
        env: A gymnasium env (its observations must fit the policy's space).
        num_episodes: Episodes to play.
        seed: Episode ``i`` resets with ``seed + i`` (reproducible) when given.
        explore: Ask for sampled instead of deterministic actions.
    """
    results = []
    for episode in range(num_episodes):
        episode_seed = None if seed is None else seed + episode
        obs, _ = env.reset(seed=episode_seed)
        total, length, terminated, truncated = 0.0, 0, False, False
        while not (terminated or truncated):
            action_seed = None if episode_seed is None else episode_seed * 100_003 + length
            answer = client.compute_action(policy, obs, explore=explore, seed=action_seed)
            action = answer["action"]
            obs, reward, terminated, truncated, _ = env.step(
                np.asarray(action, dtype=env.action_space.dtype)
                if isinstance(action, list)
                else action
            )
            total += float(reward)
            length += 1
        results.append(EpisodeResult(total, length, bool(terminated), episode_seed))
    return results
