"""Sub-environment restarts inside one EnvRunner (no Ray needed), and log levels."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from training import PPOConfig
from training import metrics as m


def flaky(marker: Path) -> PPOConfig:
    return (
        PPOConfig()
        .environment(
            "tests.helpers.ray_envs:FlakyCartPole", env_config={"fail_marker": str(marker)}
        )
        .env_runners(num_envs_per_env_runner=2, rollout_fragment_length=32)
        .training(train_batch_size=64, minibatch_size=32, num_epochs=1)
        .debugging(seed=0)
    )


def test_failed_sub_environment_is_recreated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "fail"
    with flaky(marker).fault_tolerance(restart_failed_sub_environments=True).build() as algo:
        algo.train()
        marker.touch()
        with caplog.at_level(logging.WARNING, logger="training"):
            result = algo.train()
        assert not marker.exists()
        assert "re-creating it" in caplog.text
        result = algo.train()
        assert result[m.TRAINING_ITERATION] == 3
        assert result[m.ENV_RUNNER_RESULTS][m.EPISODE_RETURN_MEAN] > 0


def test_without_sub_environment_restarts_the_env_error_surfaces(tmp_path: Path) -> None:
    marker = tmp_path / "fail"
    with flaky(marker).build() as algo:
        marker.touch()
        with pytest.raises(RuntimeError, match="injected env failure"):
            algo.train()


def test_log_level_sets_the_package_logger() -> None:
    config = PPOConfig().environment("CartPole-v1").debugging(log_level="DEBUG")
    try:
        with config.build():
            assert logging.getLogger("training").level == logging.DEBUG
    finally:
        logging.getLogger("training").setLevel(logging.WARNING)
