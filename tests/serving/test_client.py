"""The HTTP clients: typed errors, retries with backoff, and the async client on the ASGI app."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serving import PolicyRegistry, create_app, wire
from serving.client import (
    ActionResult,
    ActionsResult,
    AsyncPolicyClient,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    OverloadedError,
    PolicyClient,
    ServerError,
    play_episodes,
    to_jsonable,
)
from serving.episodes import Episode, action_seed


def scripted(
    *answers: tuple[int, dict[str, Any]] | Exception,
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport that replays the given answers (or raises the given errors) in order."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        status, body = item
        headers = {"retry-after": "0"} if status == 503 else {}
        return httpx.Response(status, json=body, headers=headers)

    return httpx.MockTransport(handler), seen


OK = (200, {"action": 1, "policy": "p", "version": "v1"})


def test_retries_on_503_then_succeeds() -> None:
    transport, seen = scripted((503, {"detail": "busy"}), (503, {"detail": "busy"}), OK)
    with PolicyClient("http://svc", transport=transport, backoff_s=0.0) as client:
        assert client.compute_action("p", [0.0]).action == 1
    assert len(seen) == 3
    assert json.loads(seen[0].content) == {
        "observation": [0.0],
        "explore": False,
        "seed": None,
        "return_dist_inputs": False,
    }


def test_persistent_503_raises_overloaded() -> None:
    transport, seen = scripted(*[(503, {"detail": "busy"})] * 3)
    client = PolicyClient("http://svc", transport=transport, retries=2, backoff_s=0.0)
    with client, pytest.raises(OverloadedError, match="busy"):
        client.compute_action("p", [0.0])
    assert len(seen) == 3


def test_connection_errors_are_retried_then_raised() -> None:
    refused = httpx.ConnectError("connection refused")
    transport, seen = scripted(refused, OK)
    with PolicyClient("http://svc", transport=transport, backoff_s=0.0) as client:
        assert client.compute_action("p", [0.0]).version == "v1"
    transport, seen = scripted(refused, refused)
    client = PolicyClient("http://svc", transport=transport, retries=1, backoff_s=0.0)
    with client, pytest.raises(httpx.ConnectError):
        client.compute_action("p", [0.0])
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (413, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (404, NotFoundError),
        (500, ServerError),
    ],
)
def test_errors_are_typed_and_carry_the_server_message(status: int, error: type[Exception]) -> None:
    transport, seen = scripted((status, {"detail": f"what went wrong {status}"}))
    client = PolicyClient("http://svc", transport=transport)
    with client, pytest.raises(error, match=f"what went wrong {status}") as info:
        client.compute_action("p", [0.0])
    assert info.value.status == status  # type: ignore[attr-defined]
    assert len(seen) == 1  # 4xx and 500 are not retried


def test_token_is_sent_as_bearer() -> None:
    transport, seen = scripted(OK)
    with PolicyClient("http://svc", token="t0k", transport=transport) as client:
        client.compute_action("p", [0.0])
    assert seen[0].headers[wire.AUTHORIZATION] == wire.bearer("t0k")


def test_numpy_observations_become_json() -> None:
    obs = {"a": np.arange(3, dtype=np.float32), "b": (np.int64(2), np.array([[1, 0]]))}
    assert to_jsonable(obs) == {"a": [0.0, 1.0, 2.0], "b": [2, [[1, 0]]]}


@pytest.fixture()
def app(cartpole_artifact: Path) -> Any:
    return create_app(PolicyRegistry.from_paths({"cartpole": cartpole_artifact}))


def test_async_client_against_the_app(app: Any) -> None:
    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with AsyncPolicyClient("http://rlserve.test", transport=transport) as client:
            listing = await client.policies()
            assert [p["name"] for p in listing] == ["cartpole"]
            info = await client.policy("cartpole")
            single = await client.compute_action("cartpole", np.zeros(4, np.float32))
            assert single.version == info["version"]
            batch = await client.compute_actions("cartpole", np.zeros((5, 4), np.float32))
            assert batch.actions == [single.action] * 5
            with pytest.raises(BadRequestError, match=r"expected shape \(4,\)"):
                await client.compute_action("cartpole", [1.0])
            with pytest.raises(NotFoundError):
                await client.policy("nope")

    asyncio.run(scenario())


def test_answers_are_typed_results() -> None:
    dist = (200, {"action": 0, "policy": "p", "version": "v1", "action_dist_inputs": [0.5, 0.1]})
    transport, _ = scripted(dist, OK)
    with PolicyClient("http://svc", transport=transport) as client:
        answer = client.compute_action("p", [0.0], return_dist_inputs=True)
        assert answer == ActionResult(0, "p", "v1", [0.5, 0.1])
        assert client.compute_action("p", [0.0]).action_dist_inputs is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.action = 1  # type: ignore[misc]


class SyncASGITransport(httpx.BaseTransport):
    """The sync client on the ASGI app: httpx's ASGI transport driven by a private loop."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.loop = asyncio.new_event_loop()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def answer() -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return self.loop.run_until_complete(answer())

    def close(self) -> None:
        self.loop.close()


