"""Serving a SAC artifact: ``explore=true`` samples training's squashed Gaussian, in bounds.

One tiny SAC policy on ``tests.helpers.envs:AsymmetricBoxEnv`` (action bounds ``[-1, 3]``,
``[-0.2, 0.9]``, ``[-3, -2]``) is trained for one iteration and exported (ONNX) once for the
module. The sampler is checked against training's own
:class:`training.distributions.SquashedGaussian`: the same transform of the same normal draws,
and the same distribution over many draws; then one round trip through the HTTP app.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import gymnasium as gym
import httpx
import numpy as np
import pytest
import torch

from exporters import export_checkpoint
from formats.leaves import obs_to_leaves
from serving import PolicyRegistry, create_app, wire
from serving.runtime import PolicyRuntime
from tests.helpers.configs import tiny_sac
from tests.helpers.envs import AsymmetricBoxEnv
from training.distributions import SquashedGaussian

LOW, HIGH = AsymmetricBoxEnv.LOW, AsymmetricBoxEnv.HIGH


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SAC policy's ONNX artifact."""
    root = tmp_path_factory.mktemp("sac_serving")
    with tiny_sac("tests.helpers.envs:AsymmetricBoxEnv").build() as algo:
        algo.train()
        checkpoint = algo.save(str(root / "checkpoint")).checkpoint.path
    return export_checkpoint(checkpoint, root / "artifact", ["onnx"])


@pytest.fixture(scope="module")
def runtime(artifact: Path) -> PolicyRuntime:
    return PolicyRuntime.from_path(artifact)


def _observations(rows: int, seed: int = 3) -> list[list[float]]:
    space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    space.seed(seed)
    return [space.sample().tolist() for _ in range(rows)]


def _leaves(observations: list[Any]) -> list[np.ndarray]:
    space = AsymmetricBoxEnv().observation_space
    per_obs = [obs_to_leaves(space, np.asarray(o, np.float32)) for o in observations]
    return [np.stack(column) for column in zip(*per_obs, strict=True)]


def _dist_inputs(mean: list[float], log_std: list[float], rows: int) -> np.ndarray:
    return np.tile(np.asarray([*mean, *log_std], np.float32), (rows, 1))


def _training_dist(dist_inputs: np.ndarray) -> SquashedGaussian:
    return SquashedGaussian(
        torch.as_tensor(dist_inputs), torch.as_tensor(LOW), torch.as_tensor(HIGH), (3,)
    )


def _in_bounds(actions: np.ndarray) -> bool:
    return bool(np.all(actions >= LOW) and np.all(actions <= HIGH))


def test_the_sample_is_trainings_transform_of_the_seeds_normal_draws(
    runtime: PolicyRuntime,
) -> None:
    """``low + (tanh(mean + std * eps) + 1) / 2 * (high - low)``, ``eps`` from the seed's stream.

    Training's rescale of a given ``u`` is ``SquashedGaussian(u, ...).deterministic()``.
    """
    rng = np.random.default_rng(0)
    dist_inputs = np.concatenate(
        [rng.normal(0, 3, (256, 3)), rng.uniform(-4, 1, (256, 3))], axis=1
    ).astype(np.float32)
    greedy = np.zeros((256, 3), np.float32)
    sampled = runtime.sample(dist_inputs, greedy, seed=5)
    eps = np.random.default_rng(5).standard_normal((256, 3), dtype=np.float32)
    u = dist_inputs[:, :3] + np.exp(dist_inputs[:, 3:]) * eps
    with torch.no_grad():
        expected = _training_dist(np.concatenate([u, np.zeros_like(u)], axis=1)).deterministic()
    np.testing.assert_allclose(sampled, expected.numpy(), rtol=0, atol=1e-6)
    assert sampled.dtype == np.float32 and sampled.shape == (256, 3)


@pytest.mark.parametrize(
    ("mean", "log_std"),
    [
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ([1.5, -0.7, 0.3], [-1.0, 0.5, -2.0]),
        ([-2.0, 4.0, 0.0], [1.0, 2.0, -20.0]),  # the module's log-std clamps: 2 and -20
    ],
    ids=["unit", "skewed", "clamps"],
)
def test_samples_follow_trainings_squashed_gaussian(
    runtime: PolicyRuntime, mean: list[float], log_std: list[float]
) -> None:
    """Many draws of the server and of training's sampler: same means, stds and quantiles."""
    rows = 20_000
    dist_inputs = _dist_inputs(mean, log_std, rows)
    served = runtime.sample(dist_inputs, np.zeros((rows, 3), np.float32), seed=1)
    generator = torch.Generator().manual_seed(1)
    trained = _training_dist(dist_inputs).sample(generator).numpy()
    scale = HIGH - LOW  # the standard error of a mean is below 0.004 of the range here
    np.testing.assert_array_less(np.abs(served.mean(0) - trained.mean(0)), 0.02 * scale)
    np.testing.assert_array_less(np.abs(served.std(0) - trained.std(0)), 0.02 * scale)
    for q in (10, 50, 90):
        gap = np.abs(np.percentile(served, q, axis=0) - np.percentile(trained, q, axis=0))
        np.testing.assert_array_less(gap, 0.03 * scale + 1e-6)
    # Training's sampler does not clip: on [-0.2, 0.9] its saturated draws land an ulp past 0.9.
    assert _in_bounds(served)


