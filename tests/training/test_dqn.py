"""DQN pieces: n-step transitions, replay buffer, epsilon schedule, a tiny real training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.configs import tiny_dqn
from training import DQN, Algorithm, ConfigError, DQNConfig
from training import metrics as m
from training.algorithms.dqn.module import linear_epsilon
from training.replay_buffers import ReplayBuffer, n_step_transitions


def test_n_step_transitions_stop_at_episode_ends_and_bootstrap_truncation() -> None:
    # One env, 5 rows: steps 0,1 then a terminated step 2; row 3 is the autoreset row; row 4 new.
    obs = [np.arange(5, dtype=np.float32).reshape(5, 1, 1)]
    after = [np.array([[9.0]], dtype=np.float32)]
    actions = np.zeros((5, 1), np.int64)
    rewards = np.array([[1.0], [2.0], [4.0], [0.0], [8.0]], np.float32)
    terminated = np.array([[False], [False], [True], [False], [False]])
    truncated = np.zeros((5, 1), bool)
    valid = np.array([[True], [True], [True], [False], [True]])
    batch = n_step_transitions(obs, after, actions, rewards, terminated, truncated, valid, 0.5, 2)
    np.testing.assert_allclose(batch.rewards, [1 + 0.5 * 2, 2 + 0.5 * 4, 4, 8])
    np.testing.assert_allclose(batch.discounts, [0.25, 0.25, 0.5, 0.5])
    np.testing.assert_array_equal(batch.terminated, [False, True, True, False])
    # Next observations: row t+k (the final observation after a done step), then `after`.
    np.testing.assert_array_equal(batch.next_obs[0].ravel(), [2, 3, 3, 9])
    np.testing.assert_array_equal(batch.obs[0].ravel(), [0, 1, 2, 4])


def test_n_step_truncation_keeps_the_bootstrap() -> None:
    obs = [np.arange(3, dtype=np.float32).reshape(3, 1, 1)]
    batch = n_step_transitions(
        obs,
        [np.array([[7.0]], np.float32)],
        np.zeros((3, 1), np.int64),
        np.ones((3, 1), np.float32),
        np.zeros((3, 1), bool),
        np.array([[False], [True], [False]]),
        np.array([[True], [True], [False]]),
        0.9,
        3,
    )
    assert not batch.terminated.any()  # truncation bootstraps from the final observation
    np.testing.assert_allclose(batch.rewards, [1.9, 1.0])
    np.testing.assert_array_equal(batch.next_obs[0].ravel(), [2, 2])


def test_replay_buffer_overwrites_the_oldest_and_samples_stored_rows() -> None:
    buffer = ReplayBuffer(capacity=4, seed=0)
    for start in (0, 3):
        rows = np.arange(start, start + 3)
        obs = [rows.astype(np.float32).reshape(-1, 1)]
        batch = n_step_transitions(
            [o.reshape(3, 1, 1) for o in obs],
            [np.zeros((1, 1), np.float32)],
            rows.reshape(3, 1),
            np.ones((3, 1), np.float32),
            np.zeros((3, 1), bool),
            np.zeros((3, 1), bool),
            np.ones((3, 1), bool),
            0.99,
            1,
        )
        buffer.add(batch)
    assert buffer.size == 4
    sample = buffer.sample(200)
    assert set(sample.actions.tolist()) == {2, 3, 4, 5}  # 0 and 1 were overwritten
    np.testing.assert_array_equal(sample.obs[0].ravel(), sample.actions)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(2).sample(1)


def test_linear_epsilon_schedule() -> None:
    assert linear_epsilon(0, 1.0, 0.1, 100) == 1.0
    assert linear_epsilon(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_epsilon(1000, 1.0, 0.1, 100) == pytest.approx(0.1)


def test_dqn_rejects_continuous_actions() -> None:
    with pytest.raises(ValueError, match="Discrete action space"):
        DQNConfig().environment("Pendulum-v1").build()


def test_dqn_config_validation() -> None:
    with pytest.raises(ConfigError, match="n_step"):
        DQNConfig().training(n_step=0)
    with pytest.raises(ConfigError, match="td_error_loss_fn"):
        DQNConfig().training(td_error_loss_fn="l1")


def test_tiny_dqn_trains_and_round_trips(tmp_path: Path) -> None:
    with tiny_dqn().build() as algo:
        assert isinstance(algo, DQN)
        before = algo.get_weights()
        result = algo.train()
        learner = result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]
        assert learner["num_updates"] > 0
        assert np.isfinite(learner["qf_loss"])
        assert 0.0 < learner["epsilon"] < 1.0
        after = algo.get_weights()
        assert any(not np.array_equal(before[k], after[k]) for k in before)
        obs = np.array([0.01, -0.02, 0.03, 0.04], np.float32)
        q = algo.get_policy().q_values([obs])
        assert q.shape == (1, 2)
        path = algo.save(str(tmp_path / "ckpt")).checkpoint.path
        target = {k: v.clone() for k, v in algo.learner.target.state_dict().items()}
    with Algorithm.from_checkpoint(path) as restored:
        assert isinstance(restored, DQN)
        for key, value in restored.learner.target.state_dict().items():
            assert np.array_equal(value.numpy(), target[key].numpy())
        for key, value in restored.get_weights().items():
            np.testing.assert_array_equal(value, after[key])
        np.testing.assert_array_equal(restored.get_policy().q_values([obs]), q)
        assert restored.compute_single_action(obs, explore=False) == int(np.argmax(q[0]))
        restored.train()
        assert restored.iteration == 2


def test_exploring_actions_follow_the_current_epsilon() -> None:
    config = tiny_dqn().training(epsilon_timesteps=100, epsilon_final=0.0)
    with config.build() as algo:
        algo.train()  # 64+ env steps: epsilon is well below 1 but above 0
        policy = algo.get_policy()
        assert policy.timestep == algo.counters[m.NUM_ENV_STEPS_SAMPLED_LIFETIME]
        policy.timestep = 10_000  # past the schedule: epsilon 0, exploring == greedy
        obs = [algo.observation_space.sample() for _ in range(64)]
        np.testing.assert_array_equal(
            policy.compute_actions(obs, explore=True), policy.compute_actions(obs, explore=False)
        )
