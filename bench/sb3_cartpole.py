"""Stable-Baselines3 yardstick: PPO and DQN on CartPole-v1 with rl-zoo hyper-parameters.

Runs in a separate virtualenv that has stable-baselines3 (never a project dependency); called
by ``bench/train_cartpole.py --sb3-python PATH``. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

TARGET = 450.0


class StopAt(BaseCallback):  # type: ignore[misc]
    """Stops once the mean of the last 100 training episodes reaches the target."""

    def __init__(self, budget_s: float) -> None:
        super().__init__()
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.reached: dict[str, Any] | None = None

    def _on_step(self) -> bool:
        buffer = self.model.ep_info_buffer
        if buffer and len(buffer) >= 10 and np.mean([e["r"] for e in buffer]) >= TARGET:
            self.reached = {
                "wall_s": round(time.perf_counter() - self.start, 2),
                "env_steps": int(self.num_timesteps),
            }
            return False
        return time.perf_counter() - self.start < self.budget_s


def linear(start: float) -> Any:
    return lambda progress: progress * start


def run(algo: str, seed: int, budget_s: float) -> dict[str, Any]:
    torch.set_num_threads(1)
    callback = StopAt(budget_s)
    if algo == "PPO":
        env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
        model: Any = PPO(
            "MlpPolicy",
            env,
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=linear(1e-3),
            clip_range=linear(0.2),
            seed=seed,
            verbose=0,
        )
        model.learn(100_000, callback=callback)
    else:
        model = DQN(
            "MlpPolicy",
            "CartPole-v1",
            learning_rate=2.3e-3,
            batch_size=64,
            buffer_size=100_000,
            learning_starts=1000,
            gamma=0.99,
            target_update_interval=10,
            train_freq=256,
            gradient_steps=128,
            exploration_fraction=0.16,
            exploration_final_eps=0.04,
            policy_kwargs={"net_arch": [256, 256]},
            seed=seed,
            verbose=0,
        )
        model.learn(100_000, callback=callback)
    elapsed = time.perf_counter() - callback.start
    return {
        "reached_450": callback.reached,
        "env_steps": int(model.num_timesteps),
        "env_steps_per_s": round(model.num_timesteps / elapsed, 1),
    }


if __name__ == "__main__":
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 120.0
    algos = sys.argv[3].split(",") if len(sys.argv) > 3 else ["PPO"]
    print(json.dumps({"sb3": {a: run(a, seed, budget) for a in algos}}))
