"""Example environments for trying rlserve's features (importable by name from any process).

``SlowCartPole`` is CartPole-v1 behind a simulated latency: a simulator that waits on I/O, a
network or its own physics for ``step_latency_s`` per step while using no CPU. It is the
environment of ``bench/slow_env.py``, for comparing ``gym_env_vectorize_mode="ASYNC"`` and
``remote_worker_envs=True`` against stepping envs one after another::

    PPOConfig().environment("training.example_envs:SlowCartPole",
                            env_config={"step_latency_s": 0.005})

``StatelessCartPole`` is CartPole-v1 without the two velocities in its observation (the cart's
position and the pole's angle only): a memory task, solvable only by a policy that infers the
velocities from what it saw before (``model={"use_lstm": True}``).

``SimpleSpread`` is MPE2's ``simple_spread`` (cooperative navigation: N agents cover N landmarks
without colliding) as a :class:`~training.multi_agent.MultiAgentEnv`; it needs the optional
``pettingzoo`` extra (``pip install rlserve[pettingzoo]``)::

    PPOConfig().environment("training.example_envs:SimpleSpread", env_config={"N": 2})
    .multi_agent(policies={"shared"})
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from training.multi_agent.pettingzoo import ParallelPettingZooEnv

__all__ = ["SimpleSpread", "SlowCartPole", "StatelessCartPole", "policy_per_agent"]


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


class StatelessCartPole(gym.ObservationWrapper[Any, Any, Any]):
    """CartPole-v1 observing ``[cart position, pole angle]`` only (no velocities).

    Args:
        env_config: Unused (the env takes no settings).
    """

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        super().__init__(gym.make("CartPole-v1"))
        full = self.env.observation_space
        assert isinstance(full, gym.spaces.Box)
        keep = [0, 2]
        self.observation_space = gym.spaces.Box(full.low[keep], full.high[keep], dtype=np.float32)

    def observation(self, observation: Any) -> Any:
        """Drop the cart's and the pole's velocities."""
        return np.asarray(observation, dtype=np.float32)[[0, 2]]


class SimpleSpread(ParallelPettingZooEnv):
    """MPE2's ``simple_spread`` parallel env, discrete actions (``env_config``: its arguments).

    Args:
        env_config: Keyword arguments of ``mpe2.simple_spread_v3.parallel_env`` (``N``,
            ``max_cycles``, ``local_ratio``); ``continuous_actions`` defaults to False.

    Raises:
        ImportError: Without the ``pettingzoo`` extra, saying how to install it.
    """

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        try:
            from mpe2 import simple_spread_v3
        except ImportError:
            raise ImportError(
                "SimpleSpread needs MPE2 and PettingZoo: pip install 'rlserve[pettingzoo]'"
            ) from None
        settings = {"continuous_actions": False, **(env_config or {})}
        super().__init__(simple_spread_v3.parallel_env(**settings))


def policy_per_agent(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    """A policy mapping: agent ``i`` plays policy ``"p<i>"`` (``make_multi_agent``'s agents)."""
    return f"p{agent_id}"
