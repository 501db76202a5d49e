"""Serving an IMPALA artifact: the same wire answers as the checkpoint, seeded exploration.

IMPALA's actor-critic is PPO's, so its artifact is served by the same runtime; this proves it
end to end for the shared tiny IMPALA CartPole policy (``tests.helpers.policies``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import gymnasium as gym
import httpx
import numpy as np
import torch

from serving import PolicyRegistry, create_app, wire
from tests.helpers.policies import TinyPolicies
from training import Algorithm


def test_an_http_round_trip_answers_as_the_checkpoint(tiny_policies: TinyPolicies) -> None:
    checkpoint = tiny_policies.checkpoint("impala")
    artifact = tiny_policies.artifact("impala", ["onnx"])
    asyncio.run(_round_trip(checkpoint, artifact))


async def _round_trip(checkpoint: Path, artifact: Path) -> None:
    space = gym.spaces.Box(-0.4, 0.4, shape=(4,), dtype=np.float32)  # inside CartPole's bounds
    space.seed(5)
    observations = [space.sample() for _ in range(64)]
    with Algorithm.from_checkpoint(checkpoint) as algo:
        expected = [int(algo.compute_single_action(o, explore=False)) for o in observations]
        with torch.no_grad():
            logits = algo.get_policy().model.forward_inference(
                [torch.as_tensor(np.stack(observations[:1]))]
            )["action_dist_inputs"][0]
    app = create_app(PolicyRegistry.from_paths({"impala": artifact}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rlserve.test") as client:
        described = (await client.get(wire.policy_path("impala"))).json()
        assert described["algorithm"] == "IMPALA"
        assert described["action_distribution"] == "categorical"
        url = wire.actions_path("impala")
        body = {"observations": [o.tolist() for o in observations]}
        reply = await client.post(url, json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["actions"] == expected
        # Seeded exploration: reproducible, and distributed as training's categorical.
        many = {"observations": [observations[0].tolist()] * 4000, "explore": True, "seed": 3}
        first = (await client.post(url, json=many)).json()["actions"]
        assert first == (await client.post(url, json=many)).json()["actions"]
        frequency = np.bincount(first, minlength=2) / len(first)
        np.testing.assert_allclose(frequency, torch.softmax(logits, -1).numpy(), atol=0.04)
