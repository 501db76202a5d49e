"""Example environments for trying rlserve's features (importable by name from any process).

``SlowCartPole`` is CartPole-v1 behind a simulated latency: a simulator that waits on I/O, a
network or its own physics for ``step_latency_s`` per step while using no CPU. It is the
environment of ``bench/slow_env.py``, for comparing ``gym_env_vectorize_mode="ASYNC"`` and
``remote_worker_envs=True`` against stepping envs one after another::

    PPOConfig().environment("training.example_envs:SlowCartPole",
                            env_config={"step_latency_s": 0.005})
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym

__all__ = ["SlowCartPole"]


class SlowCartPole(gym.Wrapper[Any, Any, Any, Any]):
    """CartPole-v1 that takes ``env_config["step_latency_s"]`` (default 5 ms) per step and reset.

    Args:
        env_config: ``{"step_latency_s": float}``.
    """

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.step_latency_s = float((env_config or {}).get("step_latency_s", 0.005))

    def reset(self, **kwargs: Any) -> Any:
        """Reset after the latency."""
        time.sleep(self.step_latency_s)
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        """Step after the latency."""
        time.sleep(self.step_latency_s)
        return self.env.step(action)
