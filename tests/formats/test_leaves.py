"""formats.leaves: observations <-> flat leaf arrays."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from formats.leaves import flatten_leaves, leaves_to_obs, obs_to_leaves
from tests.helpers.spaces import nested_dict_space


def test_leaf_order_and_paths() -> None:
    names = [name for name, _ in flatten_leaves(nested_dict_space())]
    assert names == ["mode", "position", "sensors.0", "sensors.1.a", "sensors.1.z"]
    box = spaces.Box(0.0, 1.0, shape=(2,))
    assert flatten_leaves(box) == [("obs", box)]
    clash = spaces.Dict({"a.b": spaces.Discrete(2), "a": spaces.Dict({"b": spaces.Discrete(2)})})
    with pytest.raises(ValueError, match=r"same path 'a\.b'"):
        flatten_leaves(clash)


def test_single_observation_round_trip() -> None:
    space = nested_dict_space()
    space.seed(0)
    obs = space.sample()
    leaves = obs_to_leaves(space, obs)
    assert [leaf.shape for leaf in leaves] == [(), (2,), (4, 4, 3), (2,), ()]
    np.testing.assert_array_equal(leaves[2], obs["sensors"][0])
    rebuilt = leaves_to_obs(space, leaves)
    assert list(rebuilt) == list(space.spaces)
    assert isinstance(rebuilt["sensors"], tuple)
    assert space.contains(rebuilt)
    np.testing.assert_array_equal(rebuilt["sensors"][1]["a"], obs["sensors"][1]["a"])
    assert int(rebuilt["mode"]) == int(obs["mode"])


def test_structure_mismatches_raise_clear_errors() -> None:
    space = nested_dict_space()
    obs = space.sample()
    del obs["position"]
    with pytest.raises(ValueError, match=r"missing \['position'\]"):
        obs_to_leaves(space, obs)
    obs = space.sample()
    obs["sensors"] = obs["sensors"][:1]
    with pytest.raises(ValueError, match="'sensors': expected a tuple of length 2, got length 1"):
        obs_to_leaves(space, obs)
    obs = space.sample()
    obs["position"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"'position': expected shape \(2,\), got \(3,\)"):
        obs_to_leaves(space, obs)
    with pytest.raises(ValueError, match="expected 5 leaves"):
        leaves_to_obs(space, [np.zeros(2)])


class _RoverEnv(gym.Env[dict[str, Any], np.int64]):
    """A tiny env with a Dict observation holding a Box, a Tuple and a Discrete."""

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {
                "position": spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32),
                "sensors": spaces.Tuple(
                    (spaces.Box(0, 255, shape=(3,), dtype=np.uint8), spaces.Discrete(4))
                ),
            }
        )
        self.action_space = spaces.Discrete(2)
        self._t = 0

    def _obs(self) -> dict[str, Any]:
        pos = np.array([self._t, -self._t], dtype=np.float32)
        return {"position": pos, "sensors": (np.full(3, self._t, np.uint8), self._t % 4)}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._t = int(self.np_random.integers(0, 5))
        return self._obs(), {}

    def step(self, action: np.int64) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        self._t += int(action) + 1
        return self._obs(), 1.0, self._t > 8, False, {}


def test_batched_leaves_from_a_real_vector_env() -> None:
    envs = gym.vector.SyncVectorEnv([_RoverEnv for _ in range(3)])
    try:
        obs, _ = envs.reset(seed=[1, 2, 3])
        obs, *_ = envs.step(np.array([0, 1, 1]))
        space = envs.single_observation_space
        names = [name for name, _ in flatten_leaves(space)]
        assert names == ["position", "sensors.0", "sensors.1"]
        leaves = obs_to_leaves(space, obs, batched=True)
        assert [leaf.shape for leaf in leaves] == [(3, 2), (3, 3), (3,)]
        assert leaves[1].dtype == np.uint8
        for i in range(3):
            t = int(leaves[0][i, 0])
            np.testing.assert_array_equal(leaves[0][i], [t, -t])
            np.testing.assert_array_equal(leaves[1][i], [t] * 3)
            assert leaves[2][i] == t % 4
        rebuilt = leaves_to_obs(space, leaves, batched=True)
        np.testing.assert_array_equal(rebuilt["sensors"][0], obs["sensors"][0])
        with pytest.raises(ValueError, match="different batch sizes"):
            obs_to_leaves(space, {**obs, "position": obs["position"][:2]}, batched=True)
        with pytest.raises(ValueError, match=r"expected shape \(2,\), got \(3, 2\)"):
            obs_to_leaves(space, obs, batched=False)
    finally:
        envs.close()
