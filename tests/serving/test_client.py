"""The HTTP clients: typed errors, retries with backoff, and the async client on the ASGI app."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serving import PolicyRegistry, create_app
from serving.client import (
    AsyncPolicyClient,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    OverloadedError,
    PolicyClient,
    ServerError,
    to_jsonable,
)


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
        assert client.compute_action("p", [0.0])["action"] == 1
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
        assert client.compute_action("p", [0.0])["version"] == "v1"
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
    assert seen[0].headers["authorization"] == "Bearer t0k"


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
            assert single["version"] == info["version"]
            batch = await client.compute_actions("cartpole", np.zeros((5, 4), np.float32))
            assert batch["actions"] == [single["action"]] * 5
            with pytest.raises(BadRequestError, match=r"expected shape \(4,\)"):
                await client.compute_action("cartpole", [1.0])
            with pytest.raises(NotFoundError):
                await client.policy("nope")

    asyncio.run(scenario())
