"""Parallel sub-environments: gymnasium's ASYNC vector env and remote env actors (SEED-style).

Both must give exactly the fragments a runner gets from stepping its envs one after another
(same seeds, deterministic actions): the same rows, autoreset masks and episode accounting,
only faster for slow envs. Remote envs also survive an env actor's failure when asked to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch

from tests.helpers.configs import tiny_ppo
from training import ConfigError, PPOConfig
from training import metrics as m
from training.env_runner import EnvRunner, Fragment

pytestmark = pytest.mark.integration

MODES: dict[str, dict[str, Any]] = {
    "ASYNC": {"gym_env_vectorize_mode": "ASYNC"},
    "remote": {"remote_worker_envs": True},
    "remote, batch wait 2 ms": {"remote_worker_envs": True, "remote_env_batch_wait_ms": 2.0},
}


def _fragments(env: str, env_config: dict[str, Any], **settings: Any) -> list[Fragment]:
    config = tiny_ppo(env, env_config=env_config, num_envs_per_env_runner=3, **settings)
    torch.manual_seed(0)  # the same initial weights, whatever ran before in this process
    runner = EnvRunner(config, 0)
    try:
        return [runner.sample(40, explore=False), runner.sample(25, explore=False)]
    finally:
        runner.stop()


def _assert_same(ours: list[Fragment], reference: list[Fragment]) -> None:
    for got, want in zip(ours, reference, strict=True):
        for a, b in zip(got.obs + got.next_obs, want.obs + want.next_obs, strict=True):
            np.testing.assert_array_equal(a, b)
        for field in ("actions", "rewards", "terminated", "truncated", "valid"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), field)
        assert got.extras.keys() == want.extras.keys()
        assert sorted(got.episode_lengths) == sorted(want.episode_lengths)
        assert sorted(got.episode_returns) == sorted(want.episode_returns)
    assert any(f.episode_lengths for f in ours), "no episode ended: nothing was compared"


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    ("env", "env_config"),
    [
        ("CartPole-v1", {}),  # episodes of different lengths: envs drift apart in time
        ("tests.helpers.envs:CountingEnv", {"episode_len": 4, "max_steps": 3}),  # truncations
    ],
)
def test_parallel_envs_give_the_sequential_fragments(
    ray_session: Any, mode: str, env: str, env_config: dict[str, Any]
) -> None:
    _assert_same(_fragments(env, env_config, **MODES[mode]), _fragments(env, env_config))


def test_ppo_trains_with_remote_envs_inside_remote_runners(ray_session: Any) -> None:
    config = tiny_ppo(num_env_runners=1, remote_worker_envs=True, num_cpus_per_env_runner=0.5)
    with config.build() as algo:
        result = algo.train()
        assert result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] > 0
        assert np.isfinite(result[m.LEARNER_RESULTS][m.DEFAULT_POLICY_ID]["policy_loss"])
        # The driver's local runner only knows the spaces: it keeps plain envs.
        assert algo.env_runner.remote_envs is None
        (num_envs,) = algo.env_runner_group.foreach_worker(
            lambda w: len(w.remote_envs.actors) if w.remote_envs else 0, local_env_runner=False
        )
        assert num_envs == 2


def test_a_failed_remote_env_is_re_created_and_its_episode_cut(
    ray_session: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "fail"
    marker.touch()
    config = tiny_ppo(
        "tests.helpers.ray_envs:FlakyCartPole",
        env_config={"fail_marker": str(marker)},
        remote_worker_envs=True,
        restart_failed_sub_environments=True,
    )
    runner = EnvRunner(config, 0)
    try:
        fragment = runner.sample(30)
        assert not marker.exists(), "the injected failure did not fire"
        assert runner.remote_envs is not None and runner.remote_envs.num_restarts == 1
        assert fragment.valid.sum() < fragment.valid.size  # the reset row after the cut
        assert runner.sample(30).num_env_steps > 0  # the new env actor steps on
    finally:
        runner.stop()


def test_a_remote_env_whose_process_dies_is_re_created(ray_session: Any) -> None:
    config = tiny_ppo(
        "CartPole-v1",
        remote_worker_envs=True,
        restart_failed_sub_environments=True,
        num_envs_per_env_runner=2,
    )
    runner = EnvRunner(config, 0)
    try:
        runner.sample(10)
        assert runner.remote_envs is not None
        ray.kill(runner.remote_envs.actors[1], no_restart=True)  # as if its node died
        fragment = runner.sample(30)
        assert runner.remote_envs.num_restarts == 1
        # The other env stepped on: only its own episode ends make reset rows.
        ended = fragment.terminated[:-1, 0] | fragment.truncated[:-1, 0]
        assert (~fragment.valid[1:, 0] == ended).all()
        assert runner.sample(30).valid[:, 1].sum() > 0  # the new env actor steps on
    finally:
        runner.stop()


def test_without_restarts_a_failed_remote_env_fails_the_runner(
    ray_session: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "fail"
    marker.touch()
    config = tiny_ppo(
        "tests.helpers.ray_envs:FlakyCartPole",
        env_config={"fail_marker": str(marker)},
        remote_worker_envs=True,
    )
    runner = EnvRunner(config, 0)
    try:
        with pytest.raises(ray.exceptions.RayTaskError, match="injected env failure"):
            runner.sample(30)
    finally:
        runner.stop()


def test_one_way_to_parallel_envs_is_chosen_at_the_edge() -> None:
    with pytest.raises(ConfigError, match="pick one"):
        PPOConfig().env_runners(remote_worker_envs=True, gym_env_vectorize_mode="ASYNC")
    with pytest.raises(ConfigError, match="gym_env_vectorize_mode"):
        PPOConfig().env_runners(gym_env_vectorize_mode="async")
    with pytest.raises(ConfigError, match="remote_env_batch_wait_ms"):
        PPOConfig().env_runners(remote_env_batch_wait_ms=-1.0)
