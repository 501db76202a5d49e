"""Tiny deterministic environments for the tests (``tests.helpers.envs:CountingEnv`` etc.)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class CountingEnv(gym.Env[np.ndarray, np.int64]):
    """Observation = ``start + steps taken`` as a float32 array of shape ``(1,)``.

    Every step gives reward 1. The episode ends with ``terminated=True`` after
    ``episode_len`` steps (default 3), or with ``truncated=True`` after ``max_steps`` steps if
    that comes first. With ``random_start=True`` the start is drawn from the env's seeded RNG
    at reset (an integer in ``[0, 100)``); otherwise it is 0.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's own attribute

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        config = dict(env_config or {})
        self.episode_len = int(config.get("episode_len", 3))
        max_steps = config.get("max_steps")
        self.max_steps = None if max_steps is None else int(max_steps)
        self.random_start = bool(config.get("random_start", False))
        self.observation_space = gym.spaces.Box(0.0, 1000.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.start = 0
        self.steps = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.start + self.steps], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.start = int(self.np_random.integers(0, 100)) if self.random_start else 0
        self.steps = 0
        return self._obs(), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.steps += 1
        terminated = self.steps >= self.episode_len
        truncated = not terminated and self.max_steps is not None and self.steps >= self.max_steps
        return self._obs(), 1.0, terminated, truncated, {}


class StructuredEnv(gym.Env[Any, Any]):
    """Random observations from a composite space (Dict of Box, Discrete, MultiDiscrete,
    MultiBinary and a Tuple); reward is higher when the action matches the Discrete part.

    ``env_config["image"]`` swaps the space for a ``uint8`` 16x16x3 image plus a vector;
    ``env_config["continuous"]`` makes the action space a bounded Box of shape (2,).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's own attribute

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        config = dict(env_config or {})
        if config.get("image"):
            self.observation_space = gym.spaces.Dict(
                {
                    "camera": gym.spaces.Box(0, 255, shape=(16, 16, 3), dtype=np.uint8),
                    "speed": gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
                }
            )
        else:
            self.observation_space = gym.spaces.Dict(
                {
                    "position": gym.spaces.Box(-5.0, 5.0, shape=(3,), dtype=np.float32),
                    "mode": gym.spaces.Discrete(3, start=-1),
                    "gears": gym.spaces.MultiDiscrete([2, 4]),
                    "flags": gym.spaces.MultiBinary(2),
                    "pair": gym.spaces.Tuple(
                        (gym.spaces.Discrete(2), gym.spaces.Box(0.0, 1.0, shape=(1,)))
                    ),
                }
            )
        if config.get("continuous"):
            self.action_space = gym.spaces.Box(-0.5, 0.5, shape=(2,), dtype=np.float32)
        else:
            self.action_space = gym.spaces.Discrete(3, start=-1)
        self.steps = 0
        self._obs: Any = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(0, 2**31)))
        self.steps = 0
        self._obs = self.observation_space.sample()
        return self._obs, {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        assert self.action_space.contains(
            np.asarray(action, dtype=self.action_space.dtype)
            if isinstance(self.action_space, gym.spaces.Box)
            else int(action)
        ), action
        reward = 0.0
        if isinstance(self.action_space, gym.spaces.Discrete) and "mode" in self._obs:
            reward = float(int(action) == int(self._obs["mode"]))
        self.steps += 1
        self._obs = self.observation_space.sample()
        return self._obs, reward, False, self.steps >= 20, {}


class AsymmetricBoxEnv(gym.Env[np.ndarray, np.ndarray]):
    """Box observations of shape (3,) and Box actions of shape (3,) with asymmetric bounds.

    The action bounds are ``[-1, 3]``, ``[-0.2, 0.9]`` and ``[-3, -2]`` (two ranges straddling
    zero off-centre, one wholly negative), so a rescale that assumed ``[-1, 1]`` or symmetric
    bounds shows. ``[-0.2, 0.9]`` is one where ``low + 2 * ((high - low) / 2)`` rounds one
    float32 ulp above ``high``: a saturated squash lands outside unless clipped. The reward is
    highest at the action ``(2, 0.5, -2.5)``; observations are uniform in ``[-1, 1]``; episodes
    are truncated after 10 steps.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's own attribute
    LOW = np.array([-1.0, -0.2, -3.0], np.float32)
    HIGH = np.array([3.0, 0.9, -2.0], np.float32)
    TARGET = np.array([2.0, 0.5, -2.5], np.float32)

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Box(self.LOW, self.HIGH, dtype=np.float32)
        self.steps = 0

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1.0, 1.0, 3).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.steps = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.steps += 1
        reward = -float(np.sum((np.asarray(action) - self.TARGET) ** 2))
        return self._obs(), reward, False, self.steps >= 10, {}
