"""EnvRunner: gymnasium 1.x next-step autoreset, episode bookkeeping, seeding, GAE, traces."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.configs import tiny_ppo
from tests.helpers.envs import CountingEnv
from training import PPOConfig
from training.algorithms.ppo.learner import compute_gae
from training.env_runner import EnvRunner, Fragment
from training.traces import read_traces

MakeRunner = Callable[..., EnvRunner]
SHORT: dict[str, Any] = {"rollout_fragment_length": 8, "train_batch_size": 16, "minibatch_size": 8}
"""Two CountingEnvs per runner, 8-step fragments."""


@pytest.fixture
def make_runner() -> Iterator[MakeRunner]:
    runners: list[EnvRunner] = []

    def make(config: PPOConfig, runner_index: int = 0) -> EnvRunner:
        runner = EnvRunner(config, runner_index)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


def _obs(fragment: Fragment) -> np.ndarray:
    """The (T, N) counter observations of a CountingEnv fragment."""
    (leaf,) = fragment.obs
    assert leaf.shape[2:] == (1,)
    return leaf[:, :, 0]


TERMINATING = pytest.param({}, id="terminated")
TRUNCATING = pytest.param({"max_steps": 2}, id="truncated")


# ----------------------------------------------------------------- autoreset rows
@pytest.mark.parametrize("env_config", [TERMINATING, TRUNCATING])
def test_row_after_episode_end_is_invalid_with_zero_reward(
    make_runner: MakeRunner, env_config: dict[str, Any]
) -> None:
    runner = make_runner(tiny_ppo(CountingEnv, env_config=env_config, **SHORT))
    fragment = runner.sample(10)
    done = fragment.terminated | fragment.truncated
    steps, n = fragment.rewards.shape
    assert (steps, n) == (10, 2)
    assert fragment.valid[0].all()
    for t in range(steps):
        for j in range(n):
            after_done = t > 0 and bool(done[t - 1, j]) and bool(fragment.valid[t - 1, j])
            # A row is invalid exactly when it follows the step that ended an episode.
            assert bool(fragment.valid[t, j]) is not after_done, (t, j)
            if after_done:
                assert fragment.rewards[t, j] == 0.0
                assert not done[t, j]
            else:
                assert fragment.rewards[t, j] == 1.0
    # Exact layout: episodes of L steps, each followed by one autoreset row.
    length = int(env_config.get("max_steps", 3))
    expected_valid = np.array([(t % (length + 1)) != length for t in range(steps)])
    np.testing.assert_array_equal(fragment.valid, np.stack([expected_valid] * n, axis=1))
    expected_done = np.array([(t % (length + 1)) == length - 1 for t in range(steps)])
    ended = fragment.truncated if "max_steps" in env_config else fragment.terminated
    other = fragment.terminated if "max_steps" in env_config else fragment.truncated
    np.testing.assert_array_equal(ended, np.stack([expected_done] * n, axis=1))
    assert not other.any()


@pytest.mark.parametrize(
    "env_config",
    [
        pytest.param({"random_start": True}, id="terminated"),
        pytest.param({"random_start": True, "max_steps": 2}, id="truncated"),
    ],
)
def test_no_transition_crosses_an_episode_boundary(
    make_runner: MakeRunner, env_config: dict[str, Any]
) -> None:
    runner = make_runner(tiny_ppo(CountingEnv, env_config=env_config, **SHORT))
    for _ in range(3):  # also across fragment boundaries
        fragment = runner.sample(9)
        obs = _obs(fragment)
        (next_obs,) = fragment.next_obs
        following = np.concatenate([obs[1:], next_obs[None, :, 0]], axis=0)
        done = fragment.terminated | fragment.truncated
        checked = 0
        for t, j in zip(*np.nonzero(fragment.valid), strict=True):
            if not done[t, j]:
                # The next row continues the same episode.
                assert following[t, j] == obs[t, j] + 1, (t, j)
                checked += 1
            elif fragment.truncated[t, j]:
                # The next row holds the final observation, which GAE bootstraps from.
                assert following[t, j] == obs[t, j] + 1, (t, j)
        assert checked > 0


def test_episode_returns_and_lengths(make_runner: MakeRunner) -> None:
    runner = make_runner(tiny_ppo(CountingEnv, **SHORT))
    first = runner.sample(10)
    assert first.episode_returns == [3.0] * 4
    assert first.episode_lengths == [3] * 4
    # Rows 8-9 hold the first two steps of the next episodes; it ends in the next fragment
    # and still counts all three steps.
    second = runner.sample(2)
    np.testing.assert_array_equal(_obs(second)[0], first.next_obs[0][:, 0])
    np.testing.assert_array_equal(_obs(second)[0], [2.0, 2.0])
    assert second.terminated[0].all()
    assert second.episode_returns == [3.0, 3.0]
    assert second.episode_lengths == [3, 3]


def test_truncated_episode_lengths(make_runner: MakeRunner) -> None:
    runner = make_runner(tiny_ppo(CountingEnv, env_config={"max_steps": 2}, **SHORT))
    fragment = runner.sample(9)
    assert fragment.episode_lengths == [2] * 6
    assert fragment.episode_returns == [2.0] * 6


def test_autoreset_row_carries_over_to_next_fragment(make_runner: MakeRunner) -> None:
    runner = make_runner(tiny_ppo(CountingEnv, **SHORT))
    first = runner.sample(3)
    assert first.terminated[2].all()
    assert first.valid.all()
    second = runner.sample(2)
    assert not second.valid[0].any()
    assert (second.rewards[0] == 0.0).all()
    np.testing.assert_array_equal(_obs(second)[0], [3.0, 3.0])  # the final observation
    np.testing.assert_array_equal(_obs(second)[1], [0.0, 0.0])  # the reset observation
    assert second.valid[1].all()
    assert second.episode_returns == []


def test_num_env_steps_counts_valid_rows_only(make_runner: MakeRunner) -> None:
    runner = make_runner(tiny_ppo(CountingEnv, **SHORT))
    fragment = runner.sample(10)
    assert fragment.rewards.size == 20
    assert fragment.num_env_steps == int(fragment.valid.sum()) == 16
    assert fragment.actions.shape[:2] == (10, 2)
    assert fragment.extras["action_logp"].shape == (10, 2)


def test_default_fragment_length_comes_from_config(make_runner: MakeRunner) -> None:
    runner = make_runner(tiny_ppo(CountingEnv, **SHORT))
    assert runner.sample().rewards.shape == (8, 2)


# ----------------------------------------------------------------- GAE
def test_compute_gae_truncated_bootstraps_terminated_does_not() -> None:
    gamma, lam = 0.9, 0.8
    rewards = np.ones((3, 2), dtype=np.float32)
    values = np.full((3, 2), 0.5, dtype=np.float32)
    next_values = np.array([[0.5, 0.5], [2.0, 2.0], [0.5, 0.5]], dtype=np.float32)
    terminated = np.zeros((3, 2), dtype=bool)
    truncated = np.zeros((3, 2), dtype=bool)
    truncated[1, 0] = True  # column 0: time limit at t=1 -> bootstrap from next_values[1]
    terminated[1, 1] = True  # column 1: true end at t=1 -> no bootstrap
    adv = compute_gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    # t=2: 1 + 0.9*0.5 - 0.5 = 0.95 in both columns (a new episode after t=1).
    # column 0, t=1: 1 + 0.9*2.0 - 0.5 = 2.3; t=0: 0.95 + 0.9*0.8*2.3 = 2.606
    # column 1, t=1: 1 - 0.5 = 0.5;           t=0: 0.95 + 0.9*0.8*0.5 = 1.31
    expected = np.array([[2.606, 1.31], [2.3, 0.5], [0.95, 0.95]])
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    assert adv.shape == (3, 2)
    assert adv.dtype == np.float32


def test_compute_gae_without_episode_end_is_the_lambda_return() -> None:
    gamma, lam = 0.9, 0.8
    rewards = np.array([[1.0], [0.0], [2.0]], dtype=np.float32)
    values = np.array([[0.1], [0.2], [0.3]], dtype=np.float32)
    next_values = np.array([[0.2], [0.3], [0.4]], dtype=np.float32)
    no = np.zeros((3, 1), dtype=bool)
    adv = compute_gae(rewards, values, next_values, no, no, gamma, lam)
    deltas = rewards[:, 0] + gamma * next_values[:, 0] - values[:, 0]
    expected = [
        deltas[0] + gamma * lam * deltas[1] + (gamma * lam) ** 2 * deltas[2],
        deltas[1] + gamma * lam * deltas[2],
        deltas[2],
    ]
    np.testing.assert_allclose(adv[:, 0], expected, rtol=1e-6)


# ----------------------------------------------------------------- seeding
def _assert_same(a: Fragment, b: Fragment) -> None:
    for x, y in zip(a.obs, b.obs, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.next_obs, b.next_obs, strict=True):
        np.testing.assert_array_equal(x, y)
    for name in ("actions", "rewards", "terminated", "truncated", "valid"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.extras.keys() == b.extras.keys()
    for key in a.extras:
        np.testing.assert_array_equal(a.extras[key], b.extras[key])
    assert a.episode_returns == b.episode_returns
    assert a.episode_lengths == b.episode_lengths


def test_same_seed_same_fragments(make_runner: MakeRunner) -> None:
    config = tiny_ppo(CountingEnv, env_config={"random_start": True}, **SHORT)
    first = make_runner(config, 1)
    second = make_runner(config.copy(), 1)
    second.set_weights(first.get_weights())
    for _ in range(2):
        _assert_same(first.sample(12), second.sample(12))


def test_runner_index_and_seed_change_the_fragments(make_runner: MakeRunner) -> None:
    config = tiny_ppo(CountingEnv, env_config={"random_start": True}, **SHORT)
    base = make_runner(config, 1)
    other_index = make_runner(config, 2)
    other_seed = make_runner(config.copy().debugging(seed=1), 1)
    weights = base.get_weights()
    other_index.set_weights(weights)
    other_seed.set_weights(weights)
    reference = base.sample(12)
    for runner in (other_index, other_seed):
        fragment = runner.sample(12)
        # Different env seeds: different random starts ...
        assert not np.array_equal(_obs(fragment)[0], _obs(reference)[0])
        # ... and a different exploration generator: different sampled actions.
        assert not np.array_equal(fragment.actions, reference.actions)
    # The sub-envs of one runner are seeded apart from each other too.
    assert _obs(reference)[0, 0] != _obs(reference)[0, 1]


# ----------------------------------------------------------------- episode traces
@pytest.mark.parametrize("env_config", [TERMINATING, TRUNCATING])
def test_episode_traces(
    make_runner: MakeRunner, tmp_path: Path, env_config: dict[str, Any]
) -> None:
    out = tmp_path / "traces"
    runner = make_runner(tiny_ppo(CountingEnv, env_config=env_config, **SHORT, output=str(out)))
    fragment = runner.sample(10)
    runner.stop()
    files = sorted(out.glob("output-*_worker-0_0.json"))
    assert len(files) == 1, sorted(p.name for p in out.iterdir())
    episodes = read_traces(out)
    length = int(env_config.get("max_steps", 3))
    per_env = 10 // (length + 1)
    assert len(episodes) == len(fragment.episode_returns) == per_env * 2
    truncating = "max_steps" in env_config
    for k, episode in enumerate(episodes):
        (obs_leaf,) = episode["obs"]
        assert len(obs_leaf) == length
        for key in ("actions", "rewards", "terminated", "truncated"):
            assert len(episode[key]) == length, key
        assert obs_leaf == [[float(i)] for i in range(length)]
        assert episode["rewards"] == [1.0] * length
        ends = [False] * (length - 1) + [True]
        assert episode["terminated"] == ([False] * length if truncating else ends)
        assert episode["truncated"] == (ends if truncating else [False] * length)
        assert episode["return"] == float(length)
        assert episode["length"] == length
        # Episodes are written in the order they end: both sub-envs end on the same step.
        env_index, start = k % 2, (k // 2) * (length + 1)
        expected_actions = fragment.actions[start : start + length, env_index].tolist()
        assert episode["actions"] == expected_actions


def test_unfinished_episodes_are_not_traced(make_runner: MakeRunner, tmp_path: Path) -> None:
    out = tmp_path / "traces"
    runner = make_runner(tiny_ppo(CountingEnv, **SHORT, output=str(out)), 3)
    runner.sample(2)
    runner.stop()
    assert read_traces(out) == []
    assert not list(out.glob("output-*_worker-3_*.json"))


def test_trace_file_named_after_runner_index(make_runner: MakeRunner, tmp_path: Path) -> None:
    out = tmp_path / "traces"
    runner = make_runner(tiny_ppo(CountingEnv, **SHORT, output=str(out)), 3)
    runner.sample(4)
    runner.stop()
    assert len(list(out.glob("output-*_worker-3_0.json"))) == 1
    assert not list(out.glob("output-*_worker-0_*.json"))
    assert len(read_traces(out)) == 2
