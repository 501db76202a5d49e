"""The Ray Serve application on a real Serve instance bound to 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporters import export_checkpoint
from serving import AppArgs, build_app
from training import PPOConfig

pytestmark = pytest.mark.integration

OBS = [0.01, -0.02, 0.03, 0.04]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    config = PPOConfig().environment("CartPole-v1").training(train_batch_size=64, minibatch_size=32)
    algo = config.debugging(seed=0).build()
    try:
        algo.train()
        checkpoint = algo.save(str(root / "checkpoint")).checkpoint.path
    finally:
        algo.stop()
    return export_checkpoint(checkpoint, root / "artifact", ["onnx"])


@pytest.fixture(scope="module")
def served(ray_session: Any, artifact: Path) -> Iterator[str]:
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = AppArgs(
        artifact=str(artifact),
        name="cartpole",
        max_batch_size=16,
        batch_wait_timeout_s=0.05,
        num_cpus=0.5,
    )
    serve.run(build_app(args), name="rlserve", route_prefix="/", blocking=False)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()  # type: ignore[no-untyped-call]


def test_single_request_through_serve(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        answer = client.post("/v1/policies/cartpole/compute_action", json={"observation": OBS})
        assert answer.status_code == 200, answer.text
        assert answer.json()["action"] in (0, 1)
        assert answer.json()["policy"] == "cartpole"


def test_concurrent_requests_form_batches_and_bad_ones_fail_alone(served: str) -> None:
    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served, timeout=30) as client:
            requests = [
                client.post(
                    "/v1/policies/cartpole/compute_action",
                    json={"observation": [9.0, 0, 0, 0] if i % 8 == 3 else OBS},
                )
                for i in range(24)
            ]
            return list(await asyncio.gather(*requests))

    answers = asyncio.run(fire())
    bad = [a for i, a in enumerate(answers) if i % 8 == 3]
    good = [a for i, a in enumerate(answers) if i % 8 != 3]
    assert all(a.status_code == 422 for a in bad)
    assert all(a.status_code == 200 for a in good), [a.text for a in good]
    sizes = [int(a.headers["x-batched-requests"]) for a in good]
    assert max(sizes) > 1, sizes
    assert max(sizes) <= 16
    assert len({a.json()["action"] for a in good}) == 1  # same observation, same action


def test_app_args_are_validated() -> None:
    with pytest.raises(ValueError, match="artifact=PATH"):
        AppArgs()
    with pytest.raises(ValueError, match="max_batch_size"):
        AppArgs(artifact="x", max_batch_size=0)
