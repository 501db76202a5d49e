"""Algorithms with remote EnvRunner actors: weights, fault tolerance, Ray Tune."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.configs import tiny_impala, tiny_ppo, tiny_sac
from training import Algorithm, AlgorithmConfig, EnvRunnerFailedError, PPOConfig
from training import metrics as m

pytestmark = pytest.mark.integration

REMOTE: dict[str, Any] = {"num_env_runners": 2, "train_batch_size": 128, "minibatch_size": 64}
"""Two remote runners of two envs each, 32-step fragments: one 128-step batch per round."""


def test_remote_runners_share_the_learner_weights(ray_session: Any) -> None:
    config = (
        tiny_ppo(**REMOTE)
        .env_runners(observation_filter="MeanStdFilter")
        .debugging(log_level="INFO")
    )
    with config.build() as algo:
        result = algo.train()
        assert result[m.NUM_HEALTHY_ENV_RUNNERS] == 2
        assert 100 < result[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] <= 128
        weights = algo.env_runner_group.foreach_worker(lambda w: w.get_weights())
        assert len(weights) == 3  # local runner + 2 remote runners
        learner = algo.get_weights()
        for runner_weights in weights:
            assert runner_weights.keys() == learner.keys()
            for key, value in learner.items():
                np.testing.assert_array_equal(runner_weights[key], value)
        # The filter statistics travel with the weights and are non-trivial after sampling.
        assert not np.allclose(learner["obs_filter.mean"], 0.0)
        levels = algo.env_runner_group.foreach_worker(
            lambda w: logging.getLogger("training").level, local_env_runner=False
        )
        assert levels == [logging.INFO, logging.INFO]
        indices = algo.env_runner_group.foreach_worker_with_index(lambda i, w: (i, w.runner_index))
        assert indices == [(0, 0), (1, 1), (2, 2)]


def test_failed_runner_is_restarted_and_training_continues(
    ray_session: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "fail"
    with tiny_ppo(
        "tests.helpers.ray_envs:FlakyCartPole", env_config={"fail_marker": str(marker)}, **REMOTE
    ).build() as algo:
        algo.train()
        marker.touch()
        result = algo.train()
        assert not marker.exists(), "the injected failure did not fire"
        assert result[m.NUM_ENV_RUNNER_RESTARTS] == 1
        result = algo.train()
        assert result[m.NUM_HEALTHY_ENV_RUNNERS] == 2
        assert result[m.TRAINING_ITERATION] == 3


def test_failed_runner_without_restarts_raises_a_clear_error(
    ray_session: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "fail"
    config = tiny_ppo(
        "tests.helpers.ray_envs:FlakyCartPole", env_config={"fail_marker": str(marker)}, **REMOTE
    ).fault_tolerance(restart_failed_env_runners=False)
    with config.build() as algo:
        marker.touch()
        start = time.monotonic()
        with pytest.raises(EnvRunnerFailedError, match="injected env failure"):
            algo.train()
        assert time.monotonic() - start < 30


def test_ignored_failures_drop_the_runner(ray_session: Any, tmp_path: Path) -> None:
    marker = tmp_path / "fail"
    config = tiny_ppo(
        "tests.helpers.ray_envs:FlakyCartPole", env_config={"fail_marker": str(marker)}, **REMOTE
    ).fault_tolerance(restart_failed_env_runners=False, ignore_env_runner_failures=True)
    with config.build() as algo:
        marker.touch()
        algo.train()
        result = algo.train()
        assert result[m.NUM_HEALTHY_ENV_RUNNERS] == 1
        assert result[m.NUM_ENV_RUNNER_RESTARTS] == 0


def test_killed_runner_process_is_replaced(ray_session: Any) -> None:
    import ray

    with tiny_ppo(**REMOTE).build() as algo:
        algo.train()
        ray.kill(algo.env_runner_group._actors[1], no_restart=True)
        algo.train()
        result = algo.train()
        assert result[m.NUM_ENV_RUNNER_RESTARTS] == 1
        assert result[m.NUM_HEALTHY_ENV_RUNNERS] == 2


def test_hung_runner_is_bounded_by_sample_timeout(ray_session: Any, tmp_path: Path) -> None:
    marker = tmp_path / "hang"
    config = (
        tiny_ppo(
            "tests.helpers.ray_envs:HangingCartPole",
            env_config={"hang_marker": str(marker)},
            **REMOTE,
        )
        .env_runners(num_env_runners=1, sample_timeout_s=2.0)
        .fault_tolerance(restart_failed_env_runners=False)
    )
    with config.build() as algo:
        try:
            marker.touch()
            start = time.monotonic()
            with pytest.raises(EnvRunnerFailedError, match="sample_timeout_s"):
                algo.train()
            assert time.monotonic() - start < 20
        finally:
            marker.unlink()


def test_tune_sweep_of_two_trials_and_best_checkpoint(ray_session: Any, tmp_path: Path) -> None:
    from ray import tune

    from training import PPO

    param_space = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=32)
        .training(
            train_batch_size=64, minibatch_size=32, num_epochs=1, lr=tune.grid_search([1e-3, 1e-4])
        )
        .debugging(seed=0)
    )
    tuner = tune.Tuner(
        PPO,
        param_space=param_space,  # type: ignore[arg-type]  # Tune takes any _Config
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            stop={"training_iteration": 2},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert len(results) == 2
    assert results.num_errors == 0
    configs = [results[i].config for i in range(len(results))]
    lrs = sorted(c["lr"] for c in configs if c is not None)
    assert lrs == [1e-4, 1e-3]
    best = results.get_best_result(metric="env_runners/episode_return_mean", mode="max")
    assert best.checkpoint is not None
    with Algorithm.from_checkpoint(best.checkpoint) as algo:
        assert algo.iteration == 2
        assert best.config is not None
        assert algo.config.lr == best.config["lr"]
        assert algo.compute_single_action(np.zeros(4, np.float32), explore=False) in (0, 1)


@pytest.mark.parametrize("name", ["PPO", "SAC", "IMPALA"])
def test_algorithms_are_registered_with_tune_by_name(
    ray_session: Any, tmp_path: Path, name: str
) -> None:
    from ray import tune

    configs: dict[str, Callable[[], AlgorithmConfig]] = {
        "PPO": tiny_ppo,
        "SAC": lambda: tiny_sac(
            min_sample_timesteps_per_iteration=200, actor_lr=tune.grid_search([1e-3])
        ),
        "IMPALA": lambda: tiny_impala(lr=tune.grid_search([1e-3])),
    }
    config = configs[name]()
    tuner = tune.Tuner(
        name,
        param_space=config,  # type: ignore[arg-type]  # Tune takes any _Config
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), stop={"training_iteration": 1}, verbose=0
        ),
    )
    results = tuner.fit()
    assert results.num_errors == 0
    assert results[0].metrics is not None
    trial_config = results[0].config
    assert trial_config is not None
    assert trial_config["actor_lr" if name == "SAC" else "lr"] in (1e-3, 3e-4)
    assert results[0].metrics[m.TRAINING_ITERATION] == 1


def test_algorithm_is_a_context_manager(ray_session: Any) -> None:
    """``with config.build() as algo:`` stops the algorithm, also when the block raises."""
    with pytest.raises(RuntimeError, match="boom"), tiny_ppo(**REMOTE).build() as algo:
        assert algo.env_runner_group.num_healthy_remote_env_runners == 2
        assert algo.train()[m.TRAINING_ITERATION] == 1
        raise RuntimeError("boom")
    assert algo.env_runner_group.num_healthy_remote_env_runners == 0  # the actors are gone


@pytest.mark.parametrize(
    ("runners", "message"),
    [
        ({"num_env_runners": 1, "num_gpus_per_env_runner": 1}, "needs 1 GPUs"),
        ({"num_env_runners": 3, "num_cpus_per_env_runner": 1}, "needs 3 CPUs"),
    ],
)
def test_env_runners_the_cluster_cannot_place_are_refused_at_once(
    ray_session: Any, runners: dict[str, Any], message: str
) -> None:
    import torch

    if torch.cuda.is_available() and "GPU" in message:
        pytest.skip("this machine has a GPU to place the runner on")
    config = tiny_ppo().env_runners(**runners)
    with pytest.raises(EnvRunnerFailedError, match=f"env_runners\\(num_env_runners=.*{message}"):
        config.build()


def test_a_runner_given_gpus_infers_on_cuda_or_says_torch_sees_none(ray_session: Any) -> None:
    import torch

    from training.env_runner import EnvRunner

    config = tiny_ppo().env_runners(num_gpus_per_env_runner=0.5)
    assert EnvRunner._inference_device(config, 0).type == "cpu"  # the driver's runner
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"num_gpus_per_env_runner=0\.5 but torch sees no"):
            EnvRunner._inference_device(config, 1)
        return
    with config.env_runners(num_env_runners=1).build() as algo:  # a GPU machine: sample on it
        devices = algo.env_runner_group.foreach_worker(
            lambda runner: runner.device.type, local_env_runner=False
        )
        assert devices == ["cuda"]
        assert algo.train()[m.NUM_ENV_STEPS_SAMPLED_LIFETIME] > 0
