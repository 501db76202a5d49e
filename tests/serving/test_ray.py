"""The Ray Serve application on a real Serve instance bound to 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporters import ArtifactError, export_checkpoint, load_artifact
from serving import AppArgs, PolicyClient, build_app, play_episodes, wire
from serving.session_client import PolicySession
from tests.helpers.policies import TinyPolicies

pytestmark = pytest.mark.integration

OBS = [0.01, -0.02, 0.03, 0.04]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def artifacts(tiny_policies: TinyPolicies) -> list[Path]:
    """Two versions of a CartPole policy: after one and after two training iterations."""
    return [tiny_policies.artifact("cartpole", ["onnx"], iteration=i) for i in (1, 2)]


def _args(artifact: Path) -> AppArgs:
    return AppArgs(
        artifact=str(artifact),
        name="cartpole",
        max_batch_size=16,
        batch_wait_timeout_s=0.05,
        num_cpus=0.5,
    )


@pytest.fixture(scope="module")
def served(ray_session: Any, artifacts: list[Path]) -> Iterator[str]:
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(_args(artifacts[0])), name="rlserve", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()  # type: ignore[no-untyped-call]


def test_single_request_through_serve(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        assert client.get(wire.HEALTHZ).json() == {"status": "ok"}
        answer = client.post(wire.action_path("cartpole"), json={"observation": OBS})
        assert answer.status_code == 200, answer.text
        assert answer.json()["action"] in (0, 1)
        assert answer.json()["policy"] == "cartpole"


def test_concurrent_requests_form_batches_and_bad_ones_fail_alone(served: str) -> None:
    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served, timeout=30) as client:
            requests = [
                client.post(
                    wire.action_path("cartpole"),
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


def test_app_args_are_validated(tmp_path: Path) -> None:
    # `serve run serving.app:build_app key=value ...` passes strings; they are validated.
    args = AppArgs.model_validate({"artifact": "x", "max_batch_size": "32"})
    assert args.max_batch_size == 32
    with pytest.raises(ArtifactError, match="not a directory"):
        build_app({"artifact": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="artifact=PATH"):
        AppArgs()
    with pytest.raises(ValueError, match="max_batch_size"):
        AppArgs(artifact="x", max_batch_size=0)
    with pytest.raises(ValueError, match="set allow_torchscript=true"):
        AppArgs(artifact="x", backend="torchscript")
    with pytest.raises(ValueError, match="backend"):
        AppArgs.model_validate({"artifact": "x", "backend": "tensorflow"})


def test_sync_client_and_episodes_against_serve(served: str) -> None:
    import gymnasium as gym
    import numpy as np

    with PolicyClient(served) as client:
        assert [p["name"] for p in client.policies()] == ["cartpole"]
        batch = client.compute_actions_npy("cartpole", np.zeros((32, 4), np.float32))
        assert batch.actions.shape == (32,)
        env = gym.make("CartPole-v1")
        try:
            episodes = play_episodes(client, "cartpole", env, 2, seed=3)
        finally:
            env.close()
    assert [e.seed for e in episodes] == [3, 4]
    assert all(e.length >= 8 and e.episode_return == e.length for e in episodes)


def test_hot_reload_swaps_versions_without_dropping_requests(
    served: str, artifacts: list[Path], tmp_path: Path
) -> None:
    import shutil
    import threading

    from ray import serve

    from exporters import load_artifact

    old, new = (load_artifact(a).version for a in artifacts)
    assert old != new
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=served, timeout=30) as client:
            while not stop.is_set():
                answer = client.post(wire.action_path("cartpole"), json={"observation": OBS})
                seen.append((answer.status_code, answer.json().get("version", answer.text)))

    thread = threading.Thread(target=hammer)
    thread.start()
    session = PolicySession(served, "cartpole")  # a WebSocket session open across the reload
    try:
        assert session.compute_action(OBS).version == old
        serve.run(build_app(_args(artifacts[1])), name="rlserve", route_prefix="/")
        with httpx.Client(base_url=served, timeout=30) as client:
            for _ in range(50):
                if client.get(wire.policy_path("cartpole")).json()["version"] == new:
                    break
        # Messages after the reload get the new version's answers: on the same connection
        # when Serve reconfigures the replica in place, after a reconnect when it replaces it
        # (Serve ends the old replica, and its sessions, after the graceful-shutdown timeout).
        assert session.compute_action(OBS).version == new
    finally:
        session.close()
        stop.set()
        thread.join()
    assert {status for status, _ in seen} == {200}, seen[-5:]
    versions = [version for _, version in seen]
    assert versions[0] == old and versions[-1] == new

    # A corrupt new artifact is refused before any replica is touched; the current version
    # keeps serving.
    corrupt = tmp_path / "corrupt"
    shutil.copytree(artifacts[1], corrupt)
    model = corrupt / "model.onnx"
    model.write_bytes(model.read_bytes()[:-16])
    with pytest.raises(ArtifactError, match=r"model\.onnx"):
        serve.run(build_app(_args(corrupt)), name="rlserve", route_prefix="/")
    with httpx.Client(base_url=served, timeout=30) as client:
        answer = client.post(wire.action_path("cartpole"), json={"observation": OBS})
        assert answer.status_code == 200
        assert answer.json()["version"] == new


def test_overload_is_answered_with_503(served: str, artifacts: list[Path]) -> None:
    from ray import serve

    args = _args(artifacts[0]).model_copy(
        update={
            "max_batch_size": 1,
            "max_ongoing_requests": 1,
            "max_queued_requests": 1,
            "batch_wait_timeout_s": 0.2,
        }
    )
    serve.run(build_app(args), name="tight", route_prefix="/tight")

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served, timeout=30) as client:
            requests = [
                client.post("/tight" + wire.action_path("cartpole"), json={"observation": OBS})
                for _ in range(12)
            ]
            return list(await asyncio.gather(*requests))

    try:
        answers = asyncio.run(flood())
    finally:
        serve.delete("tight")
    statuses = [a.status_code for a in answers]
    assert all(a.headers.get("retry-after") == "1" for a in answers if a.status_code == 503)
    assert 503 in statuses, statuses
    assert 200 in statuses, statuses
    assert set(statuses) <= {200, 503}


def test_the_torch_export_backend_in_a_replica(
    served: str, artifacts: list[Path], tmp_path: Path
) -> None:
    from ray import serve

    source = load_artifact(artifacts[0]).manifest.source_checkpoint
    both = export_checkpoint(source, tmp_path / "both", ["onnx", "torch_export"])
    args = _args(both).model_copy(update={"backend": "torch_export"})
    serve.run(build_app(args), name="torch", route_prefix="/torch")

    async def ask(prefix: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=served, timeout=30) as client:
            observations = [[0.01 * i, -0.02, 0.03 * (i % 5), 0.04 - 0.01 * i] for i in range(24)]
            url = prefix + wire.action_path("cartpole")
            replies = await asyncio.gather(
                *(client.post(url, json={"observation": obs}) for obs in observations)
            )
            assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
            described = (await client.get(prefix + wire.policy_path("cartpole"))).json()
            return [described, *(r.json() for r in replies)]

    try:
        torch_answers = asyncio.run(ask("/torch"))
    finally:
        serve.delete("torch")
    onnx_answers = asyncio.run(ask(""))
    assert torch_answers[0]["backend"] == "torch_export"
    assert onnx_answers[0]["backend"] == "onnx"
    assert [a["action"] for a in torch_answers[1:]] == [a["action"] for a in onnx_answers[1:]]
    assert {a["version"] for a in torch_answers[1:]} == {load_artifact(both).version}