def test_samples_stay_inside_the_asymmetric_bounds_even_when_saturated(
    runtime: PolicyRuntime,
) -> None:
    """Means far past ``tanh``'s saturation and the widest std: the bounds, never past them.

    On ``[-0.2, 0.9]`` a saturated squash rescales to ``0.9 + 6e-8`` in float32; the sampler's
    clip after the rescale brings it back to ``0.9``.
    """
    rng = np.random.default_rng(2)
    rows = 4096
    dist_inputs = np.concatenate(
        [rng.uniform(-40, 40, (rows, 3)), rng.uniform(-20, 2, (rows, 3))], axis=1
    ).astype(np.float32)
    for seed in range(3):
        sampled = runtime.sample(dist_inputs, np.zeros((rows, 3), np.float32), seed)
        assert _in_bounds(sampled), seed
        assert all(runtime.action_space.contains(a) for a in sampled[:256])
        assert (sampled[:, 1] == HIGH[1]).sum() > 100 and (sampled[:, 1] == LOW[1]).sum() > 100


def test_seeded_exploration_is_reproducible_and_seeds_differ(runtime: PolicyRuntime) -> None:
    leaves = _leaves(_observations(64))
    greedy = runtime.compute(leaves)
    first = runtime.compute(leaves, explore=True, seed=7)
    again = runtime.compute(leaves, explore=True, seed=7)
    other = runtime.compute(leaves, explore=True, seed=8)
    np.testing.assert_array_equal(first.actions, again.actions)
    assert not np.allclose(first.actions, other.actions)
    assert not np.allclose(first.actions, greedy.actions)
    np.testing.assert_array_equal(first.action_dist_inputs, greedy.action_dist_inputs)
    unseeded = [runtime.compute(leaves, explore=True).actions for _ in range(2)]
    assert not np.allclose(unseeded[0], unseeded[1])
    for actions in (first.actions, other.actions, *unseeded):
        assert _in_bounds(actions)


def test_a_requests_sample_does_not_depend_on_the_requests_batched_with_it(
    runtime: PolicyRuntime,
) -> None:
    """What the Serve app's batched path relies on: one graph call, then ``sample`` per part."""
    observations = _observations(40)
    dist_inputs, greedy, _ = runtime.run_graph(_leaves(observations))
    for part, seed in ((slice(0, 5), 11), (slice(5, 6), 0), (slice(6, 40), 12)):
        combined = runtime.sample(dist_inputs[part], greedy[part], seed)
        alone = runtime.compute(_leaves(observations[part]), explore=True, seed=seed)
        np.testing.assert_allclose(combined, alone.actions, rtol=0, atol=1e-6)


def test_an_http_round_trip(runtime: PolicyRuntime, artifact: Path) -> None:
    asyncio.run(_http_round_trip(runtime, artifact))


async def _http_round_trip(runtime: PolicyRuntime, artifact: Path) -> None:
    app = create_app(PolicyRegistry.from_paths({"sac": artifact}))
    observations = _observations(16, seed=4)
    leaves = _leaves(observations)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rlserve.test") as client:
        described = (await client.get(wire.policy_path("sac"))).json()
        assert described["algorithm"] == "SAC"
        assert described["action_distribution"] == "squashed_gaussian"
        url = wire.actions_path("sac")
        body = {"observations": observations, "return_dist_inputs": True}
        reply = await client.post(url, json=body)
        assert reply.status_code == 200, reply.text
        deterministic = runtime.compute(leaves)
        np.testing.assert_allclose(reply.json()["actions"], deterministic.actions, atol=1e-6)
        np.testing.assert_allclose(
            reply.json()["action_dist_inputs"], deterministic.action_dist_inputs, atol=1e-6
        )
        seeded = {"observations": observations, "explore": True, "seed": 7}
        first = (await client.post(url, json=seeded)).json()["actions"]
        again = (await client.post(url, json=seeded)).json()["actions"]
        assert first == again
        expected = runtime.compute(leaves, explore=True, seed=7).actions
        np.testing.assert_allclose(first, expected, atol=1e-6)
        assert _in_bounds(np.asarray(first, np.float32))
        one = await client.post(
            wire.action_path("sac"),
            json={"observation": observations[0], "explore": True, "seed": 7},
        )
        assert one.status_code == 200, one.text
        np.testing.assert_allclose(one.json()["action"], expected[0], atol=1e-6)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(observations, np.float32), allow_pickle=False)
        npy = await client.post(
            url,
            content=buffer.getvalue(),
            params={"explore": "true"},
            headers={"content-type": wire.NPY, "accept": wire.NPY},
        )
        assert npy.status_code == 200, npy.text
        sampled = np.load(io.BytesIO(npy.content), allow_pickle=False)
        assert sampled.shape == (16, 3) and _in_bounds(sampled)