def test_sync_client_against_the_app(app: Any) -> None:
    transport = SyncASGITransport(app)
    with PolicyClient("http://rlserve.test", transport=transport) as client:
        single = client.compute_action("cartpole", np.zeros(4, np.float32), return_dist_inputs=True)
        assert isinstance(single, ActionResult) and single.policy == "cartpole"
        assert single.action_dist_inputs is not None
        assert single.action == int(np.argmax(single.action_dist_inputs))
        batch = client.compute_actions("cartpole", np.zeros((3, 4)), return_dist_inputs=True)
        assert isinstance(batch, ActionsResult) and batch.actions == [single.action] * 3
        assert batch.action_dist_inputs is not None and len(batch.action_dist_inputs) == 3
        npy = client.compute_actions_npy("cartpole", np.zeros((6, 4), np.float32))
        assert npy.actions.tolist() == [single.action] * 6
        assert (npy.policy, npy.version) == ("cartpole", single.version)
        assert npy.action_dist_inputs is None


def test_async_client_sends_npy(app: Any) -> None:
    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with AsyncPolicyClient("http://rlserve.test", transport=transport) as client:
            single = await client.compute_action("cartpole", np.zeros(4, np.float32))
            batch = await client.compute_actions_npy("cartpole", np.zeros((5, 4), np.float32))
            assert batch.actions.shape == (5,)
            assert batch.actions.tolist() == [single.action] * 5
            assert (batch.policy, batch.version) == ("cartpole", single.version)

    asyncio.run(scenario())


class _CountingEnv:
    """A duck-typed env: episodes of three steps, reward 1 each; records its reset seeds."""

    action_space = types.SimpleNamespace(dtype=np.int64)

    def __init__(self) -> None:
        self.seeds: list[int | None] = []
        self.steps = 0

    def reset(self, seed: int | None = None) -> tuple[list[float], dict[str, Any]]:
        self.seeds.append(seed)
        self.steps = 0
        return [0.0], {}

    def step(self, action: Any) -> tuple[list[float], float, bool, bool, dict[str, Any]]:
        self.steps += 1
        return [0.0], 1.0, self.steps == 3, False, {}


def test_play_episodes_resets_episode_i_with_seed_plus_i() -> None:
    transport, seen = scripted(*[OK] * 6)
    env = _CountingEnv()
    with PolicyClient("http://svc", transport=transport) as client:
        episodes = play_episodes(client, "p", env, 2, seed=7, explore=True)
    assert episodes == [Episode(7, 3.0, 3, True, False), Episode(8, 3.0, 3, True, False)]
    assert env.seeds == [7, 8]
    bodies = [json.loads(r.content) for r in seen]
    assert [b["seed"] for b in bodies] == [
        action_seed(7, 0),
        action_seed(7, 1),
        action_seed(7, 2),
    ] + [action_seed(8, step) for step in range(3)]
    assert all(b["explore"] for b in bodies)


LIGHT = ("ray", "fastapi", "starlette", "onnxruntime", "gymnasium", "torch", "pydantic")


@pytest.mark.parametrize(
    "statement",
    [
        "import serving.client",
        "from serving import PolicyClient",
        "from serving import PolicySession, AsyncPolicySession",
    ],
)
def test_the_client_imports_alone(statement: str) -> None:
    """A game or robot imports the client without Ray, the server stack or the model runtimes."""
    code = f"import sys; {statement}; print(sorted(m for m in {LIGHT!r} if m in sys.modules))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"
