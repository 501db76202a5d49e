"""Observation preprocessing, the MeanStdFilter, and policy access on composite spaces."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from formats.leaves import obs_to_leaves
from training import PPOConfig
from training.algorithms.ppo.module import PPOModule
from training.preprocessing import ObservationPreprocessor, RunningStat


def structured(**env_config: Any) -> PPOConfig:
    return (
        PPOConfig()
        .environment("tests.helpers.envs:StructuredEnv", env_config=env_config)
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=32)
        .training(train_batch_size=64, minibatch_size=32, num_epochs=1)
        .debugging(seed=0)
    )


def test_preprocessor_one_hots_and_flattens_in_leaf_order() -> None:
    space = gym.spaces.Dict(
        {
            "a": gym.spaces.Discrete(3, start=-1),
            "b": gym.spaces.MultiDiscrete([2, 3]),
            "c": gym.spaces.Box(-1, 1, shape=(2, 2)),
            "d": gym.spaces.MultiBinary(2),
        }
    )
    pre = ObservationPreprocessor(space)
    assert pre.flat_dim == 3 + 5 + 4 + 2
    obs = {
        "a": np.int64(0),
        "b": np.array([1, 2]),
        "c": np.arange(4, dtype=np.float32).reshape(2, 2),
        "d": np.array([1, 0], np.int8),
    }
    leaves = [torch.as_tensor(np.asarray(x)[None]) for x in obs_to_leaves(space, obs)]
    flat = pre(leaves).flat[0].numpy()
    # a one-hot | b one-hots | c flattened | d
    expected = [0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 2, 3, 1, 0]
    np.testing.assert_array_equal(flat, expected)


def test_running_stat_merge_equals_statistics_of_all_data() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(500, 4))
    whole, parts = RunningStat(4), RunningStat(4)
    whole.push(data)
    for chunk in np.array_split(data, 7):
        piece = RunningStat(4)
        piece.push(chunk)
        parts.merge(RunningStat.from_json(piece.to_json()))
    np.testing.assert_allclose(parts.mean, data.mean(axis=0))
    np.testing.assert_allclose(parts.std, data.std(axis=0, ddof=1))
    np.testing.assert_allclose(whole.mean, parts.mean)
    with pytest.raises(ValueError, match="filter state"):
        RunningStat.from_json({"count": 1})


def test_ppo_trains_on_a_composite_observation_space_with_a_filter() -> None:
    with structured().env_runners(observation_filter="MeanStdFilter").build() as algo:
        algo.train()
        policy = algo.get_policy()
        space = algo.observation_space
        space.seed(1)
        batch = [space.sample() for _ in range(16)]
        actions = algo.compute_actions(batch, explore=False)
        singles = [algo.compute_single_action(o, explore=False) for o in batch]
        assert actions.tolist() == singles
        assert all(a in (-1, 0, 1) for a in singles)
        features = policy.preprocess(batch)
        assert features.shape == (16, 3 + 3 + 6 + 2 + 3)
        # The filter statistics are in use: preprocessing differs from the raw features.
        pre = policy.model.preprocessor
        raw = pre(
            [
                torch.as_tensor(np.stack(c))
                for c in zip(*[obs_to_leaves(space, o) for o in batch], strict=True)
            ]
        )
        assert not np.allclose(features, raw.flat.numpy())
        dist = policy.action_distribution(batch)
        assert dist.inputs.shape == (16, 3)
        assert policy.value_function(batch).shape == (16,)
        with pytest.raises(AttributeError, match="no Q-values"):
            policy.q_values(batch)


def test_ppo_trains_on_image_observations_through_a_cnn() -> None:
    with structured(image=True).build() as algo:
        algo.train()
        module = algo.get_policy().model
        assert isinstance(module, PPOModule)
        assert len(module.pi_encoder.cnns) == 1
        obs = algo.observation_space.sample()
        assert algo.compute_single_action(obs, explore=False) in (-1, 0, 1)


def test_box_actions_are_clipped_into_the_action_space() -> None:
    with structured(continuous=True).build() as algo:
        algo.train()
        # Push the Gaussian mean far outside the bounds, then ask for actions.
        module = algo.module
        assert isinstance(module, PPOModule)
        with torch.no_grad():
            module.pi_head.bias.fill_(10.0)
        obs = algo.observation_space.sample()
        deterministic = algo.compute_single_action(obs, explore=False)
        np.testing.assert_array_equal(deterministic, [0.5, 0.5])
        assert deterministic.dtype == np.float32
        for _ in range(10):
            sampled = algo.compute_single_action(obs, explore=True)
            assert algo.action_space.contains(sampled)


def test_single_action_rejects_a_malformed_observation() -> None:
    config = PPOConfig().environment("CartPole-v1").debugging(seed=0)
    with config.build() as algo, pytest.raises(ValueError, match="expected shape"):
        algo.compute_single_action(np.zeros(3, np.float32))
