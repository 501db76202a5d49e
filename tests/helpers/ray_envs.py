"""Envs for the Ray integration tests (importable by runner actors from ``tests.helpers``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np


class FlakyCartPole(gym.Wrapper[Any, Any, Any, Any]):
    """CartPole whose ``step`` raises once, in whichever runner first claims a marker file.

    ``env_config["fail_marker"]`` names a file; the first env that manages to delete it raises
    ``RuntimeError`` from that step. Without the file, it behaves like CartPole-v1 (or like
    ``env_config["env"]``, e.g. ``"Pendulum-v1"`` for continuous actions).
    """

    def __init__(self, env_config: dict[str, Any]) -> None:
        super().__init__(gym.make(env_config.get("env", "CartPole-v1")))
        self.marker = Path(env_config["fail_marker"])
        self.steps = 0
        self.fail_after = int(env_config.get("fail_after", 5))

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.steps >= self.fail_after and self.marker.exists():
            try:
                os.remove(self.marker)
            except FileNotFoundError:
                return self.env.step(action)
            raise RuntimeError("injected env failure")
        return self.env.step(action)


class HangingCartPole(gym.Wrapper[Any, Any, Any, Any]):
    """CartPole that sleeps forever once a marker file exists (a hung runner)."""

    def __init__(self, env_config: dict[str, Any]) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.marker = Path(env_config["hang_marker"])

    def step(self, action: Any) -> Any:
        if self.marker.exists():
            import time

            time.sleep(3600)
        return self.env.step(action)


def random_obs(space: gym.Space[Any], n: int, seed: int = 0) -> list[Any]:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


__all__ = ["FlakyCartPole", "HangingCartPole", "np", "random_obs"]
